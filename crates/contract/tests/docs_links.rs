//! Every relative link in the project's Markdown (README.md, CONTRIBUTING.md, docs/*.md)
//! resolves: the file it names exists, and a `#anchor` matches a heading of the target as
//! GitHub slugs it. Lives here because this crate's tests compile fast and run in
//! `cargo test --workspace`.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Markdown files whose links are checked, relative to the repository root.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("CONTRIBUTING.md")];
    let docs = root.join("docs");
    let entries = fs::read_dir(&docs).unwrap_or_else(|e| panic!("reading {}: {e}", docs.display()));
    let mut in_docs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .filter_map(|path| path.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect();
    in_docs.sort();
    files.extend(in_docs);
    files
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fenced = false;
    text.lines().enumerate().filter_map(move |(i, line)| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return None;
        }
        (!fenced).then_some((i + 1, line))
    })
}

/// `line` without its inline code spans (`` `...` ``), where brackets are not links.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        match after.find(')') {
            Some(end) => {
                let target = after[..end].split_whitespace().next().unwrap_or("");
                targets.push(target.to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    targets
}

/// The anchor GitHub gives a heading: lowercase, spaces to `-`, punctuation other than `-`
/// and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of the headings in `text`, with GitHub's `-1`, `-2`... for repeated ones.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn every_relative_markdown_link_resolves() {
    let root = repo_root();
    let mut broken = Vec::new();
    for file in markdown_files(&root) {
        let path = root.join(&file);
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let dir = path.parent().unwrap_or(&root).to_path_buf();
        for (line_no, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.is_empty() || is_external(&target) {
                    continue;
                }
                let (file_part, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let linked = if file_part.is_empty() {
                    path.clone()
                } else {
                    dir.join(file_part)
                };
                let at = format!("{}:{line_no}: ({target})", file.display());
                if !linked.exists() {
                    let shown = linked.strip_prefix(&root).unwrap_or(&linked);
                    broken.push(format!("{at}: no file {}", shown.display()));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if linked.is_dir() {
                    broken.push(format!("{at}: an anchor into a directory"));
                    continue;
                }
                let target_text = fs::read_to_string(&linked)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", linked.display()));
                if !anchors(&target_text).contains(anchor) {
                    broken.push(format!("{at}: no heading slugs to #{anchor}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken relative links in the docs:\n{}",
        broken.join("\n")
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("Capacity (`MAX_CONCURRENT_COMPUTE`)"),
        "capacity-max_concurrent_compute"
    );
    assert_eq!(
        slug("Ownership: who may touch which compute"),
        "ownership-who-may-touch-which-compute"
    );
    assert_eq!(
        slug("Building offline (no registry reachable)"),
        "building-offline-no-registry-reachable"
    );
    let repeated = anchors("# Results\n## Results\n```\n# not a heading\n```\n");
    assert!(repeated.contains("results") && repeated.contains("results-1"));
    assert!(!repeated.contains("not-a-heading"));
}

#[test]
fn links_are_found_outside_code() {
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and `[b](c.md)` and [d](https://e)"),
        vec!["docs/a.md#x".to_string(), "https://e".to_string()]
    );
}
