//! The layering check finds what it is for: a fixture crate with three
//! deliberate violations, each of a kind a text scan misses.

use std::path::Path;

use stolid_testkit::layering;

/// A multi-line `use` group, a `super::super` path in an expression and a path
/// inside a macro in an inline module are each reported with file and line;
/// paths within a room, down the floors, and in `#[cfg(test)]` code are not.
#[test]
fn the_check_reports_each_deliberate_violation_and_nothing_else() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layering");
    let floors = [("low", 0), ("mid", 1), ("high", 2)];
    let found: Vec<String> = layering::check(&src, &floors)
        .unwrap()
        .iter()
        .map(|v| format!("{}:{} {} -> {}", v.file.display(), v.line, v.from, v.to))
        .collect();
    assert_eq!(
        found,
        [
            "low/inner.rs:9 low::inner -> mid::value",
            "low/mod.rs:7 low -> high::Thing",
            "mid.rs:16 mid::nested -> high::NAME",
        ],
        "{found:#?}"
    );
}

/// A module outside every room is reported, not silently allowed.
#[test]
fn a_module_in_no_room_is_a_violation() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layering");
    let found = layering::check(&src, &[("low", 0), ("high", 2)]).unwrap();
    assert!(found.iter().any(|v| v.from == "mid" && v.reason.contains("no room")), "{found:#?}");
}
