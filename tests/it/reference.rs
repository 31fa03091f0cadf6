//! Table-driven checks of image reference parsing through the public API only.
//!
//! Expected values were derived by hand from docker's `distribution/reference`
//! grammar and go-containerregistry's `name` package defaults (see the module
//! doc of `airlift::reference` for where they differ and which one we follow).

use airlift::reference::Reference;

const D256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const D512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

/// What a case should parse to.
struct Want {
    registry: &'static str,
    repository: &'static str,
    tag: Option<&'static str>,
    digest: Option<&'static str>,
    display: String,
}

fn ok(
    registry: &'static str,
    repository: &'static str,
    tag: Option<&'static str>,
    digest: Option<&'static str>,
    display: &str,
) -> Option<Want> {
    Some(Want {
        registry,
        repository,
        tag,
        digest,
        display: display.to_owned(),
    })
}

fn cases() -> Vec<(String, Option<Want>)> {
    let long_tag = "t".repeat(128);
    let too_long_tag = "t".repeat(129);
    let long_repo = format!("x.io/{}", "a".repeat(255));
    let too_long_repo = format!("x.io/{}", "a".repeat(256));
    vec![
        // Docker Hub defaults and aliases.
        (
            "redis".into(),
            ok(
                "index.docker.io",
                "library/redis",
                Some("latest"),
                None,
                "index.docker.io/library/redis:latest",
            ),
        ),
        (
            "redis:7".into(),
            ok(
                "index.docker.io",
                "library/redis",
                Some("7"),
                None,
                "index.docker.io/library/redis:7",
            ),
        ),
        (
            "docker.io/redis".into(),
            ok(
                "index.docker.io",
                "library/redis",
                Some("latest"),
                None,
                "index.docker.io/library/redis:latest",
            ),
        ),
        (
            "docker.io/library/redis".into(),
            ok(
                "index.docker.io",
                "library/redis",
                Some("latest"),
                None,
                "index.docker.io/library/redis:latest",
            ),
        ),
        (
            "index.docker.io/redis:alpine".into(),
            ok(
                "index.docker.io",
                "library/redis",
                Some("alpine"),
                None,
                "index.docker.io/library/redis:alpine",
            ),
        ),
        (
            "docker.io/x/y".into(),
            ok(
                "index.docker.io",
                "x/y",
                Some("latest"),
                None,
                "index.docker.io/x/y:latest",
            ),
        ),
        (
            "bitnami/redis:7.2".into(),
            ok(
                "index.docker.io",
                "bitnami/redis",
                Some("7.2"),
                None,
                "index.docker.io/bitnami/redis:7.2",
            ),
        ),
        // registry-1.docker.io is not an alias in go-containerregistry: kept, no library/.
        (
            "registry-1.docker.io/redis".into(),
            ok(
                "registry-1.docker.io",
                "redis",
                Some("latest"),
                None,
                "registry-1.docker.io/redis:latest",
            ),
        ),
        // Hosts and ports.
        (
            "example.com:5000/path/img:v1".into(),
            ok(
                "example.com:5000",
                "path/img",
                Some("v1"),
                None,
                "example.com:5000/path/img:v1",
            ),
        ),
        (
            "ghcr.io/a/b/c/d".into(),
            ok(
                "ghcr.io",
                "a/b/c/d",
                Some("latest"),
                None,
                "ghcr.io/a/b/c/d:latest",
            ),
        ),
        (
            "localhost/x".into(),
            ok("localhost", "x", Some("latest"), None, "localhost/x:latest"),
        ),
        (
            "localhost:5000/x".into(),
            ok(
                "localhost:5000",
                "x",
                Some("latest"),
                None,
                "localhost:5000/x:latest",
            ),
        ),
        (
            "127.0.0.1:5000/a/b:1".into(),
            ok(
                "127.0.0.1:5000",
                "a/b",
                Some("1"),
                None,
                "127.0.0.1:5000/a/b:1",
            ),
        ),
        (
            "[::1]:5000/a:1".into(),
            ok("[::1]:5000", "a", Some("1"), None, "[::1]:5000/a:1"),
        ),
        (
            "Registry.Example.COM/app".into(),
            ok(
                "Registry.Example.COM",
                "app",
                Some("latest"),
                None,
                "Registry.Example.COM/app:latest",
            ),
        ),
        (
            "my-host.io/app".into(),
            ok(
                "my-host.io",
                "app",
                Some("latest"),
                None,
                "my-host.io/app:latest",
            ),
        ),
        // A bare "host:port" with no path is a Docker Hub repository with a tag (as docker reads it).
        (
            "localhost:5000".into(),
            ok(
                "index.docker.io",
                "library/localhost",
                Some("5000"),
                None,
                "index.docker.io/library/localhost:5000",
            ),
        ),
        // Tags.
        (
            "x.io/a:V1.0_RC-2".into(),
            ok("x.io", "a", Some("V1.0_RC-2"), None, "x.io/a:V1.0_RC-2"),
        ),
        (
            "x.io/a:_x".into(),
            ok("x.io", "a", Some("_x"), None, "x.io/a:_x"),
        ),
        (
            format!("x.io/a:{long_tag}"),
            ok(
                "x.io",
                "a",
                Some(leak(long_tag.clone())),
                None,
                &format!("x.io/a:{long_tag}"),
            ),
        ),
        // Digests.
        (
            format!("redis@{D256}"),
            ok(
                "index.docker.io",
                "library/redis",
                None,
                Some(D256),
                &format!("index.docker.io/library/redis@{D256}"),
            ),
        ),
        (
            format!("redis:7@{D256}"),
            ok(
                "index.docker.io",
                "library/redis",
                Some("7"),
                Some(D256),
                &format!("index.docker.io/library/redis:7@{D256}"),
            ),
        ),
        (
            format!("localhost:5000/a/b@{D256}"),
            ok(
                "localhost:5000",
                "a/b",
                None,
                Some(D256),
                &format!("localhost:5000/a/b@{D256}"),
            ),
        ),
        (
            format!("x.io/a@{D512}"),
            ok("x.io", "a", None, Some(D512), &format!("x.io/a@{D512}")),
        ),
        // Path component separators.
        (
            "x.io/a.b_c__d-e---f".into(),
            ok(
                "x.io",
                "a.b_c__d-e---f",
                Some("latest"),
                None,
                "x.io/a.b_c__d-e---f:latest",
            ),
        ),
        (
            "a".into(),
            ok(
                "index.docker.io",
                "library/a",
                Some("latest"),
                None,
                "index.docker.io/library/a:latest",
            ),
        ),
        (
            long_repo.clone(),
            ok(
                "x.io",
                leak("a".repeat(255)),
                Some("latest"),
                None,
                &format!("{long_repo}:latest"),
            ),
        ),
        // ---- errors ----
        ("".into(), None),
        ("Redis".into(), None),
        ("library/Redis".into(), None),
        ("Foo/bar".into(), None),
        ("x.io/Upper/case".into(), None),
        ("redis:-x".into(), None),
        ("redis:.x".into(), None),
        (format!("redis:{too_long_tag}"), None),
        ("redis:".into(), None),
        ("redis:a+b".into(), None),
        ("a//b".into(), None),
        ("a/".into(), None),
        ("/a".into(), None),
        ("x.io/".into(), None),
        ("x.io//a".into(), None),
        ("redis@".into(), None),
        ("redis@sha256:abc".into(), None),
        (format!("redis@{}", D256.to_uppercase()), None),
        (format!("redis@md5:{}", "0".repeat(32)), None),
        (format!("@{D256}"), None),
        (format!("redis@{D256}@{D256}"), None),
        ("red is".into(), None),
        (" redis".into(), None),
        ("redis\n".into(), None),
        ("redis\t:1".into(), None),
        ("rédis".into(), None),
        ("x.io/a__-b".into(), None),
        ("x.io/a..b".into(), None),
        ("x.io/-a".into(), None),
        ("x.io/a_".into(), None),
        ("x.io/a___b".into(), None),
        ("host:/a".into(), None),
        ("host:99999/a".into(), None),
        ("host:0/a".into(), None),
        ("host:5x/a".into(), None),
        ("-host.io/a".into(), None),
        ("host-.io/a".into(), None),
        ("ho_st.io/a".into(), None),
        ("host..io/a".into(), None),
        (".host.io/a".into(), None),
        ("[::1/a".into(), None),
        ("[zz::1]:5000/a".into(), None),
        (":tag".into(), None),
        (too_long_repo, None),
        ("x".repeat(5000), None),
    ]
}

/// Test expectations built at run time need `'static` strings; the leak is test-only and tiny.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn reference_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "table has {} cases", cases.len());
    let mut failures = Vec::new();
    for (input, want) in &cases {
        let got = Reference::parse(input);
        match (want, got) {
            (Some(w), Ok(r)) => {
                let digest = r.digest().map(|d| d.to_string());
                let actual = (
                    r.registry(),
                    r.repository(),
                    r.tag(),
                    digest.as_deref(),
                    r.to_string(),
                );
                let expected = (w.registry, w.repository, w.tag, w.digest, w.display.clone());
                if actual != expected {
                    failures.push(format!("{input:?}: got {actual:?}, want {expected:?}"));
                }
                if r.original() != input {
                    failures.push(format!("{input:?}: original() is {:?}", r.original()));
                }
                if r.repo_name() != format!("{}/{}", w.registry, w.repository) {
                    failures.push(format!("{input:?}: repo_name() is {:?}", r.repo_name()));
                }
                // The full form must itself parse back to the same parts.
                match Reference::parse(&r.to_string()) {
                    Ok(again) if again.to_string() == r.to_string() => {}
                    other => {
                        failures.push(format!("{input:?}: Display does not round-trip: {other:?}"))
                    }
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{input:?}: unexpected error {e}")),
            (None, Ok(r)) => failures.push(format!("{input:?}: expected an error, got {r}")),
            (None, Err(e)) => {
                let shown: String = input.chars().take(300).collect();
                if e.text != shown {
                    failures.push(format!("{input:?}: error names {:?}", e.text));
                }
                let msg = e.to_string();
                if !msg.contains(&format!("{shown:?}")) {
                    failures.push(format!(
                        "{input:?}: message does not quote the input: {msg}"
                    ));
                }
                if e.reason.is_empty() {
                    failures.push(format!("{input:?}: error without a reason"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn from_str_matches_parse() {
    let r: Reference = "ghcr.io/a/b:1".parse().expect("valid reference");
    assert_eq!(
        r,
        Reference::parse("ghcr.io/a/b:1").expect("valid reference")
    );
    assert!("Bad".parse::<Reference>().is_err());
}

#[test]
fn with_digest_and_with_tag_rewrite_original() {
    let r = Reference::parse("redis:7").expect("valid reference");
    let d = D256.parse().expect("valid digest");
    let pinned = r.with_digest(&d);
    assert_eq!(pinned.tag(), None);
    assert_eq!(
        pinned.original(),
        format!("index.docker.io/library/redis@{D256}")
    );
    let retagged = pinned.with_tag("8");
    assert_eq!(retagged.digest(), None);
    assert_eq!(retagged.original(), "index.docker.io/library/redis:8");
    let moved = r.with_repository("mirror/redis");
    assert_eq!(moved.to_string(), "index.docker.io/mirror/redis:7");
}

#[test]
fn equality_includes_original_text() {
    let a = Reference::parse("redis").expect("valid reference");
    let b = Reference::parse("docker.io/library/redis:latest").expect("valid reference");
    assert_eq!(a.to_string(), b.to_string());
    assert_ne!(a, b);
    assert!(a.is_docker_hub());
}
