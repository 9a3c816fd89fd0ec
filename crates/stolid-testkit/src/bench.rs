//! What the benchmarks and `make chaos` share: `--key value` options and the
//! default corpus (the Rust book's HTML, shipped with every toolchain).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The command line's `--key value` pairs and `--flag`s (value empty), keys without the dashes.
pub fn options() -> HashMap<String, String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut options = HashMap::new();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else { continue };
        // A flag (`--misses`) has no value: the next argument is another option.
        let value = args.next_if(|next| !next.starts_with("--")).unwrap_or_default();
        options.insert(name.to_string(), value);
    }
    options
}

/// A comma-separated option (`--concurrency 1,8,32`), or `default` when absent.
pub fn list<T: std::str::FromStr>(options: &HashMap<String, String>, name: &str, default: &str) -> Vec<T> {
    let value = options.get(name).map_or(default, String::as_str);
    value.split(',').map(|piece| piece.trim().parse().unwrap_or_else(|_| panic!("--{name}: {piece:?}"))).collect()
}

/// `--env K=V,K2=V2`: settings added to the server's environment. A piece that
/// does not start with an upper-case name and `=` continues the value before it,
/// so `--env RUST_LOG=info,sqlx::query=debug` passes one variable.
pub fn extra_env(options: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for piece in options.get("env").map(String::as_str).unwrap_or_default().split(',').filter(|p| !p.is_empty()) {
        let named = piece.split_once('=').filter(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        match (named, env.last_mut()) {
            (Some((key, value)), _) => env.push((key.to_string(), value.to_string())),
            (None, Some((_, value))) => *value = format!("{value},{piece}"),
            (None, None) => panic!("--env {piece}: expected NAME=value"),
        }
    }
    env
}

/// `rustc --print sysroot`/share/doc/rust/html: the books shipped with the toolchain.
pub fn rust_docs() -> PathBuf {
    let sysroot = std::process::Command::new("rustc").args(["--print", "sysroot"]).output().expect("running rustc");
    PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("share/doc/rust/html")
}

/// The Rust book's HTML under [`rust_docs`].
pub fn rust_book() -> PathBuf {
    rust_docs().join("book")
}

/// Up to `limit` files under `dir`, as `stolid ingest` would find them.
pub fn corpus(dir: &Path, limit: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = stolid::app::cli::ingest::collect_files(&[dir.to_path_buf()])?;
    files.truncate(limit);
    anyhow::ensure!(!files.is_empty(), "no documents under {}", dir.display());
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_env_options_parse_as_documented() {
        let options: HashMap<String, String> =
            [("concurrency", "1, 8"), ("env", "RUST_LOG=info,sqlx::query=debug,A_1=")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(list::<usize>(&options, "concurrency", "64"), [1, 8]);
        assert_eq!(list::<usize>(&options, "chunks", "100,200"), [100, 200], "absent: the default");
        let env = extra_env(&options);
        assert_eq!(env, [("RUST_LOG".into(), "info,sqlx::query=debug".into()), ("A_1".into(), String::new())]);
    }
}
