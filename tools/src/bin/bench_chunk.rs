//! `make bench-chunk`: extraction and chunking throughput (MB/s) for prose,
//! code, whitespace-free text, and HTML flat and nested as deep as extraction
//! allows, at growing sizes. Linear
//! work shows as a flat MB/s column; the last column is each size's time per
//! MB over the smallest size's (1.0 = perfectly linear).
//!
//! Then the same work on a real corpus (by default the Rust book's HTML, as
//! `make bench-fleet` indexes it): CPU seconds in extraction and in chunking,
//! per 100 documents, and the chunks and tokens they make.
//!
//! Options: --sizes-kb 256,1024,4096 (default)  --corpus DIR

use std::time::Instant;

use stolid::ingest::chunk::{ChunkSettings, chunk};
use stolid::ingest::extract::{Format, extract};
use stolid_testkit::bench;

fn prose(bytes: usize) -> String {
    let words = ["ownership", "borrow", "the", "value", "a", "moves", "into", "function", "reference", "lifetime"];
    let mut out = String::with_capacity(bytes + 64);
    let mut i = 0usize;
    while out.len() < bytes {
        if i.is_multiple_of(97) {
            out.push_str("\n\n## Section ");
            out.push_str(&(i / 97).to_string());
            out.push_str("\n\n");
        }
        out.push_str(words[(i * 7 + i / 3) % words.len()]);
        out.push(if i % 13 == 12 { '.' } else { ' ' });
        if i % 13 == 12 {
            out.push(' ');
        }
        i += 1;
    }
    out
}

fn code(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 128);
    let mut i = 0usize;
    while out.len() < bytes {
        out.push_str(&format!(
            "fn handler_{i}(state: &AppState, id: u64) -> Result<Value, Error> {{\n    let row = state.db.get(id)?;\n    Ok(row.into())\n}}\n\n"
        ));
        i += 1;
    }
    out
}

fn no_whitespace(bytes: usize) -> String {
    "abcdefghij0123456789".repeat(bytes / 20 + 1)[..bytes].to_string()
}

/// Nested 10,000 elements deep, with prose paragraphs at the bottom.
fn nested_html(bytes: usize) -> Vec<u8> {
    let depth = 5_000;
    let mut out = String::with_capacity(bytes + depth * 30);
    for _ in 0..depth {
        out.push_str("<div><span>");
    }
    for paragraph in prose(bytes).split("\n\n") {
        out.push_str("<p>");
        out.push_str(paragraph);
        out.push_str("</p>");
    }
    for _ in 0..depth {
        out.push_str("</span></div>");
    }
    out.into_bytes()
}

/// The same prose as flat HTML, the baseline for the nested case.
fn flat_html(bytes: usize) -> Vec<u8> {
    let mut out = String::with_capacity(bytes + 1024);
    for paragraph in prose(bytes).split("\n\n") {
        out.push_str("<p>");
        out.push_str(paragraph);
        out.push_str("</p>");
    }
    out.into_bytes()
}

fn main() {
    let options = bench::options();
    let sizes: Vec<usize> =
        bench::list::<usize>(&options, "sizes-kb", "256,1024,4096").iter().map(|kb| kb * 1024).collect();
    let corpus = options.get("corpus").map(std::path::PathBuf::from).unwrap_or_else(bench::rust_book);
    let settings = ChunkSettings::default();
    println!("{:<16} {:>9} {:>9} {:>8} {:>9} {:>12}", "input", "size_kb", "secs", "chunks", "MB/s", "s/MB vs min");
    type Make = fn(usize) -> (Format, Vec<u8>);
    let kinds: [(&str, Make); 5] = [
        ("prose (md)", |n| (Format::Markdown, prose(n).into_bytes())),
        ("code (text)", |n| (Format::Text, code(n).into_bytes())),
        ("no whitespace", |n| (Format::Text, no_whitespace(n).into_bytes())),
        ("flat html", |n| (Format::Html, flat_html(n))),
        ("html 10000 deep", |n| (Format::Html, nested_html(n))),
    ];
    for (name, make) in kinds {
        let mut base: Option<f64> = None;
        for &size in &sizes {
            let (format, bytes) = make(size);
            let started = Instant::now();
            let chunks = match extract(format, &bytes, usize::MAX) {
                Ok(extracted) => chunk(&extracted.text, extracted.markdown, settings, "bench").len(),
                Err(err) => {
                    println!("{name:<16} {:>9} extraction failed: {err}", size / 1024);
                    continue;
                }
            };
            let secs = started.elapsed().as_secs_f64();
            let mb = bytes.len() as f64 / (1024.0 * 1024.0);
            let per_mb = secs / mb;
            let ratio = per_mb / *base.get_or_insert(per_mb);
            println!("{name:<16} {:>9} {secs:>9.3} {chunks:>8} {:>9.2} {ratio:>12.2}", bytes.len() / 1024, mb / secs);
        }
    }
    real_corpus(&corpus, settings);
}

/// Extraction and chunking of every document under `dir`, timed apart, as the
/// indexing job runs them (one document at a time on one thread).
fn real_corpus(dir: &std::path::Path, settings: ChunkSettings) {
    let files = bench::corpus(dir, usize::MAX).expect("a corpus");
    let (mut extracting, mut chunking, mut docs, mut chunks, mut tokens) = (0.0, 0.0, 0usize, 0usize, 0i64);
    for file in &files {
        let Some(format) = Format::detect(None, file.file_name().and_then(|n| n.to_str())) else { continue };
        let bytes = std::fs::read(file).expect("readable");
        let started = Instant::now();
        let Ok(extracted) = extract(format, &bytes, usize::MAX) else { continue };
        let extracted_at = Instant::now();
        let pieces = chunk(&extracted.text, extracted.markdown, settings, "bench");
        chunking += extracted_at.elapsed().as_secs_f64();
        extracting += extracted_at.duration_since(started).as_secs_f64();
        docs += 1;
        chunks += pieces.len();
        tokens += pieces.iter().map(|c| c.token_count as i64).sum::<i64>();
    }
    let per_100 = |secs: f64| secs * 100.0 / docs.max(1) as f64;
    println!(
        "\n{} ({docs} documents, {chunks} chunks, {tokens} tokens): extraction {extracting:.2} s, chunking {chunking:.2} s; \
         per 100 documents {:.3} + {:.3} = {:.3} s",
        dir.display(),
        per_100(extracting),
        per_100(chunking),
        per_100(extracting + chunking)
    );
}
