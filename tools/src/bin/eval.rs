//! `make eval`: retrieval quality on a labelled question set, so every
//! retrieval change is judged by numbers.
//!
//! It starts the release binary against a throwaway database, uploads each
//! collection the questions name (a directory of that name under the corpus
//! root, one collection each, as `stolid ingest --collection` would), waits until
//! everything is indexed, then asks every question across all collections (no
//! collection filter: the right page must win against similar pages of the
//! other books) and prints hit@1/5/10 and MRR per search mode, and how often chat
//! cites the answering document.
//!
//! A question is answered by exactly one page; a result "hits" when it comes from
//! that page. The default set (`eval/rust-docs.jsonl`) covers four books shipped
//! with every Rust toolchain (the book, the reference, Rust by Example, the Cargo
//! book), taken whole as `stolid ingest` takes a folder: 1,709 files with the
//! translations, redirect stubs and each book's all-in-one `print.html`
//! (`--curated`: the ~850 English content pages only). Each question belongs to
//! the `dev` split (tuned on) or the `test` split (reported); figures are
//! printed per split and per book with 95% confidence intervals (Wilson's for
//! hit rates, the normal approximation for MRR).
//!
//! Then each follow-up (`eval/rust-docs-followups.jsonl`: a first question, and
//! a follow-up that leans on it) is asked in one conversation, with and without
//! the query rewrite, and counted when the follow-up's answer cites its page.
//!
//! Options: --questions FILE  --followups FILE  --root DIR (default: the toolchain's HTML docs)  --curated
//!   --modes vector,keyword,hybrid,rerank (rerank: hybrid reordered by the chat
//!   model, which needs an OpenAI-compatible provider)  --chat N (questions asked of chat, default all)
//!   --env KEY=VALUE,KEY=VALUE (extra settings for the server, e.g. a provider)
//!   --dump FILE (each question's ranked results per mode, as JSON lines, to try
//!   a fusion or reranking offline)  --misses (print the questions each mode misses)
//!   --keep FILE (leave the indexed database, bucket and queue, described in FILE)
//!   --reuse FILE (ask the questions of what a `--keep` run left, without indexing again)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use stolid_testkit::bench;
use stolid_testkit::infra::{base_env, create_infra_for, existing_infra};
use stolid_testkit::process::Proc;

#[derive(Debug, Deserialize)]
struct Question {
    question: String,
    collection: String,
    page: String,
    /// For a follow-up: the question asked before it in the same conversation.
    #[serde(default)]
    first: Option<String>,
    /// `dev` (tuned on) or `test` (only reported); `dev` when absent.
    #[serde(default = "dev")]
    split: String,
}

fn dev() -> String {
    "dev".into()
}

/// What `--keep` leaves for `--reuse`: the indexed infrastructure and which page each document is.
#[derive(serde::Serialize, Deserialize)]
struct Kept {
    database_url: String,
    bucket: String,
    queue_url: String,
    dlq_url: String,
    key: String,
    pages: HashMap<String, String>,
}

/// Ranks are 1-based; `None` when the page is not in the results.
#[derive(Default, Clone)]
struct Scores {
    ranks: Vec<Option<usize>>,
}

impl Scores {
    fn hit_at(&self, k: usize) -> Estimate {
        let hits = self.ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count();
        Estimate::proportion(hits, self.ranks.len())
    }

    fn mrr(&self) -> Estimate {
        Estimate::mean(&self.ranks.iter().map(|r| r.map_or(0.0, |r| 1.0 / r as f64)).collect::<Vec<_>>())
    }

    /// The questions `keep` says yes to.
    fn subset(&self, keep: &[bool]) -> Scores {
        Scores { ranks: self.ranks.iter().zip(keep).filter(|(_, k)| **k).map(|(r, _)| *r).collect() }
    }
}

/// A figure and its 95% confidence interval.
struct Estimate {
    value: f64,
    low: f64,
    high: f64,
}

/// z for a two-sided 95% interval.
const Z95: f64 = 1.96;

impl Estimate {
    /// Wilson's score interval: sound near 0 and 1 and for small samples, unlike the normal one.
    fn proportion(successes: usize, n: usize) -> Estimate {
        if n == 0 {
            return Estimate { value: 0.0, low: 0.0, high: 0.0 };
        }
        let (p, n) = (successes as f64 / n as f64, n as f64);
        let centre = (p + Z95 * Z95 / (2.0 * n)) / (1.0 + Z95 * Z95 / n);
        let half = Z95 / (1.0 + Z95 * Z95 / n) * (p * (1.0 - p) / n + Z95 * Z95 / (4.0 * n * n)).sqrt();
        Estimate { value: p, low: centre - half, high: centre + half }
    }

    /// The mean, with the normal approximation's interval.
    fn mean(values: &[f64]) -> Estimate {
        let n = values.len() as f64;
        if values.is_empty() {
            return Estimate { value: 0.0, low: 0.0, high: 0.0 };
        }
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let half = Z95 * (variance / n).sqrt();
        Estimate { value: mean, low: (mean - half).max(0.0), high: (mean + half).min(1.0) }
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        format!("{:.2} [{:.2}-{:.2}]", self.value, self.low, self.high).fmt(f)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = bench::options();
    let questions_path = options
        .get("questions")
        .map_or_else(|| stolid_testkit::repo_root().join("eval/rust-docs.jsonl"), PathBuf::from);
    let root = options.get("root").map_or_else(bench::rust_docs, PathBuf::from);
    let modes: Vec<String> = bench::list(&options, "modes", "vector,keyword,hybrid,rerank");
    let followups_path = options
        .get("followups")
        .map_or_else(|| stolid_testkit::repo_root().join("eval/rust-docs-followups.jsonl"), PathBuf::from);
    let questions = read_questions(&questions_path)?;
    let followups = read_questions(&followups_path)?;
    let chat_count = options.get("chat").map_or(questions.len(), |n| n.parse().expect("--chat N"));
    let mut collections: Vec<&str> = questions.iter().chain(&followups).map(|q| q.collection.as_str()).collect();
    collections.sort();
    collections.dedup();

    let curated = options.contains_key("curated");
    let mut corpus: Vec<(&str, PathBuf, Vec<PathBuf>)> = Vec::new();
    for collection in &collections {
        let dir = root.join(collection);
        let files = bench::corpus(&dir, usize::MAX)?.into_iter().filter(|f| !curated || is_eval_page(f)).collect();
        corpus.push((collection, dir, files));
    }

    let reuse: Option<Kept> = match options.get("reuse") {
        Some(path) => Some(serde_json::from_str(&std::fs::read_to_string(path)?)?),
        None => None,
    };
    let infra = match &reuse {
        Some(kept) => {
            existing_infra(kept.database_url.clone(), kept.bucket.clone(), kept.queue_url.clone(), kept.dlq_url.clone())
                .await
        }
        None => create_infra_for("eval").await,
    };
    let mut env = infra.process_env();
    env.extend([("WORKER_WAIT_TIME_SECS", "1".into())]);
    // The local provider's embedding model, as `make up` runs it (`--env LOCAL_EMBEDDING_MODEL_DIR=` turns it off).
    if let Some(dir) = base_env().get("LOCAL_EMBEDDING_MODEL_DIR") {
        env.push(("LOCAL_EMBEDDING_MODEL_DIR", dir.clone()));
    }
    let extra = bench::extra_env(&options);
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let log = stolid_testkit::repo_root().join(".local/eval.log");
    std::fs::create_dir_all(log.parent().expect("a parent"))?;
    let mut server = Proc::start(&env, &log);
    let db = sqlx::PgPool::connect(&infra.database_url).await?;
    let client = reqwest::Client::new();

    let clock = Instant::now();
    let (key, pages) = match reuse {
        Some(kept) => {
            eprintln!("[eval] reusing {} ({} pages indexed before)", infra.database_url, kept.pages.len());
            (kept.key, kept.pages)
        }
        None => {
            let tenant = stolid::store::keys::ensure_tenant(&db, "eval").await?;
            let key = stolid::store::keys::create_key(&db, tenant).await?.key;
            let pages = upload(&client, &server.base, &key, corpus).await;
            (key, pages)
        }
    };
    let (indexed, failed) = loop {
        let (open, indexed, failed): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'processing')),
                    count(*) FILTER (WHERE status = 'indexed'), count(*) FILTER (WHERE status = 'failed')
             FROM documents",
        )
        .fetch_one(&db)
        .await?;
        if open == 0 {
            break (indexed, failed);
        }
        eprint!("\r[eval] indexing: {indexed} indexed, {open} to go   ");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "\r[eval] {indexed} pages indexed, {failed} failed, in {:.1}s; {} questions",
        clock.elapsed().as_secs_f64(),
        questions.len()
    );
    // Marks are measured after each publish; the last measurement may still run.
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM aggregate_marks_stale").fetch_one(&db).await? > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let aggregates: Vec<(String, f32)> =
        sqlx::query_as("SELECT collection || '/' || title, aggregate_share FROM documents WHERE aggregate ORDER BY 1")
            .fetch_all(&db)
            .await?;
    eprintln!(
        "[eval] {} aggregate documents: {}",
        aggregates.len(),
        aggregates.iter().map(|(page, share)| format!("{page} ({share:.2})")).collect::<Vec<_>>().join(", ")
    );
    let keep = options.get("keep");
    if let Some(path) = keep {
        let kept = Kept {
            database_url: infra.database_url.clone(),
            bucket: infra.bucket.clone(),
            queue_url: infra.queue_url.clone(),
            dlq_url: infra.dlq_url.clone(),
            key: key.clone(),
            pages: pages.clone(),
        };
        std::fs::write(path, serde_json::to_string(&kept)?)?;
        eprintln!("[eval] kept for --reuse {path}: drop {} when done", infra.database_url);
    }
    let readyz: serde_json::Value = client.get(format!("{}/readyz", server.base)).send().await?.json().await?;
    eprintln!("[eval] model: {}", readyz["model"]);

    let expected = |q: &Question| format!("{}/{}", q.collection, q.page);
    let mut dump = match options.get("dump") {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let mut table = Vec::new();
    for mode in &modes {
        let mut scores = Scores::default();
        let mut misses = Vec::new();
        let mut reranked = 0;
        for q in &questions {
            let body = match mode.as_str() {
                "rerank" => serde_json::json!({ "query": q.question, "k": 50, "mode": "hybrid", "rerank": true }),
                _ => serde_json::json!({ "query": q.question, "k": 50, "mode": mode }),
            };
            let response = post(&client, &format!("{}/v1/search", server.base), &key, &body).await?;
            reranked += usize::from(response["reranked"] == true);
            let results = response["results"].as_array().cloned().unwrap_or_default();
            let ranked = distinct_pages(&results, &pages);
            if let Some(out) = dump.as_mut() {
                use std::io::Write;
                let results: Vec<serde_json::Value> = results
                    .iter()
                    .map(|hit| {
                        let page = hit["document_id"].as_str().and_then(|id| pages.get(id));
                        serde_json::json!({ "page": page, "chunk_id": hit["chunk_id"], "score": hit["score"] })
                    })
                    .collect();
                let line = serde_json::json!({ "question": q.question, "expected": expected(q), "mode": mode, "results": results });
                writeln!(out, "{line}")?;
            }
            let rank = ranked.iter().position(|p| *p == expected(q)).map(|i| i + 1);
            if rank.is_none() {
                misses.push(format!(
                    "  {:<60} want {}, got {}",
                    q.question,
                    expected(q),
                    ranked.first().map_or("-", |p| p)
                ));
            }
            scores.ranks.push(rank);
        }
        if options.contains_key("misses") {
            eprintln!("[eval] {mode}: not in the top 10\n{}", misses.join("\n"));
        }
        if mode == "rerank" && reranked == 0 {
            eprintln!(
                "[eval] rerank: skipped, the provider does not rerank (the local provider has no language model)"
            );
            continue;
        }
        table.push((mode.clone(), scores));
    }

    let mut cited: Vec<bool> = Vec::new();
    for q in questions.iter().take(chat_count) {
        let body = serde_json::json!({ "message": q.question });
        let response = post(&client, &format!("{}/v1/chat", server.base), &key, &body).await?;
        let cited_pages = cited_pages(&response, &pages);
        cited.push(cited_pages.contains(&expected(q)));
        if !cited_pages.contains(&expected(q)) && options.contains_key("misses") {
            eprintln!("[eval] chat: {:<60} want {}, cited {:?}", q.question, expected(q), cited_pages);
        }
    }

    // Follow-ups: the first question, then the follow-up in the same conversation,
    // with and without the query rewrite; a hit is the follow-up citing its page.
    let mut followup_cited = [0, 0];
    for q in &followups {
        for (i, rewrite) in [true, false].into_iter().enumerate() {
            let first = serde_json::json!({ "message": q.first.as_deref().unwrap_or_default() });
            let first = post(&client, &format!("{}/v1/chat", server.base), &key, &first).await?;
            let body = serde_json::json!({
                "message": q.question, "conversation_id": first["conversation_id"], "rewrite_query": rewrite,
            });
            let response = post(&client, &format!("{}/v1/chat", server.base), &key, &body).await?;
            if cited_pages(&response, &pages).contains(&expected(q)) {
                followup_cited[i] += 1;
            }
        }
    }

    println!(
        "\nretrieval over {indexed} pages, {} questions (hit@k: the answering page among the first k distinct pages of 50 results; 95% intervals)",
        questions.len()
    );
    let mut books: Vec<&str> = questions.iter().map(|q| q.collection.as_str()).collect();
    books.sort();
    books.dedup();
    for split in ["dev", "test"] {
        let in_split: Vec<bool> = questions.iter().map(|q| q.split == split).collect();
        let n = in_split.iter().filter(|k| **k).count();
        if n == 0 {
            continue;
        }
        println!("\n{split} split, {n} questions");
        println!("{:<8} {:>17} {:>17} {:>17} {:>17}", "mode", "hit@1", "hit@5", "hit@10", "MRR");
        for (mode, scores) in &table {
            let scores = scores.subset(&in_split);
            let (h1, h5, h10, mrr) = (scores.hit_at(1), scores.hit_at(5), scores.hit_at(10), scores.mrr());
            println!("{mode:<8} {h1:>17} {h5:>17} {h10:>17} {mrr:>17}");
        }
        if let Some((mode, scores)) = table.iter().find(|(mode, _)| mode == "hybrid").or(table.first()) {
            println!("per book ({mode}):");
            for book in &books {
                let keep: Vec<bool> = questions.iter().map(|q| q.split == split && q.collection == *book).collect();
                let scores = scores.subset(&keep);
                if !scores.ranks.is_empty() {
                    let (n, h5, mrr) = (scores.ranks.len(), scores.hit_at(5), scores.mrr());
                    println!("  {book:<16} n={n:<4} hit@5 {h5}  MRR {mrr}");
                }
            }
        }
        let asked: Vec<bool> = cited.iter().zip(&in_split).filter(|(_, k)| **k).map(|(c, _)| *c).collect();
        if !asked.is_empty() {
            let share = Estimate::proportion(asked.iter().filter(|c| **c).count(), asked.len());
            println!(
                "chat cites the answering page: {} of {}: {share}",
                asked.iter().filter(|c| **c).count(),
                asked.len()
            );
        }
    }
    if !followups.is_empty() {
        let n = followups.len();
        println!(
            "follow-ups cite the answering page: {}/{n} with the query rewrite, {}/{n} without",
            followup_cited[0], followup_cited[1]
        );
    }

    server.terminate(Duration::from_secs(10));
    db.close().await;
    if keep.is_none() && !options.contains_key("reuse") {
        infra.remove().await?;
    }
    Ok(())
}

/// Uploads every collection's files, 8 at a time, as `stolid ingest` does; document id -> "collection/page".
async fn upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    corpus: Vec<(&str, PathBuf, Vec<PathBuf>)>,
) -> HashMap<String, String> {
    let mut pages: HashMap<String, String> = HashMap::new();
    for (collection, dir, files) in corpus {
        eprintln!("[eval] uploading {} pages of {collection}", files.len());
        let uploaded: Vec<(String, String)> = futures::stream::iter(files)
            .map(|file| {
                let (client, base, key, dir) = (client.clone(), base.to_string(), key.to_string(), dir.clone());
                async move {
                    let page = file.strip_prefix(&dir).expect("under the collection").to_string_lossy().to_string();
                    // No declared type: the server tells it from the name, as for `stolid ingest`.
                    let part = reqwest::multipart::Part::bytes(std::fs::read(&file).expect("readable"))
                        .file_name(page.clone());
                    let form =
                        reqwest::multipart::Form::new().text("collection", collection.to_string()).part("file", part);
                    let response: serde_json::Value = client
                        .post(format!("{base}/v1/documents"))
                        .bearer_auth(key)
                        .multipart(form)
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .expect("an upload")
                        .json()
                        .await
                        .expect("JSON");
                    let id = response["documents"][0]["id"].as_str().expect("a document id").to_string();
                    (id, format!("{collection}/{page}"))
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        pages.extend(uploaded);
    }
    pages
}

fn read_questions(path: &Path) -> anyhow::Result<Vec<Question>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(text.lines().filter(|line| !line.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Result<serde_json::Value> {
    client.post(url).bearer_auth(key).json(body).send().await?.error_for_status()?.json().await
}

/// The pages ("collection/page") a chat reply cites, in citation order.
fn cited_pages(reply: &serde_json::Value, pages: &HashMap<String, String>) -> Vec<String> {
    let citations = reply["citations"].as_array().map(Vec::as_slice).unwrap_or_default();
    citations.iter().filter_map(|c| c["document_id"].as_str().and_then(|id| pages.get(id)).cloned()).collect()
}

/// The first ten pages in result order, each once: several chunks of one page count as one result.
fn distinct_pages(results: &[serde_json::Value], pages: &HashMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for hit in results {
        if out.len() == 10 {
            break;
        }
        let page = hit["document_id"].as_str().and_then(|id| pages.get(id)).cloned().unwrap_or_default();
        if !out.contains(&page) {
            out.push(page);
        }
    }
    out
}

/// With `--curated`, English content pages only: no translations, redirect
/// stubs or all-in-one print pages.
fn is_eval_page(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if matches!(name, "print.html" | "toc.html" | "404.html") {
        return false;
    }
    let Ok(html) = std::fs::read_to_string(path) else { return false };
    let head = &html[..html.floor_char_boundary(2_000)];
    !head.contains("<title>Redirecting") && (!head.contains("<html lang=") || head.contains("<html lang=\"en\""))
}
