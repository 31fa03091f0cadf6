//! imgpkg/kbld-compatible authoring: locks, reference scanning and rewriting, bundle layers.
//!
//! Everything here works without a registry; the CLI wires it to one. Output formats are
//! byte-compatible with imgpkg 0.43.1 and kbld 0.42.0 so that either tool can take over.

pub mod bundle;
pub mod extract;
pub mod kbld;
pub mod lock;
pub mod publish;
pub mod rewrite;
pub mod scan;

use std::path::PathBuf;

use crate::yaml::YamlError;

/// Why an authoring step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    /// A YAML file could not be read or parsed.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A lock file is well-formed YAML but not a valid lock.
    #[error("{path}: {message}")]
    InvalidLock {
        /// The lock file (or a description of where it came from).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// References found in configuration have no entry in the lock.
    #[error("images not found in the lock (kbld.carvel.dev/id):\n- {}", .0.join("\n- "))]
    Unlocked(Vec<String>),
    /// Input directories do not form a valid bundle or image.
    #[error("{path}: {message}")]
    InvalidInput {
        /// The offending path.
        path: PathBuf,
        /// What imgpkg would refuse, and why.
        message: String,
    },
    /// A layer entry is unsafe or unsupported and was refused.
    #[error("refusing layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry name as stored in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuthorError {
    let path = path.into();
    move |source| AuthorError::Io { path, source }
}
