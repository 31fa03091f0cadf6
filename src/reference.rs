//! Image references, parsed the way docker and go-containerregistry do.
//!
//! The original text is kept byte for byte: locks key entries by it.
//!
//! # Grammar and deliberate choices
//!
//! A reference is `[host[:port]/]path[:tag][@digest]`. The rules follow
//! go-containerregistry's `name.ParseReference` (which imgpkg and kbld use) for
//! *defaults*, and docker's `distribution/reference` grammar for *validation*,
//! which is the stricter of the two. (go-containerregistry's `StrictValidation`
//! option means "no defaults at all"; we keep its default-filling weak mode, since
//! `redis` must mean Docker Hub's `library/redis:latest`, and validate strictly.)
//!
//! - The first `/`-separated component is the registry host when it contains
//!   `.` or `:`, is `localhost`, or is a bracketed IPv6 address; otherwise the
//!   whole name is a Docker Hub repository. (`localhost` is docker's rule;
//!   go-containerregistry would read `localhost/x` as a Docker Hub repository,
//!   which is never what a user means.) A first component with upper-case letters
//!   and no `.`/`:` is part of the path and therefore rejected, as
//!   go-containerregistry does (docker would take `Foo/bar` to be a host `Foo`).
//! - Docker Hub is spelt `index.docker.io` (go-containerregistry's
//!   `DefaultRegistry`); `docker.io` is rewritten to it. `registry-1.docker.io` and
//!   other spellings are kept as written, as go-containerregistry does.
//! - A single-component path on Docker Hub gets the `library/` namespace, also when
//!   the host is written out (`docker.io/redis` is `index.docker.io/library/redis`).
//! - With neither tag nor digest the tag is `latest`; with a digest and no tag
//!   there is no tag; `repo:tag@digest` keeps both (the digest is authoritative).
//! - Host: dot-separated labels of `[A-Za-z0-9-]` not starting or ending with `-`
//!   (upper case allowed, as both tools allow), or `[ipv6]`; optional port `1..=65535`.
//! - Path components: `[a-z0-9]+` joined by `.`, `_`, `__` or `-+` (docker's
//!   grammar; go-containerregistry only checks characters). Upper case is rejected.
//!   The path may be one character long (docker allows it; go-containerregistry
//!   requires two) and at most 255 bytes, as written and once `library/` is added.
//! - Tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (docker's; go-containerregistry does
//!   not forbid a leading `.` or `-`, which registries reject).
//! - Digest: `sha256:<64 hex>` or `sha512:<128 hex>`, lower-case hex.
//! - Whitespace, control characters and non-ASCII are rejected anywhere.

use std::fmt;

use crate::digest::Digest;

/// Docker Hub's registry host as go-containerregistry names it.
pub const DOCKER_HUB: &str = "index.docker.io";

/// The short alias of Docker Hub that references may use; normalised to [`DOCKER_HUB`].
pub const DOCKER_HUB_ALIAS: &str = "docker.io";

/// Longest tag a registry accepts (distribution spec).
pub const MAX_TAG_LEN: usize = 128;

/// Longest repository path accepted, as written and after `library/` is added.
pub const MAX_REPOSITORY_LEN: usize = 255;

/// Longest reference text accepted at all, to bound work on hostile input.
const MAX_TEXT_LEN: usize = 4096;

/// Why a reference could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {text:?}: {reason}")]
pub struct ReferenceError {
    /// The offending text (cut to its first 300 characters).
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed image reference: registry, repository, and tag and/or digest.
///
/// Equality and hashing include [`Reference::original`], so `redis` and
/// `docker.io/library/redis` are different values that [`fmt::Display`] the same.
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
        let err = |reason: String| ReferenceError {
            text: text.chars().take(300).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(err("empty".into()));
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(err(format!("longer than {MAX_TEXT_LEN} bytes")));
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(format!(
                "contains whitespace or control character {c:?}"
            )));
        }
        if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
            return Err(err(format!("contains non-ASCII character {c:?}")));
        }

        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|e| err(format!("bad digest after '@': {e}")))?;
                (n, Some(digest))
            }
            None => (text, None),
        };
        if name.is_empty() {
            return Err(err("missing repository name".into()));
        }

        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err("missing repository name".into()));
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first, rest),
            _ => (DOCKER_HUB, name),
        };
        check_registry(registry).map_err(err)?;
        check_repository(path).map_err(err)?;

        let registry = if registry == DOCKER_HUB_ALIAS {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        // Checked again once `library/` is added, so that what Display prints parses back.
        if repository.len() > MAX_REPOSITORY_LEN {
            return Err(err(format!(
                "repository path is {} bytes long with Docker Hub's library/ namespace, at most \
                 {MAX_REPOSITORY_LEN} allowed",
                repository.len()
            )));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (t, _) => t.map(str::to_owned),
        };
        Ok(Reference {
            original: text.to_owned(),
            registry: registry.to_owned(),
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

    /// The repository path within the registry (`library/redis` for `redis`).
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

    /// Whether this names Docker Hub, whose auth and rate limits differ from other registries.
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
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
    ///
    /// The tag is trusted (it comes from a registry listing or our own code);
    /// parse the result's [`Reference::original`] again if it came from a user.
    pub fn with_tag(&self, tag: &str) -> Reference {
        debug_assert!(check_tag(tag).is_ok(), "invalid tag {tag:?}");
        let mut r = self.clone();
        r.tag = Some(tag.to_owned());
        r.digest = None;
        r.original = r.to_string();
        r
    }

    /// Another repository path on the same registry, keeping tag and digest.
    ///
    /// The path is trusted like [`Reference::with_tag`]'s tag.
    pub fn with_repository(&self, repository: &str) -> Reference {
        debug_assert!(
            check_repository(repository).is_ok(),
            "invalid repository {repository:?}"
        );
        let mut r = self.clone();
        r.repository = repository.to_owned();
        r.original = r.to_string();
        r
    }
}

/// Whether the first path component names a registry host rather than a namespace.
fn looks_like_host(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.starts_with('[')
}

fn check_tag(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty tag after ':'".into());
    }
    if t.len() > MAX_TAG_LEN {
        return Err(format!(
            "tag is {} characters long, at most {MAX_TAG_LEN} allowed",
            t.len()
        ));
    }
    if t.starts_with(['.', '-']) {
        return Err(format!("tag {t:?} must not start with '.' or '-'"));
    }
    if let Some(c) = t
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "tag {t:?} contains {c:?}; only [A-Za-z0-9_.-] allowed"
        ));
    }
    Ok(())
}

fn check_registry(host: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry host {host:?} {why}"));
    // Split off the port: after the closing bracket for IPv6, else after the last ':'.
    let (h, port) = if host.starts_with('[') {
        let Some(end) = host.find(']') else {
            return bad("has an unclosed '['");
        };
        match &host[end + 1..] {
            "" => (&host[..=end], None),
            rest => match rest.strip_prefix(':') {
                Some(p) => (&host[..=end], Some(p)),
                None => return bad("has text after ']' that is not a port"),
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return bad("has a port that is not a number in 1-65535");
        }
    }
    if let Some(inner) = h.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.is_empty()
            || !inner.contains(':')
            || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
        {
            return bad("is not a valid bracketed IPv6 address");
        }
        return Ok(());
    }
    if h.is_empty() {
        return bad("is empty");
    }
    for label in h.split('.') {
        if label.is_empty() {
            return bad("has an empty label");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("has a label starting or ending with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("may contain only [A-Za-z0-9-] labels joined by '.'");
        }
    }
    Ok(())
}

fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("missing repository path after the registry host".into());
    }
    if repo.len() > MAX_REPOSITORY_LEN {
        return Err(format!(
            "repository path is {} bytes long, at most {MAX_REPOSITORY_LEN} allowed",
            repo.len()
        ));
    }
    if repo.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository {repo:?} must be lower-case"));
    }
    for comp in repo.split('/') {
        if comp.is_empty() {
            return Err(format!(
                "repository {repo:?} has an empty path component (leading, trailing or double '/')"
            ));
        }
        if !valid_component(comp) {
            return Err(format!(
                "repository component {comp:?} must be [a-z0-9] runs joined by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ( (. | _ | __ | -+) [a-z0-9]+ )*`
fn valid_component(comp: &str) -> bool {
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
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
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
