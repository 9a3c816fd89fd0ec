//! `stolid ingest PATH...`: upload files or folder trees through the API and
//! follow them until every document is indexed or failed, with progress bars
//! (plain progress lines when stderr is not a terminal) and a summary.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::ingest::extract::Format;

pub struct IngestArgs {
    pub paths: Vec<PathBuf>,
    pub collection: Option<String>,
    pub api_url: String,
    pub api_key: String,
    /// Uploads in flight at once.
    pub concurrency: usize,
}

/// What happened to one file.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Indexed { chunks: i64 },
    Failed(String),
}

struct Tracked {
    path: PathBuf,
    id: Option<String>,
    duplicate: bool,
    outcome: Outcome,
}

/// Every supported file under `paths` (recursively for folders), sorted; hidden entries skipped.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if supported(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files)?;
        } else if path.is_file() {
            anyhow::ensure!(supported(path), "{}: unsupported type (text, Markdown, HTML or PDF)", path.display());
            files.push(path.clone());
        } else {
            anyhow::bail!("{}: no such file or folder", path.display());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn supported(path: &Path) -> bool {
    Format::detect(None, path.file_name().and_then(|n| n.to_str())).is_some()
}

pub async fn run(args: IngestArgs) -> anyhow::Result<bool> {
    let started = Instant::now();
    let files = collect_files(&args.paths)?;
    anyhow::ensure!(!files.is_empty(), "no supported files (text, Markdown, HTML, PDF) found");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let base = args.api_url.trim_end_matches('/').to_string();

    let progress = Progress::new(files.len() as u64);
    let mut tracked: Vec<Tracked> = Vec::with_capacity(files.len());
    // Several files can share a document (identical content), so an id maps to every file with it.
    let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
    let mut uploads = futures::stream::iter(files.into_iter().map(|path| {
        let client = client.clone();
        let (base, key, collection) = (base.clone(), args.api_key.clone(), args.collection.clone());
        async move {
            let result = upload(&client, &base, &key, collection.as_deref(), &path).await;
            (path, result)
        }
    }))
    .buffer_unordered(args.concurrency.max(1));

    let mut last_poll = Instant::now();
    let mut uploads_done = false;
    loop {
        if !uploads_done {
            match tokio::time::timeout(Duration::from_millis(500), uploads.next()).await {
                Ok(Some((path, result))) => {
                    progress.uploaded(&path);
                    let index = tracked.len();
                    match result {
                        Ok((id, duplicate, status)) => {
                            by_id.entry(id.clone()).or_default().push(index);
                            let outcome = settled(&status);
                            tracked.push(Tracked {
                                path,
                                id: Some(id),
                                duplicate,
                                outcome: outcome.unwrap_or(Outcome::Pending),
                            });
                        }
                        Err(err) => tracked.push(Tracked {
                            path,
                            id: None,
                            duplicate: false,
                            outcome: Outcome::Failed(format!("upload: {err:#}")),
                        }),
                    }
                }
                Ok(None) => uploads_done = true,
                Err(_) => {}
            }
        }
        if last_poll.elapsed() >= Duration::from_secs(1) || uploads_done {
            last_poll = Instant::now();
            let pending: Vec<String> =
                tracked.iter().filter(|t| matches!(t.outcome, Outcome::Pending)).filter_map(|t| t.id.clone()).collect();
            for batch in pending.chunks(200) {
                match poll(&client, &base, &args.api_key, batch).await {
                    Ok(docs) => {
                        for doc in docs {
                            let id = doc["id"].as_str().unwrap_or_default();
                            if let (Some(indexes), Some(outcome)) = (by_id.get(id), settled(&doc)) {
                                for &i in indexes {
                                    tracked[i].outcome = outcome.clone();
                                }
                            }
                        }
                    }
                    Err(err) => progress.note(&format!("status check failed, retrying: {err:#}")),
                }
            }
        }
        let indexed = tracked.iter().filter(|t| matches!(t.outcome, Outcome::Indexed { .. })).count() as u64;
        let failed = tracked.iter().filter(|t| matches!(t.outcome, Outcome::Failed(_))).count() as u64;
        progress.settled(indexed, failed);
        if uploads_done && tracked.iter().all(|t| !matches!(t.outcome, Outcome::Pending)) {
            break;
        }
        if uploads_done {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    progress.finish();
    Ok(print_summary(&tracked, started.elapsed()))
}

/// `Some` once a document is indexed or failed.
fn settled(doc: &Value) -> Option<Outcome> {
    match doc["status"].as_str() {
        Some("indexed") => Some(Outcome::Indexed { chunks: doc["chunk_count"].as_i64().unwrap_or(0) }),
        Some("failed") => Some(Outcome::Failed(doc["error"].as_str().unwrap_or("unknown error").to_string())),
        _ => None,
    }
}

/// The longest a `Retry-After` is waited out before each retry of an upload:
/// a longer one (a reset tomorrow, say) would stall the whole run, so after
/// its retries the file is reported as failed instead.
const MAX_RETRY_AFTER_SECS: u64 = 30;

async fn upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    collection: Option<&str>,
    path: &Path,
) -> anyhow::Result<(String, bool, Value)> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("document").to_string();
    let mime = Format::detect(None, Some(&name)).map_or("application/octet-stream", Format::content_type);
    let bytes = tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?;
    let mut attempt = 0;
    loop {
        let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()).mime_str(mime)?;
        let mut form = reqwest::multipart::Form::new().part("file", part);
        if let Some(collection) = collection {
            form = form.text("collection", collection.to_string());
        }
        let response = client.post(format!("{base}/v1/documents")).bearer_auth(key).multipart(form).send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS)));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            let doc = body["documents"][0].clone();
            let id = doc["id"].as_str().context("no document id in the response")?.to_string();
            return Ok((id, doc["duplicate"] == Value::Bool(true), doc));
        }
        // 429/503 are worth another try; anything else is this file's problem.
        if matches!(status.as_u16(), 429 | 503) && attempt < 5 {
            attempt += 1;
            // The server's own estimate when it gives one, spread out so the retries do not arrive together.
            let wait = retry_after
                .map_or_else(|| crate::infra::retry::jittered_backoff(attempt), crate::infra::retry::at_least);
            tokio::time::sleep(wait).await;
            continue;
        }
        let message = body["error"]["message"].as_str().unwrap_or("request failed");
        anyhow::bail!("{status}: {message}");
    }
}

async fn poll(client: &reqwest::Client, base: &str, key: &str, ids: &[String]) -> anyhow::Result<Vec<Value>> {
    let response = client
        .get(format!("{base}/v1/documents"))
        .query(&[("ids", ids.join(",")), ("limit", "200".to_string())])
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()?;
    let body: Value = response.json().await?;
    Ok(body["documents"].as_array().cloned().unwrap_or_default())
}

fn print_summary(tracked: &[Tracked], elapsed: Duration) -> bool {
    let indexed: Vec<&Tracked> = tracked.iter().filter(|t| matches!(t.outcome, Outcome::Indexed { .. })).collect();
    let failed: Vec<&Tracked> = tracked.iter().filter(|t| matches!(t.outcome, Outcome::Failed(_))).collect();
    let duplicates = tracked.iter().filter(|t| t.duplicate).count();
    let chunks: i64 =
        tracked.iter().map(|t| if let Outcome::Indexed { chunks } = t.outcome { chunks } else { 0 }).sum();
    let secs = elapsed.as_secs_f64().max(0.001);
    println!(
        "{} files: {} indexed ({} already present), {} failed, {} chunks in {:.1}s ({:.1} docs/s)",
        tracked.len(),
        indexed.len(),
        duplicates,
        failed.len(),
        chunks,
        secs,
        tracked.len() as f64 / secs
    );
    for t in &failed {
        if let Outcome::Failed(reason) = &t.outcome {
            println!("  failed: {}: {reason}", t.path.display());
        }
    }
    failed.is_empty()
}

/// Bars on a terminal, a line every few seconds otherwise (CI logs, pipes).
struct Progress {
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
    total: u64,
    uploaded: std::sync::atomic::AtomicU64,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template("{prefix:>9} [{bar:40.cyan/blue}] {pos}/{len} {msg}")
                .unwrap()
                .progress_chars("=> ");
            let upload = multi.add(ProgressBar::new(total).with_style(style.clone()).with_prefix("uploaded"));
            let index = multi.add(ProgressBar::new(total).with_style(style).with_prefix("settled"));
            upload.enable_steady_tick(Duration::from_millis(200));
            (multi, upload, index)
        });
        Self { bars, total, uploaded: 0.into(), last_line: std::sync::Mutex::new(Instant::now()) }
    }

    fn uploaded(&self, path: &Path) {
        let n = self.uploaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some((_, upload, _)) = &self.bars {
            upload.set_position(n);
            upload.set_message(path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string());
        }
    }

    fn settled(&self, indexed: u64, failed: u64) {
        match &self.bars {
            Some((_, _, index)) => {
                index.set_position(indexed + failed);
                index.set_message(format!("{indexed} indexed, {failed} failed"));
            }
            None => {
                let mut last = self.last_line.lock().unwrap();
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    let uploaded = self.uploaded.load(std::sync::atomic::Ordering::Relaxed);
                    eprintln!("ingest: uploaded {uploaded}/{}, indexed {indexed}, failed {failed}", self.total);
                }
            }
        }
    }

    fn note(&self, message: &str) {
        match &self.bars {
            Some((multi, _, _)) => {
                let _ = multi.println(message);
            }
            None => eprintln!("ingest: {message}"),
        }
    }

    fn finish(&self) {
        if let Some((_, upload, index)) = &self.bars {
            upload.finish();
            index.finish();
        }
    }
}
