//! The web console: its files as the binary serves them, and what a newcomer
//! does with it in a real browser (headless Debian Chromium driven by
//! playwright-core, `console/e2e/console.mjs`; `make infra` installs both).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::helpers::{Options, spawn_app, spawn_app_with_fake};

/// `/console` and its script and style come from the binary itself, with their
/// types and a policy that lets only our own files run; no key is needed to
/// load them. The script is the committed build of `console/src`.
#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    let built = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("console/dist/app.js")).unwrap();
    for (path, content_type, marker) in [
        ("/console", "text/html", "<form id=\"sign-in-form\">"),
        ("/console/app.js", "text/javascript", "sessionStorage"),
        ("/console/app.css", "text/css", "#drop"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}: {headers:?}");
        assert!(headers["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"), "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path}");
        if path.ends_with(".js") {
            assert_eq!(body, built, "the served script is console/dist/app.js");
        }
    }
}

/// Sign in (a wrong key first), see an empty tenant's pages, drop a Markdown
/// file and watch it reach `indexed`, read its chunks, get suggestions while
/// typing, ask and watch the answer stream in, open the cited passage, run the
/// agent and watch its tool calls, reopen a conversation, and find the calls
/// in usage. The script also fails on any console error, CSP violation or
/// request outside `/console` and `/v1`. Screenshots of each page land in
/// `target/tmp/console-screenshots`.
#[tokio::test]
async fn a_newcomer_uses_the_console_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    for needed in [root.join("console/node_modules/playwright-core"), chromium.clone().into()] {
        assert!(needed.exists(), "{} is missing: `make infra` installs the browser tests' tools", needed.display());
    }
    // Small chunks, so each section of the uploaded handbook is a passage of its own.
    let env = HashMap::from([("CHUNK_MAX_TOKENS", "30".to_string()), ("CHUNK_OVERLAP_TOKENS", "0".to_string())]);
    let (app, fake) = spawn_app_with_fake(Options { env, ..Options::default() }).await;
    // Words arrive apart, as from a real model, so the page can show a reply being written.
    fake.set_stream_gap(Duration::from_millis(40));
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(root.join("console/e2e/console.mjs"))
        .env("STOLID_URL", &app.address)
        .env("STOLID_KEY", &app.api_key)
        .env("CHAT_MODEL", &app.state.config.llm.chat_model)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test finished within 4 minutes")
        .expect("node runs (`make infra` installs it if missing)");
    let report = format!(
        "{}{}\nscreenshots: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        screenshots.display()
    );
    println!("{report}");
    assert!(output.status.success(), "the browser test failed:\n{report}");
    assert!(report.contains("ok   usage shows the calls just made"), "every step ran:\n{report}");
}
