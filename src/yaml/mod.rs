//! Safe YAML reading and go-yaml-v2-compatible YAML writing.
//!
//! Bundles and locks come from other people, so reading is bounded: a size limit is checked
//! before parsing, and alias expansion is bounded by a node budget (billion-laughs documents
//! fail fast with bounded memory). Writing mimics Go's `gopkg.in/yaml.v2` byte for byte for the
//! subset kbld and imgpkg emit (maps with string keys, sequences, scalars), because the files
//! must be byte-identical to what those tools write.

mod emitter;
mod reader;

use std::path::PathBuf;

pub use emitter::{go_key_order, to_yaml_stream, to_yaml_string};
pub use reader::{load_file, parse_documents, parse_typed, read_text};

/// Default largest YAML file read: 16 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Default largest number of nodes (after alias expansion) in one file.
pub const DEFAULT_MAX_NODES: usize = 2_000_000;

/// Bounds applied while reading untrusted YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted file size in bytes, checked before parsing.
    pub max_bytes: u64,
    /// Largest number of nodes, counted after alias expansion, across all documents of a file
    /// (further bounded by 4 nodes per byte of text, at least 100 000).
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_nodes: DEFAULT_MAX_NODES,
        }
    }
}

/// Why a YAML file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The file is larger than the configured limit.
    #[error("{path}: YAML file is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML, or does not have the expected shape.
    #[error("{path}: document {doc}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Zero-based index of the document in the stream.
        doc: usize,
        /// What went wrong.
        message: String,
    },
}

/// A YAML value as kbld sees it after its JSON round trip: string keys, plain scalars.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null` (also an empty document).
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for i64.
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order (sorted on output).
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value under `key` if this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Mutable value under `key` if this is a mapping.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` to `value` in a mapping, replacing an existing entry; no-op otherwise.
    pub fn insert(&mut self, key: &str, value: Node) {
        if let Node::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key.to_owned(), value)),
            }
        }
    }

    /// The string if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A mapping built from string pairs, for small literals.
    pub fn map<I, K>(entries: I) -> Node
    where
        I: IntoIterator<Item = (K, Node)>,
        K: Into<String>,
    {
        Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A string node.
    pub fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }
}
