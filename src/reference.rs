//! Image references, parsed the way docker and go-containerregistry do.
//!
//! The original text is kept byte for byte: locks key entries by it.

use std::fmt;

use crate::digest::Digest;

/// Docker Hub's registry host as go-containerregistry names it.
pub const DOCKER_HUB: &str = "index.docker.io";

/// Why a reference could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {text:?}: {reason}")]
pub struct ReferenceError {
    /// The offending text.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed image reference: registry, repository, and tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    original: String,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `text`; a reference with neither tag nor digest gets tag `latest`.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            text: text.chars().take(300).collect(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(err("empty"));
        }
        if text.len() > 4096 {
            return Err(err("longer than 4096 bytes"));
        }
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => (
                n,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (text, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_owned()),
            ),
            None => (name, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(err(
                "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        if !valid_registry(&registry) {
            return Err(err("invalid registry host"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(err(
                "repository must be lower-case path components of [a-z0-9] joined by . _ __ or -",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Reference {
            original: text.to_owned(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The text this reference was parsed from, unchanged.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The registry host (with port), `index.docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path within the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `registry/repository`.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository at `digest`, without a tag.
    pub fn with_digest(&self, digest: &Digest) -> Reference {
        let mut r = self.clone();
        r.tag = None;
        r.digest = Some(digest.clone());
        r.original = r.to_string();
        r
    }

    /// The same repository at `tag`, without a digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        let mut r = self.clone();
        r.tag = Some(tag.to_owned());
        r.digest = None;
        r.original = r.to_string();
        r
    }

    /// Another repository path on the same registry, keeping tag and digest.
    pub fn with_repository(&self, repository: &str) -> Reference {
        let mut r = self.clone();
        r.repository = repository.to_owned();
        r.original = r.to_string();
        r
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_registry(host: &str) -> bool {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|comp| {
            // [a-z0-9]+ ( (. | _ | __ | -+) [a-z0-9]+ )*
            let b = comp.as_bytes();
            if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if is_alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !is_alnum(b[i]) {
                    i += 1;
                }
                let sep = &comp[start..i];
                let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
                if !ok {
                    return false;
                }
            }
            true
        })
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl fmt::Display for Reference {
    /// The full form: `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}
