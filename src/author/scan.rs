//! Finding image references in Kubernetes YAML the way kbld does.
//!
//! kbld looks under every map key named `image` (plus configured keys) whose value is a
//! string, at any depth, in every document; files are walked in lexical order.

use std::path::{Path, PathBuf};

use super::{AuthorError, io_err};
use crate::yaml::{self, Limits, Node};

/// The key kbld searches by default.
pub const DEFAULT_KEY: &str = "image";

/// One image reference found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRef {
    /// The reference exactly as written.
    pub text: String,
    /// The file it was found in.
    pub file: PathBuf,
    /// Zero-based document index within the file.
    pub doc: usize,
}

/// Whether `key` is one of the searched keys.
fn is_image_key(key: &str, extra_keys: &[String]) -> bool {
    key == DEFAULT_KEY || extra_keys.iter().any(|k| k == key)
}

/// Calls `f` on every image reference string in `node`, in document order; `f` may return a
/// replacement for the string.
pub fn visit_refs_mut(
    node: &mut Node,
    extra_keys: &[String],
    f: &mut dyn FnMut(&str) -> Option<String>,
) {
    match node {
        Node::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                if is_image_key(k, extra_keys)
                    && let Node::Str(s) = v
                {
                    if let Some(new) = f(s) {
                        *s = new;
                    }
                    continue;
                }
                visit_refs_mut(v, extra_keys, f);
            }
        }
        Node::Seq(items) => {
            for item in items {
                visit_refs_mut(item, extra_keys, f);
            }
        }
        _ => {}
    }
}

/// Every image reference string in `node`, in document order (duplicates kept).
pub fn refs_in(node: &Node, extra_keys: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut copy = node.clone();
    visit_refs_mut(&mut copy, extra_keys, &mut |s| {
        found.push(s.to_owned());
        None
    });
    found
}

/// The `.yaml`, `.yml` and `.json` files under `paths` (files given directly are taken as is),
/// directories walked recursively in lexical order; symlinked directories are not followed.
pub fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuthorError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(io_err(p))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), AuthorError> {
    let mut entries: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        entries.push((e.file_name(), e.path()));
    }
    entries.sort();
    for (name, path) in entries {
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if has_yaml_extension(Path::new(&name)) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_yaml_extension(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Every image reference in the YAML files under `paths`, in file and document order.
pub fn scan_paths(
    paths: &[PathBuf],
    extra_keys: &[String],
    limits: &Limits,
) -> Result<Vec<FoundRef>, AuthorError> {
    let mut found = Vec::new();
    for file in yaml_files(paths)? {
        let docs = yaml::load_file(&file, limits)?;
        for (doc, node) in docs.iter().enumerate() {
            for text in refs_in(node, extra_keys) {
                found.push(FoundRef {
                    text,
                    file: file.clone(),
                    doc,
                });
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_image_keys_at_any_depth_and_extra_keys() {
        let text = "a:\n  image: x:1\n  list:\n  - image: y@sha256:00\n  - image: {nested: true}\n---\nspec:\n  custom: z\n";
        let docs = yaml::parse_documents(text, Path::new("t"), &Limits::default()).unwrap();
        assert_eq!(refs_in(&docs[0], &[]), vec!["x:1", "y@sha256:00"]);
        assert!(refs_in(&docs[1], &[]).is_empty());
        assert_eq!(refs_in(&docs[1], &["custom".to_owned()]), vec!["z"]);
    }
}
