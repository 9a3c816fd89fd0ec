//! The house's shape, checked: every `crate::` path in `src/` (parsed with
//! `syn` by `stolid_testkit::layering`, so multi-line imports, nested modules
//! and macro bodies count) names a room on a lower floor, so imports flow one
//! way and there are no circles. `docs/architecture.md` draws these floors.

use std::path::Path;

/// The rooms, bottom up; a room may use only rooms on lower floors (and
/// itself). A nested room (`domain::retrieval`) has a floor of its own.
const FLOORS: &[(&str, u32)] = &[
    // Every setting, prices per model included.
    ("config", 1),
    // AWS clients, token counting, backoff, logs.
    ("infra", 2),
    // Extraction and chunking: pure functions.
    ("ingest", 3),
    // The domain's tables.
    ("store", 4),
    // The model gateway, with its limiter and books (and their tables).
    ("llm", 5),
    // The domain, bottom up: its state, caller and error, then retrieval, then
    // what is built on it.
    ("domain", 6),
    ("domain::retrieval", 7),
    ("domain::signals", 8),
    ("domain::chat", 9),
    ("domain::suggest", 9),
    ("domain::documents", 9),
    ("domain::agent", 10),
    // The entry points, then the process that runs them.
    ("api", 11),
    ("worker", 11),
    ("app", 12),
];

/// Imports flow one way: from each room only to rooms on a lower floor, so no
/// room knows about the rooms above it and there is no import circle.
#[test]
fn every_module_imports_only_from_lower_floors() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let violations = stolid_testkit::layering::check(&src, FLOORS).unwrap();
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(listed.is_empty(), "imports against the layout:\n{}", listed.join("\n"));
}
