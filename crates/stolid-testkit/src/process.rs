//! The release binary as a child process, for the runs that need real
//! processes: `kill -9`, CPU time, several tasks starting at the same moment.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::infra::base_env;

/// A running `stolid serve`; killed when dropped.
pub struct Proc {
    pub child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Proc {
    /// Starts `target/release/stolid serve` (or the binary `STOLID_BIN` names,
    /// e.g. an older build for a baseline) with only `env` (plus PATH and the
    /// local AWS credentials), appends its log to `log`, and waits until it listens.
    pub fn start(env: &[(&str, String)], log: &Path) -> Self {
        let base = base_env();
        let binary = std::env::var_os("STOLID_BIN")
            .map_or_else(|| crate::repo_root().join("target/release/stolid"), std::path::PathBuf::from);
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for key in ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            if let Some(value) = base.get(key) {
                command.env(key, value);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("starting target/release/stolid (build it with --release first)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let log_path = log.to_path_buf();
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("opening the log");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if json["message"] == "listening" {
                    let _ = port_tx.send(json["port"].as_u64().unwrap_or(0) as u16);
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(why) => {
                // Not left running: a run that gives up must not leak a server holding its database.
                let _ = child.kill();
                let exit = child.wait().map_or_else(|e| e.to_string(), |status| status.to_string());
                panic!("stolid did not start listening ({why}; it ended with {exit}); its log: {}", log_path.display());
            }
        };
        Self { child, base: format!("http://127.0.0.1:{port}") }
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
    }

    /// SIGTERM, then the seconds until the process exited (killed after `bound`).
    pub fn terminate(&mut self, bound: Duration) -> f64 {
        self.signal("-TERM");
        let started = Instant::now();
        while started.elapsed() < bound {
            if self.child.try_wait().ok().flatten().is_some() {
                return started.elapsed().as_secs_f64();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        f64::INFINITY
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU seconds (user + system) the process has used so far, from `/proc`.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        ticks as f64 / clock_ticks_per_second()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}
