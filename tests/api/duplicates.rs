//! Folders as users bring them: the same passages in a book's chapters and in
//! its all-in-one print page. The print page is marked an aggregate, search
//! shows each passage once from the chapter, and the marks follow deletes,
//! re-indexing and a task that died before measuring.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const TOPICS: [&str; 4] = ["lighthouse", "glacier", "orchard", "foundry"];

/// A chapter of about 650 words (~40 shingle samples, above `MIN_SAMPLES`): its topic word in every sentence, the rest
/// drawn from a shared vocabulary, so chapters differ passage by passage but
/// not in their stock words.
fn chapter(topic: &str, seed: u64) -> String {
    const WORDS: [&str; 24] = [
        "the", "keeper", "walks", "along", "narrow", "stone", "path", "every", "morning", "before", "light", "while",
        "old", "maps", "show", "where", "ships", "once", "waited", "for", "calm", "weather", "and", "tide",
    ];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sentences: Vec<String> = (0..50)
        .map(|_| {
            let mut words: Vec<&str> = (0..12).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect();
            words.insert((next() % 12) as usize, topic);
            let mut sentence = words.join(" ");
            sentence[..1].make_ascii_uppercase();
            sentence + "."
        })
        .collect();
    format!("# The {topic}\n\n{}\n\n{}", sentences[..25].join(" "), sentences[25..].join(" "))
}

/// The print page: every chapter, one after the other, then an appendix found nowhere else.
fn print_page() -> String {
    let chapters: Vec<String> = TOPICS.iter().zip(1..).map(|(topic, seed)| chapter(topic, seed)).collect();
    let appendix: Vec<String> = (0..12)
        .map(|i| format!("Colophon note {i} on marbled endpapers, sewn signatures and deckled edges."))
        .collect();
    format!("{}\n\n# Appendix\n\n{}", chapters.join("\n\n"), appendix.join(" "))
}

async fn document(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/v1/documents/{id}")).await
}

/// Polls until no collection's marks wait to be measured.
async fn wait_until_measured(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stale: i64 =
            sqlx::query_scalar("SELECT count(*) FROM aggregate_marks_stale").fetch_one(&app.state.db).await.unwrap();
        if stale == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "marks stayed stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn search(app: &TestApp, body: Value) -> Vec<Value> {
    let response = app.post("/v1/search").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["results"].as_array().unwrap().clone()
}

/// Chapters and print page uploaded together, so their jobs run side by side
/// and measure the collection concurrently.
async fn index_book(app: &TestApp) -> (Vec<String>, String) {
    let mut bodies: Vec<Value> = TOPICS
        .iter()
        .zip(1..)
        .map(
            |(topic, seed)| json!({"text": chapter(topic, seed), "title": format!("{topic}.md"), "collection": "book"}),
        )
        .collect();
    bodies.push(json!({"text": print_page(), "title": "print.md", "collection": "book"}));
    let mut ids = app.index_all(bodies).await;
    wait_until_measured(app).await;
    let print = ids.pop().unwrap();
    (ids, print)
}

#[tokio::test]
async fn a_print_page_is_marked_and_search_shows_its_passages_from_the_chapters() {
    let app = spawn_app().await;
    let (chapters, print) = index_book(&app).await;
    let marked = document(&app, &print).await;
    assert_eq!(marked["aggregate"], true, "{marked}");
    let share = marked["aggregate_share"].as_f64().unwrap();
    assert!((0.9..0.99).contains(&share), "all but the appendix (a twentieth) is in the chapters: {marked}");
    for id in &chapters {
        let doc = document(&app, id).await;
        assert_eq!(doc["aggregate"], false, "{doc}");
        assert_eq!(doc["aggregate_share"], 0.0, "only the larger print page repeats a chapter: {doc}");
    }
    let listed = app.get_json("/v1/documents?collection=book").await;
    assert!(listed["documents"].as_array().unwrap().iter().any(|d| d["aggregate"] == true), "{listed}");

    for mode in ["hybrid", "keyword", "vector"] {
        let results = search(&app, json!({"query": "glacier keeper", "k": 10, "mode": mode})).await;
        assert!(!results.is_empty());
        let from_print: Vec<&str> = results
            .iter()
            .filter(|r| r["document_id"] == print.as_str())
            .map(|r| r["content"].as_str().unwrap())
            .collect();
        assert!(
            from_print.iter().all(|content| content.starts_with("# Appendix")),
            "{mode}: the print page is shown only for what no chapter holds: {from_print:#?}"
        );
        let glacier = results.iter().find(|r| r["document_id"] == chapters[1].as_str()).expect("the chapter");
        let also_in: Vec<&str> =
            glacier["also_in"].as_array().unwrap().iter().map(|a| a["document_id"].as_str().unwrap()).collect();
        assert_eq!(also_in, [print.as_str()], "{mode}: folded, and said so: {glacier}");
        let chunks: Vec<&str> = results.iter().map(|r| r["chunk_id"].as_str().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = chunks.iter().collect();
        assert_eq!(distinct.len(), chunks.len());
    }

    // The appendix is only in the print page: found there, and ranked at half its score by default.
    let demoted = search(&app, json!({"query": "marbled endpapers colophon", "k": 3, "mode": "keyword"})).await;
    let plain = search(
        &app,
        json!({"query": "marbled endpapers colophon", "k": 3, "mode": "keyword", "demote_aggregates": false}),
    )
    .await;
    assert_eq!(demoted[0]["document_id"], print.as_str());
    assert_eq!(plain[0]["chunk_id"], demoted[0]["chunk_id"]);
    let (demoted, plain) = (demoted[0]["score"].as_f64().unwrap(), plain[0]["score"].as_f64().unwrap());
    assert!((demoted - plain * 0.5).abs() < 1e-9, "AGGREGATE_DEMOTION 0.5: {demoted} against {plain}");

    // Re-indexing the print page keeps its mark; deleting three chapters of four takes it away.
    let response = app.post(&format!("/v1/documents/{print}/reindex")).send().await.unwrap();
    assert!(response.status().is_success());
    app.drain_queue().await;
    wait_until_measured(&app).await;
    let reindexed = document(&app, &print).await;
    assert_ne!(reindexed["indexed_at"], marked["indexed_at"], "indexed again");
    assert_eq!(
        (&reindexed["aggregate"], &reindexed["aggregate_share"]),
        (&marked["aggregate"], &marked["aggregate_share"])
    );
    for id in &chapters[..3] {
        let response =
            app.client.delete(app.url(&format!("/v1/documents/{id}"))).bearer_auth(&app.api_key).send().await;
        assert!(response.unwrap().status().is_success());
    }
    wait_until_measured(&app).await;
    let unmarked = document(&app, &print).await;
    assert_eq!(unmarked["aggregate"], false);
    let share = unmarked["aggregate_share"].as_f64().unwrap();
    assert!((0.15..0.35).contains(&share), "one chapter of four remains: {unmarked}");
}

/// What a task that died between publishing and measuring leaves, and chunks
/// written before samples were stored: the sweeper puts both right.
#[tokio::test]
async fn the_sweeper_measures_stale_marks_and_samples_old_chunks() {
    let app = spawn_app().await;
    let (_, print) = index_book(&app).await;
    let marked = document(&app, &print).await;
    assert_eq!(marked["aggregate"], true, "{marked}");
    let db = &app.state.db;
    let samples: Vec<Vec<i64>> =
        sqlx::query_scalar("SELECT shingles FROM chunks ORDER BY id").fetch_all(db).await.unwrap();
    assert!(samples.iter().filter(|s| !s.is_empty()).count() >= 8, "{samples:?}");

    // As before migration 0013: no samples, no marks.
    sqlx::query("UPDATE chunks SET shingles = NULL").execute(db).await.unwrap();
    sqlx::query("UPDATE documents SET aggregate = false, aggregate_share = NULL").execute(db).await.unwrap();
    let report = stolid::worker::sweeper::sweep_aggregates(&app.state).await.unwrap();
    assert_eq!(report.sampled, samples.len());
    assert_eq!(report.measured, 1);
    let again: Vec<Vec<i64>> =
        sqlx::query_scalar("SELECT shingles FROM chunks ORDER BY id").fetch_all(db).await.unwrap();
    assert_eq!(again, samples, "the sweeper samples as indexing does");
    assert_eq!(document(&app, &print).await["aggregate_share"], marked["aggregate_share"]);

    // A change committed, its measurement never made.
    sqlx::query("UPDATE documents SET aggregate = false WHERE id = $1::uuid").bind(&print).execute(db).await.unwrap();
    stolid::store::aggregates::mark_stale(db, app.tenant_id, "book").await.unwrap();
    let report = stolid::worker::sweeper::sweep_aggregates(&app.state).await.unwrap();
    assert_eq!((report.sampled, report.measured), (0, 1));
    assert_eq!(document(&app, &print).await["aggregate"], true);
    let report = stolid::worker::sweeper::sweep_aggregates(&app.state).await.unwrap();
    assert_eq!((report.sampled, report.measured), (0, 0), "nothing left to do");
}

/// Versioned docs mirrored into several collections: most candidates are
/// copies, so a search that comes up short after folding reads deeper, and
/// still returns `k` distinct passages.
#[tokio::test]
async fn a_folder_of_mirrored_copies_still_fills_k_distinct_results() {
    let app = spawn_app().await;
    let topics = ["lighthouse", "glacier", "orchard", "foundry", "harbour", "meadow"];
    let bodies = (1..=5).flat_map(|version| {
        topics.iter().zip(1..).map(move |(topic, seed)| {
            json!({
                "text": format!("Version {version}.\n\n{}", chapter(topic, seed)),
                "title": format!("{topic}.md"),
                "collection": format!("v{version}"),
            })
        })
    });
    app.index_all(bodies).await;
    for mode in ["keyword", "vector", "hybrid"] {
        let results = search(&app, json!({"query": "the keeper walks", "k": 5, "mode": mode})).await;
        assert_eq!(results.len(), 5, "{mode}: {results:#?}");
        let mut titles: Vec<&str> = results.iter().map(|r| r["title"].as_str().unwrap()).collect();
        titles.sort();
        titles.dedup();
        assert_eq!(titles.len(), 5, "{mode}: five different passages, each once: {titles:?}");
        for result in &results {
            assert_eq!(result["also_in"].as_array().unwrap().len(), 4, "{mode}: the other four versions: {result}");
        }
    }
}

/// A manual whose command pages all repeat the same long options section: that
/// is boilerplate, not aggregation, and marks none of them.
#[tokio::test]
async fn pages_sharing_boilerplate_are_not_aggregates() {
    let app = spawn_app().await;
    let options = format!("{}\n\n{}", chapter("option", 98), chapter("flag", 99));
    let bodies = ["build", "check", "clean", "doc", "fetch", "fix"].into_iter().zip(1..).map(|(command, seed)| {
        json!({
            "text": format!("{}\n\n# Options\n\n{options}", chapter(command, seed)),
            "title": format!("cargo-{command}.md"),
            "collection": "manual",
        })
    });
    let ids = app.index_all(bodies).await;
    wait_until_measured(&app).await;
    for id in &ids {
        let doc = document(&app, id).await;
        assert_eq!(doc["aggregate"], false, "{doc}");
        assert_eq!(doc["aggregate_share"], 0.0, "the options section is in all six: {doc}");
    }
}
