//! `stolid ingest` as a user runs it: the real binary against a running app.

use std::process::Command;

use crate::helpers::spawn_app;

/// A folder tree goes in; every supported file ends indexed or failed with its
/// reason; unsupported files are skipped; the summary says so and the exit code
/// reports failures.
#[tokio::test]
async fn ingest_uploads_a_folder_and_waits_until_every_document_settles() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("stolid-ingest-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("nested/.hidden")).unwrap();
    std::fs::write(dir.join("a.md"), "# A\n\nAlpha document about ownership.\n").unwrap();
    std::fs::write(dir.join("nested/b.html"), "<h1>B</h1><p>Beta page about borrowing.</p>").unwrap();
    std::fs::write(dir.join("nested/c.txt"), "Gamma notes.").unwrap();
    std::fs::write(dir.join("nested/same.txt"), "Gamma notes.").unwrap();
    std::fs::write(dir.join("nested/bad.txt"), [0xffu8, 0xfe, 0xfd]).unwrap();
    std::fs::write(dir.join("image.png"), [0x89u8, b'P', b'N', b'G']).unwrap();
    std::fs::write(dir.join("nested/.hidden/secret.md"), "# hidden").unwrap();

    let binary = env!("CARGO_BIN_EXE_stolid");
    let (address, key) = (app.address.clone(), app.api_key.clone());
    let dir_arg = dir.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .current_dir(std::env::temp_dir())
            .args([
                "ingest",
                dir_arg.to_str().unwrap(),
                "--collection",
                "cli",
                "--api-url",
                &address,
                "--api-key",
                &key,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a failed document makes the exit code non-zero\n{stdout}\n{stderr}");
    assert!(stdout.contains("5 files: 4 indexed (1 already present), 1 failed"), "{stdout}\n{stderr}");
    assert!(stdout.contains("bad.txt") && stdout.contains("UTF-8"), "{stdout}");
    let docs: Vec<(String, String)> =
        sqlx::query_as("SELECT title, status FROM documents WHERE collection = 'cli' ORDER BY title")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(docs.len(), 4, "{docs:?}");
    assert!(docs.iter().all(|(title, _)| title != "secret.md" && title != "image.png"));
    std::fs::remove_dir_all(dir).unwrap();
}
