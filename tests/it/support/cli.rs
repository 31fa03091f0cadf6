//! Running the real `airlift` binary the way a user does, isolated from the host's
//! configuration, and checking how it exited with its whole output in the failure message.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the real `airlift` binary with a private HOME (no docker config of the host leaks in).
pub fn airlift(home: &Path, args: &[&str]) -> Output {
    airlift_cmd(home).args(args).output().expect("run airlift")
}

/// The `airlift` binary as a [`Command`] with a private HOME, for callers that add env (such as
/// `SOURCE_DATE_EPOCH` or `AIRLIFT_REGISTRY_*`) or spawn it. Registry credentials of the host
/// (every `AIRLIFT_REGISTRY_*` variable, `REGISTRY_AUTH_FILE`) never leak in.
pub fn airlift_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlift"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AIRLIFT_REGISTRY_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE");
    cmd
}

/// stdout followed by stderr, lossily decoded: what a user saw, for message checks.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Panics with airlift's output unless it exited 0; returns stdout.
pub fn expect_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "airlift failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with airlift's output unless it exited with `code`; returns stdout + stderr for
/// message checks.
pub fn expect_code(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    output_text(out)
}

/// Panics with airlift's output unless it exited 1 (a plain failure); returns stderr alone, for
/// checks that the message is where a user's terminal shows errors.
pub fn expect_failed(out: &Output) -> String {
    expect_code(out, 1);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path as `&str` (test paths are always UTF-8 temp paths).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs an independent tool (GNU tar, skopeo, openssl, sha256sum, …) that must succeed; panics
/// with the command line and the tool's output otherwise. Returns stdout.
pub fn run_tool(cmd: &mut Command) -> Vec<u8> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().unwrap_or_else(|e| panic!("run {line}: {e}"));
    assert!(
        out.status.success(),
        "{line} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `airlift keygen --out home/NAME`; returns (private key, public key) paths.
pub fn keygen(home: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = home.join(name);
    expect_ok(&airlift(home, &["keygen", "--out", s(&base)]));
    (base.with_extension("key"), base.with_extension("pub"))
}
