//! Bearer-token auth end to end: the real registry (CNCF distribution 2.8, `auth: token`)
//! sends clients to the harness's own token server (tests/it/support/token.rs), which checks
//! basic credentials and issues ES256 JWTs the registry verifies against its
//! `rootcertbundle`. skopeo proves the set-up works with an independent client; then
//! `airlift copy` pushes into it and `airlift export` pulls from it with credentials from the
//! flags, from the `AIRLIFT_REGISTRY_*` env group, and as a pre-issued `--registry-token`.

use crate::support;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::s;
use crate::support::{ImageSpec, LayerSpec, Registry, WrittenImage, expect_code, expect_ok};

/// `airlift ARGS` with a private HOME and no `AIRLIFT_REGISTRY_*` from the host.
fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run airlift")
}

/// Writes a small image into a fresh layout and pushes it to `reg` as `repo_ref` with skopeo.
fn push_image(reg: &Registry, seed: u64, repo_ref: &str) -> WrittenImage {
    let layout = tempfile::tempdir().expect("layout dir");
    let img = support::write_oci_image(
        layout.path(),
        "v1",
        &ImageSpec::new(
            seed,
            vec![
                LayerSpec::new(seed * 10, 96 * 1024),
                LayerSpec::new(seed * 10 + 1, 8 * 1024),
            ],
        ),
    );
    crate::support::skopeo_push(layout.path(), "v1", repo_ref, reg);
    img
}

/// The manifest `skopeo inspect --raw` reads for `reference` from an exported oci-archive.
fn archived_manifest(archive: &Path, reference: &str) -> Vec<u8> {
    crate::support::run_tool(
        Command::new("skopeo")
            .args(["--insecure-policy", "inspect", "--raw"])
            .arg(format!("oci-archive:{}:{reference}", archive.display())),
    )
}

/// Token requests that were answered 200 with exactly this scope.
fn granted(reg: &Registry, scope: &str) -> usize {
    reg.token_server()
        .requests()
        .iter()
        .filter(|r| r.status == 200 && r.scopes.iter().any(|s| s == scope))
        .count()
}

#[test]
fn copy_into_and_export_from_a_token_auth_registry() {
    let tok = Registry::start_token_auth();
    let src = Registry::start_plain();
    let home = tempfile::tempdir().expect("home");
    let (user, pass) = (tok.username().to_owned(), tok.password().to_owned());

    // Without a token the registry challenges with Bearer and names our token server.
    let probe = support::http_get(&tok, "/v2/");
    assert_eq!(probe.status, 401);
    let challenge = probe.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&tok.token_server().realm()),
        "{challenge}"
    );

    // An independent client (skopeo) pushes through the token flow: the set-up is sound.
    let direct = push_image(&tok, 1, "direct/app:v1");
    let raw = support::skopeo_inspect_raw("direct/app:v1", &tok);
    assert_eq!(raw, direct.manifest);
    assert!(granted(&tok, "repository:direct/app:pull,push") > 0);

    // airlift copy INTO the token registry, credentials as flags (they also go to the plain
    // source, which ignores them).
    let app = push_image(&src, 2, "src/app:v1");
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["copy", "-q", "-i", &src.reference("src/app:v1")])
        .args(["--registry-username", &user, "--registry-password", &pass])
        .args(["--to-registry", &tok.reference("flags")]);
    expect_ok(&run(cmd));
    let raw = support::skopeo_inspect_raw("flags/src/app:v1", &tok);
    assert_eq!(support::sha256_digest(&raw), app.manifest_digest);
    assert_eq!(raw, app.manifest);
    assert!(
        granted(&tok, "repository:flags/src/app:pull,push") > 0,
        "airlift never asked for a push token: {:?}",
        tok.token_server().requests()
    );

    // Again with the env group naming only the token registry's host.
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["copy", "-q", "-i", &src.reference("src/app:v1")])
        .args(["--to-registry", &tok.reference("env")])
        .env("AIRLIFT_REGISTRY_HOSTNAME", tok.host())
        .env("AIRLIFT_REGISTRY_USERNAME", &user)
        .env("AIRLIFT_REGISTRY_PASSWORD", &pass);
    expect_ok(&run(cmd));
    let raw = support::skopeo_inspect_raw("env/src/app:v1", &tok);
    assert_eq!(support::sha256_digest(&raw), app.manifest_digest);

    // airlift export FROM the token registry, flags.
    let flags_tar = home.path().join("flags.tar");
    let root = tok.reference("direct/app:v1");
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args([
        "export",
        "-q",
        "--unsigned",
        "-o",
        s(&flags_tar),
        "-i",
        &root,
    ])
    .args(["--registry-username", &user, "--registry-password", &pass]);
    expect_ok(&run(cmd));
    let exported = archived_manifest(&flags_tar, &root);
    assert_eq!(support::sha256_digest(&exported), direct.manifest_digest);
    assert!(granted(&tok, "repository:direct/app:pull") > 0);

    // And with the env group.
    let env_tar = home.path().join("env.tar");
    let root = tok.reference("env/src/app:v1");
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["export", "-q", "--unsigned", "-o", s(&env_tar), "-i", &root])
        .env("AIRLIFT_REGISTRY_HOSTNAME", tok.host())
        .env("AIRLIFT_REGISTRY_USERNAME", &user)
        .env("AIRLIFT_REGISTRY_PASSWORD", &pass);
    expect_ok(&run(cmd));
    let exported = archived_manifest(&env_tar, &root);
    assert_eq!(support::sha256_digest(&exported), app.manifest_digest);

    // Every token went to the right user and audience.
    for r in tok.token_server().requests() {
        assert_eq!(r.service, tok.token_server().service(), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.user.as_deref(), Some(user.as_str()), "{r:?}");
    }
}

#[test]
fn wrong_or_missing_credentials_name_the_registry() {
    let tok = Registry::start_token_auth();
    let src = Registry::start_plain();
    let home = tempfile::tempdir().expect("home");
    push_image(&src, 3, "src/app:v1");
    push_image(&tok, 4, "there/app:v1");
    let auth_failed = format!("authentication failed for {}", tok.host());
    let user = tok.username().to_owned();

    // copy INTO, wrong password in the flags.
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["copy", "-q", "-i", &src.reference("src/app:v1")])
        .args(["--registry-username", &user])
        .args(["--registry-password", "not-the-password"])
        .args(["--to-registry", &tok.reference("x")]);
    let text = expect_code(&run(cmd), 1);
    assert!(text.contains(&auth_failed), "{text}");
    assert!(
        text.contains("--registry-username/--registry-password"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-password"),
        "password leaked: {text}"
    );

    // export FROM, wrong password in the env group.
    let out = home.path().join("x.tar");
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["export", "-q", "--unsigned", "-o", s(&out)])
        .args(["-i", &tok.reference("there/app:v1")])
        .env("AIRLIFT_REGISTRY_HOSTNAME", tok.host())
        .env("AIRLIFT_REGISTRY_USERNAME", &user)
        .env("AIRLIFT_REGISTRY_PASSWORD", "also-wrong");
    let text = expect_code(&run(cmd), 1);
    assert!(text.contains(&auth_failed), "{text}");
    assert!(text.contains("env AIRLIFT_REGISTRY_"), "{text}");
    assert!(!text.contains("also-wrong"), "password leaked: {text}");
    assert!(!out.exists(), "a failed export left {}", out.display());

    // No credentials at all.
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["export", "-q", "--unsigned", "-o", s(&out)])
        .args(["-i", &tok.reference("there/app:v1")]);
    let text = expect_code(&run(cmd), 1);
    assert!(text.contains(&auth_failed), "{text}");
    assert!(text.contains("none found"), "{text}");

    // The token server really refused (and never granted) those requests.
    let requests = tok.token_server().requests();
    assert!(
        requests
            .iter()
            .any(|r| r.status == 401 && r.user.as_deref() == Some(user.as_str())),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.status == 200 && r.scopes.iter().any(|s| s.contains(":x/"))),
        "{requests:?}"
    );
}

#[test]
fn pre_issued_token_pulls_but_cannot_push() {
    let tok = Registry::start_token_auth();
    let src = Registry::start_plain();
    let home = tempfile::tempdir().expect("home");
    let img = push_image(&tok, 5, "held/app:v1");
    push_image(&src, 6, "src/app:v1");
    let server = tok.token_server();

    // The token server itself refuses a wrong password.
    let (status, _) = server.request(server.username(), "wrong", "repository:held/app:pull");
    assert_eq!(status, 401);

    // A pull token, fetched by hand as a CI job would, then handed to airlift.
    let token = server.fetch_token("repository:held/app:pull");
    let before = server.requests().len();
    let out = home.path().join("held.tar");
    let root = tok.reference("held/app:v1");
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["export", "-q", "--unsigned", "-o", s(&out), "-i", &root])
        .args(["--registry-token", &token]);
    expect_ok(&run(cmd));
    let exported = archived_manifest(&out, &root);
    assert_eq!(support::sha256_digest(&exported), img.manifest_digest);
    assert_eq!(
        server.requests().len(),
        before,
        "airlift should use the given token, not ask the token server"
    );

    // A token whose signature was tampered with is refused by the registry: it really
    // verifies the JWT against its rootcertbundle.
    let (signed, sig) = token.rsplit_once('.').expect("JWT has three parts");
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{flipped}{}", &sig[1..]);
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args([
        "export",
        "-q",
        "--unsigned",
        "-o",
        s(&home.path().join("forged.tar")),
    ])
    .args(["-i", &root, "--registry-token", &forged]);
    let text = expect_code(&run(cmd), 1);
    assert!(
        text.contains(&format!("authentication failed for {}", tok.host())),
        "{text}"
    );

    // The same pull-only token cannot push: the registry refuses and airlift says so.
    let mut cmd = support::airlift_cmd(home.path());
    cmd.args(["copy", "-q", "-i", &src.reference("src/app:v1")])
        .args(["--registry-token", &token])
        .args(["--to-registry", &tok.reference("held")]);
    let text = expect_code(&run(cmd), 1);
    assert!(
        text.contains(&format!("authentication failed for {}", tok.host())),
        "{text}"
    );
    assert!(!text.contains(&token), "token leaked: {text}");
}

#[test]
fn der_signatures_become_64_byte_jose() {
    // r with a sign byte (33 bytes), s short (31 bytes): both must land right-aligned.
    let r: Vec<u8> = std::iter::once(0)
        .chain((0..32).map(|i| 0x80 | i))
        .collect();
    let s: Vec<u8> = (1..=31).collect();
    let mut der = vec![0x30, (4 + r.len() + s.len()) as u8, 0x02, r.len() as u8];
    der.extend(&r);
    der.extend([0x02, s.len() as u8]);
    der.extend(&s);
    let jose = support::token::ecdsa_der_to_jose(&der).expect("valid DER");
    assert_eq!(&jose[..32], &r[1..]);
    assert_eq!(jose[32], 0);
    assert_eq!(&jose[33..], &s[..]);
    assert_eq!(
        crate::support::token::ecdsa_der_to_jose(&der[..der.len() - 1]),
        None
    );
}
