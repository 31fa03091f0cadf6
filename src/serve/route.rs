//! Request paths of the distribution API, parsed (never joined onto a file system).
//!
//! Every name, tag and digest is checked against the distribution-spec grammar here, so the
//! handlers only ever look strings up in maps built at startup.

use crate::digest::Digest;

/// Longest repository name the spec allows.
const MAX_NAME: usize = 255;
/// Longest tag the spec allows.
const MAX_TAG: usize = 128;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<tag or digest>`.
    Manifest(String, ManifestRef),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(String, Digest),
    /// `/v2/<name>/tags/list`.
    Tags(String),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(String, Digest),
    /// `/v2/<name>/blobs/uploads/…`: push endpoints, never served.
    Upload(String),
}

/// A manifest asked for by tag or by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// A tag (already checked against the tag grammar).
    Tag(String),
    /// A digest.
    Digest(Digest),
}

/// Why a path is not a request this server understands; each maps to a spec error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Not under `/v2/`, or no known endpoint: 404 with no particular code.
    NotFound,
    /// The repository name breaks the grammar: 400 `NAME_INVALID`.
    NameInvalid(String),
    /// The digest is malformed: 400 `DIGEST_INVALID`.
    DigestInvalid(String),
    /// The tag is malformed: 404 `MANIFEST_UNKNOWN` (no such tag can exist).
    TagInvalid(String),
}

/// Parses a request path (without the query string).
pub fn parse(path: &str) -> Result<Route, RouteError> {
    // Clients may percent-encode the colon of a digest; nothing else needs decoding.
    let path = path.replace("%3A", ":").replace("%3a", ":");
    let rest = match path.strip_prefix("/v2") {
        Some(r) => r,
        None => return Err(RouteError::NotFound),
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Base);
    }
    let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags(name_checked(name)?));
    }
    if let Some(at) = rest.find("/blobs/uploads") {
        let tail = &rest[at + "/blobs/uploads".len()..];
        if tail.is_empty() || tail.starts_with('/') {
            return Ok(Route::Upload(name_checked(&rest[..at])?));
        }
    }
    for (marker, kind) in [("/manifests/", 0u8), ("/blobs/", 1), ("/referrers/", 2)] {
        if let Some(at) = rest.rfind(marker) {
            let (name, last) = (&rest[..at], &rest[at + marker.len()..]);
            if last.is_empty() || last.contains('/') {
                continue;
            }
            let name = name_checked(name)?;
            return match kind {
                0 => Ok(Route::Manifest(name, manifest_ref(last)?)),
                1 => Ok(Route::Blob(name, digest_checked(last)?)),
                _ => Ok(Route::Referrers(name, digest_checked(last)?)),
            };
        }
    }
    Err(RouteError::NotFound)
}

fn manifest_ref(text: &str) -> Result<ManifestRef, RouteError> {
    if text.contains(':') {
        return Ok(ManifestRef::Digest(digest_checked(text)?));
    }
    if is_tag(text) {
        Ok(ManifestRef::Tag(text.to_owned()))
    } else {
        Err(RouteError::TagInvalid(text.to_owned()))
    }
}

fn digest_checked(text: &str) -> Result<Digest, RouteError> {
    text.parse::<Digest>()
        .map_err(|_| RouteError::DigestInvalid(text.to_owned()))
}

fn name_checked(name: &str) -> Result<String, RouteError> {
    if is_name(name) {
        Ok(name.to_owned())
    } else {
        Err(RouteError::NameInvalid(name.to_owned()))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: one path component of a repository name.
pub fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-", then alphanumerics again.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A repository name: components joined by `/`, at most 255 characters.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.split('/').all(is_component)
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// The value of one query parameter, if present once (first wins; no decoding needed for the
/// values this server reads: numbers, tags, names and media types).
pub fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn endpoints() {
        assert_eq!(parse("/v2/"), Ok(Route::Base));
        assert_eq!(parse("/v2"), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Ok(Route::Catalog));
        assert_eq!(
            parse("/v2/library/redis/tags/list"),
            Ok(Route::Tags("library/redis".into()))
        );
        assert_eq!(
            parse("/v2/a/manifests/1.0"),
            Ok(Route::Manifest("a".into(), ManifestRef::Tag("1.0".into())))
        );
        let d: Digest = D.parse().unwrap();
        assert_eq!(
            parse(&format!("/v2/x/blobs/manifests/{D}")),
            Ok(Route::Manifest(
                "x/blobs".into(),
                ManifestRef::Digest(d.clone())
            ))
        );
        assert_eq!(
            parse(&format!("/v2/x/blobs/{}", D.replace(':', "%3A"))),
            Ok(Route::Blob("x".into(), d.clone()))
        );
        assert_eq!(
            parse(&format!("/v2/x/referrers/{D}")),
            Ok(Route::Referrers("x".into(), d))
        );
        assert_eq!(parse("/v2/x/blobs/uploads/"), Ok(Route::Upload("x".into())));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("/etc/passwd"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/x/other/thing"), Err(RouteError::NotFound));
        assert!(matches!(
            parse("/v2/../etc/manifests/latest"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/UPPER/manifests/latest"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a/blobs/sha256:zz"),
            Err(RouteError::DigestInvalid(_))
        ));
        assert!(matches!(
            parse("/v2/a/manifests/.bad"),
            Err(RouteError::TagInvalid(_))
        ));
        assert!(!is_name(&"a".repeat(256)));
    }

    #[test]
    fn components() {
        for ok in ["a", "docker.io", "127.0.0.1", "a__b", "a-b", "a---b", "a_b"] {
            assert!(is_component(ok), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", "a___b", "host:5000", "a.-b"] {
            assert!(!is_component(bad), "{bad}");
        }
    }

    #[test]
    fn query() {
        assert_eq!(query_param(Some("n=2&last=b"), "last"), Some("b"));
        assert_eq!(query_param(Some("ns=docker.io"), "ns"), Some("docker.io"));
        assert_eq!(query_param(None, "n"), None);
        assert_eq!(query_param(Some("x"), "n"), None);
    }
}
