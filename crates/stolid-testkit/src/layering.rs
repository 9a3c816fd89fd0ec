//! The layering check: every `crate::` path in a crate's source, resolved to the
//! room it names, must point to a room on a lower floor, so imports flow one way
//! and there are no circles.
//!
//! The source is parsed with `syn`, not scanned as text, so what rustfmt writes
//! over several lines, a nested `use` group, a path in an expression or a type,
//! `super::` and `self::`, an inline `mod` and a path inside a macro's tokens
//! (`tokio::select!`, `format!`) are all seen. Test code (`#[cfg(test)]`) is left
//! out: a test may reach anywhere.
//!
//! A room is a module path (`"domain"`, `"domain::retrieval"`); a module belongs
//! to the longest room that is a prefix of its path, so a room can hold rooms on
//! floors of their own. Paths within one room are free.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// One path that runs against the floors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the source folder.
    pub file: PathBuf,
    pub line: usize,
    /// The module the path is written in, and the module it names.
    pub from: String,
    pub to: String,
    /// Why it is a violation, in words.
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {} -> {}: {}", self.file.display(), self.line, self.from, self.to, self.reason)
    }
}

/// Checks every `.rs` file under `src` against `floors` (room path, floor;
/// higher floors may use lower ones). `lib.rs` and `main.rs` are the crate's
/// root and may use any room; a module that belongs to no room is a violation.
pub fn check(src: &Path, floors: &[(&str, u32)]) -> anyhow::Result<Vec<Violation>> {
    let floors: BTreeMap<Vec<String>, u32> = floors.iter().map(|(room, floor)| (split(room), *floor)).collect();
    let mut violations = Vec::new();
    for file in rust_files(src)? {
        let relative = file.strip_prefix(src)?.to_path_buf();
        let module = module_of(&relative);
        let text = std::fs::read_to_string(&file)?;
        let syntax = syn::parse_file(&text).map_err(|err| anyhow::anyhow!("{}: {err}", file.display()))?;
        let mut paths = Paths { module, found: Vec::new() };
        paths.visit_file(&syntax);
        for (at, target, line) in paths.found {
            if at.is_empty() {
                continue; // the crate root wires every room
            }
            if let Some(reason) = against_floors(&floors, &at, &target) {
                violations.push(Violation {
                    file: relative.clone(),
                    line,
                    from: at.join("::"),
                    to: target.join("::"),
                    reason,
                });
            }
        }
    }
    violations.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    violations.dedup();
    Ok(violations)
}

/// Why a path from module `at` to `target` runs against the floors, if it does.
fn against_floors(floors: &BTreeMap<Vec<String>, u32>, at: &[String], target: &[String]) -> Option<String> {
    let Some((from_room, from_floor)) = room_of(floors, at) else {
        return Some("this module belongs to no room (add it to the floors)".into());
    };
    let Some((to_room, to_floor)) = room_of(floors, target) else {
        return Some("names a module that belongs to no room".into());
    };
    (from_room != to_room && from_floor <= to_floor).then(|| {
        format!(
            "room {} (floor {from_floor}) uses room {} (floor {to_floor}): imports must go down",
            from_room.join("::"),
            to_room.join("::")
        )
    })
}

fn split(path: &str) -> Vec<String> {
    path.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The room a module path belongs to: the longest room that is its prefix.
fn room_of<'a>(floors: &'a BTreeMap<Vec<String>, u32>, path: &[String]) -> Option<(&'a Vec<String>, u32)> {
    floors.iter().filter(|(room, _)| path.starts_with(room)).max_by_key(|(room, _)| room.len()).map(|(r, f)| (r, *f))
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `a/b/mod.rs` and `a/b.rs` are `a::b`; `lib.rs`, `main.rs` and `bin/*` the root.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return Vec::new();
    }
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !["mod", "lib", "main"].contains(&stem) {
        parts.push(stem.to_string());
    }
    parts
}

/// Collects every path that names a module of the crate, resolved to an
/// absolute module path, with the module it is written in and its line.
struct Paths {
    /// The module being walked (inline `mod` blocks push onto it).
    module: Vec<String>,
    found: Vec<(Vec<String>, Vec<String>, usize)>,
}

impl Paths {
    /// Resolves a path's leading segments (`crate`, `super`, `self`) to an
    /// absolute path; `None` for paths into other crates or local names.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let (mut base, rest) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "super" | "self" => {
                let mut base = self.module.clone();
                let mut rest = segments;
                while let Some(head) = rest.first() {
                    match head.as_str() {
                        "super" => {
                            base.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ => return None,
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn record(&mut self, segments: Vec<String>, line: usize) {
        if let Some(target) = self.resolve(&segments)
            && !target.is_empty()
        {
            self.found.push((self.module.clone(), target, line));
        }
    }

    /// Walks a `use` tree, each leaf with the prefix that leads to it.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(syn::UseName { ident }) | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                let mut full = prefix.clone();
                if ident != "self" {
                    full.push(ident.to_string());
                }
                self.record(full, ident.span().start().line);
            }
            syn::UseTree::Glob(glob) => self.record(prefix.clone(), glob.star_token.spans[0].start().line),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    /// Paths inside a macro's tokens: `crate :: a :: b`, `super :: x`.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(group) => self.tokens(group.stream()),
                TokenTree::Ident(ident) if ["crate", "super", "self"].contains(&ident.to_string().as_str()) => {
                    let line = ident.span().start().line;
                    let mut segments = vec![ident.to_string()];
                    let mut j = i + 1;
                    while j + 2 < trees.len() && is_path_sep(&trees[j], &trees[j + 1]) {
                        match &trees[j + 2] {
                            TokenTree::Ident(next) => {
                                segments.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segments.len() > 1 {
                        self.record(segments, line);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn is_path_sep(a: &TokenTree, b: &TokenTree) -> bool {
    matches!((a, b), (TokenTree::Punct(x), TokenTree::Punct(y))
        if x.as_char() == ':' && y.as_char() == ':' && x.spacing() == proc_macro2::Spacing::Joint)
}

/// `#[cfg(test)]` (and `#[cfg(all(test, ...))]`): test code, left out.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr.meta.require_list().is_ok_and(|list| {
                list.tokens.clone().into_iter().any(|t| matches!(&t, TokenTree::Ident(i) if i == "test"))
            })
    })
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            _ => &[],
        };
        if is_test(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        self.use_tree(&mut prefix, &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = path.segments.first() {
            self.record(segments, first.ident.span().start().line);
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

#[cfg(test)]
mod tests {
    use super::module_of;
    use std::path::Path;

    /// File paths map to module paths the way rustc maps them.
    #[test]
    fn files_name_their_modules() {
        assert_eq!(module_of(Path::new("lib.rs")), Vec::<String>::new());
        assert_eq!(module_of(Path::new("a/mod.rs")), vec!["a"]);
        assert_eq!(module_of(Path::new("a/b.rs")), vec!["a", "b"]);
        assert_eq!(module_of(Path::new("bin/tool.rs")), Vec::<String>::new());
    }
}
