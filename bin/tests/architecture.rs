//! ARCHITECTURE.md maps the data flow to files: every file or folder it names in backticks is
//! there, at that path from the workspace root or, for the short forms (`keys/kms.rs`,
//! `tests/relay.rs`), at the end of some path in the workspace.

use std::path::{Path, PathBuf};

const EXTENSIONS: &[&str] = &[
    ".rs", ".md", ".sh", ".py", ".toml", ".html", ".js", ".css", ".json", ".tsv",
];

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            out.push(format!("{rel}/"));
            walk(&path, root, out);
        } else {
            out.push(rel);
        }
    }
}

/// The backticked spans of `text` that name a file or folder.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            // `file.rs::Item` names an item of the file.
            let path = span.split("::").next().unwrap_or(span);
            // Not routes (`/v1/…`), URLs, names with a placeholder (`peers-DATE.md`) or key
            // prefixes of one segment (`blobs/`).
            let plausible = path.trim_end_matches('/').contains('/')
                && !path.starts_with('/')
                && !path.contains("://")
                && !path.contains("DATE")
                && !path.contains(|c: char| c.is_whitespace() || "<>{}*|,".contains(c))
                && (path.ends_with('/') || EXTENSIONS.iter().any(|e| path.ends_with(e)));
            plausible.then(|| path.to_owned())
        })
        .collect()
}

#[test]
fn every_file_architecture_md_names_exists() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let named = named_paths(&text);
    assert!(
        named.len() > 50,
        "only {} paths found in ARCHITECTURE.md",
        named.len()
    );
    let missing: Vec<_> = named
        .iter()
        .filter(|p| !files.iter().any(|f| f == *p || f.ends_with(&format!("/{p}"))))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files that are not there: {missing:#?}"
    );
}

#[test]
fn a_renamed_file_is_caught() {
    let named = named_paths(
        "see `bin/src/events.rs::relay`, `kafka://h:1`, `/v1/x.json`, `a/b`, `r-DATE.md`, `blobs/` and `x.rs`",
    );
    assert_eq!(named, ["bin/src/events.rs"]);
}
