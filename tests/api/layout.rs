//! The house's shape, checked: every top-level module of `src/` imports only
//! modules on a lower floor, so imports flow one way (and there are no
//! circles). The floors, bottom up, are the README's "Layout" section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Floor of each module; a module may import only from lower floors.
const FLOORS: &[(&str, u32)] = &[
    // Leaves: import nothing of stolid's.
    ("tokens", 0),
    ("retry", 0),
    ("pricing", 0),
    ("telemetry", 0),
    ("store", 0),
    ("config", 1),
    ("aws", 2),
    ("blob", 3),
    ("queue", 3),
    // The model gateway, the pure ingest functions, the caller.
    ("llm", 4),
    ("ingest", 5),
    ("tenant", 5),
    ("domain_error", 5),
    ("state", 6),
    // The domain.
    ("retrieval", 7),
    ("signals", 8),
    ("chat", 9),
    ("suggest", 9),
    ("documents", 9),
    ("agent", 10),
    // The edges: HTTP (with its error type) and the workers, then the process.
    ("error", 11),
    ("http", 12),
    ("worker", 12),
    ("app", 13),
    ("cli", 14),
];

/// The top-level modules each top-level module of `src/` refers to (`crate::x`), tests and comments aside.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let module =
                relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if ["lib", "main"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let uses = found.entry(module.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split('}').next().unwrap().split(',').map(|n| n.trim()).collect(),
                        None => vec![rest],
                    };
                    for name in names {
                        let name: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if !name.is_empty() && name != module {
                            uses.insert(name);
                        }
                    }
                }
            }
        }
    }
    found
}

/// Imports flow one way: from each module only to modules on a lower floor,
/// so no module knows about the rooms above it and there is no import circle.
#[test]
fn every_module_imports_only_from_lower_floors() {
    let floors: BTreeMap<&str, u32> = FLOORS.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, uses) in imports() {
        let Some(&floor) = floors.get(module.as_str()) else {
            violations.push(format!("{module} has no floor in FLOORS (tests/api/layout.rs) and the README"));
            continue;
        };
        for used in uses {
            match floors.get(used.as_str()) {
                Some(&other) if other < floor => {}
                Some(&other) => violations.push(format!("{module} (floor {floor}) imports {used} (floor {other})")),
                None => violations.push(format!("{module} imports {used}, which has no floor")),
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layout:\n{}", violations.join("\n"));
}
