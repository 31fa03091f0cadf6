//! Credentials from docker credential helpers (`credHelpers`, `credsStore`):
//! running `docker-credential-<name> get` with a time and output limit.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{AuthError, Credential, Env, normalize_host};
use crate::reference::DOCKER_HUB;

/// Longest a credential helper may run before it is killed.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes read from a credential helper's stdout; its answer is a few hundred.
pub const HELPER_MAX_OUTPUT: usize = 1024 * 1024;

/// What the docker config uses as the server address for Docker Hub.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Most bytes of a helper's stderr kept for an error message.
const HELPER_MAX_STDERR: usize = 64 * 1024;

/// Asks the `credHelpers` helper for `want`, then the `credsStore` one; `None`
/// when neither is configured or has credentials, so `auths` is consulted next.
pub(super) fn from_helpers(
    cred_helpers: &BTreeMap<String, String>,
    creds_store: Option<&str>,
    want: &str,
    env: &Env,
    path: &Path,
    searched: &mut Vec<String>,
) -> Result<Option<(Credential, String)>, AuthError> {
    let shown = path.display().to_string();
    if let Some((key, name)) = cred_helpers.iter().find(|(k, _)| normalize_host(k) == want) {
        let helper = helper_program(name);
        match run_helper(name, want, env, path)? {
            Some(c) => {
                return Ok(Some((
                    c,
                    format!("docker config {shown} (credHelpers {key:?}: {helper})"),
                )));
            }
            None => searched.push(format!(
                "docker config {shown} credHelpers {key:?}: {helper} has no credentials"
            )),
        }
    } else {
        searched.push(format!(
            "docker config {shown} credHelpers: none for {want}"
        ));
    }

    if let Some(name) = creds_store.filter(|s| !s.is_empty()) {
        let helper = helper_program(name);
        match run_helper(name, want, env, path)? {
            Some(c) => {
                return Ok(Some((
                    c,
                    format!("docker config {shown} (credsStore: {helper})"),
                )));
            }
            None => searched.push(format!(
                "docker config {shown} credsStore: {helper} has no credentials"
            )),
        }
    }

    Ok(None)
}

fn helper_program(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// What a credential helper prints for `get`.
#[derive(Deserialize)]
struct HelperReply {
    #[serde(default, rename = "Username")]
    username: String,
    #[serde(default, rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-<name> get` for `host`; `None` when it has no credentials.
fn run_helper(
    name: &str,
    host: &str,
    env: &Env,
    config: &Path,
) -> Result<Option<Credential>, AuthError> {
    let helper = helper_program(name);
    let fail = |reason: String| AuthError::Helper {
        helper: helper.clone(),
        host: host.to_owned(),
        config: config.to_owned(),
        reason,
    };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(fail("helper name must be a plain word".into()));
    }
    let path_var = env.vars.get("PATH").map(String::as_str).unwrap_or_default();
    let program = std::env::split_paths(path_var)
        .map(|dir| dir.join(&helper))
        .find(|p| is_executable(p))
        .ok_or_else(|| fail("not found on PATH".into()))?;
    // Docker asks about Docker Hub by its historical server address.
    let server = if host == DOCKER_HUB {
        DOCKER_HUB_SERVER
    } else {
        host
    };

    let mut cmd = Command::new(&program);
    cmd.arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PATH", path_var);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", program.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = Reader::start(child.stdout.take(), HELPER_MAX_OUTPUT);
    let stderr = Reader::start(child.stderr.take(), HELPER_MAX_STDERR);

    let deadline = Instant::now() + env.helper_timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| fail(format!("cannot wait for it: {e}")))?
        {
            break status;
        }
        let flooded = stdout
            .poll()
            .is_some_and(|out| out.len() > HELPER_MAX_OUTPUT);
        if flooded || Instant::now() >= deadline {
            // The reader threads are left to end when the pipes close.
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(if flooded {
                format!("wrote more than {HELPER_MAX_OUTPUT} bytes")
            } else {
                format!("did not answer within {:?}", env.helper_timeout)
            }));
        }
        thread::sleep(Duration::from_millis(10));
    };
    let out = stdout.finish(deadline).map_err(|r| fail(r.into()))?;
    let err = stderr.finish(deadline).unwrap_or_default();
    if out.len() > HELPER_MAX_OUTPUT {
        return Err(fail(format!("wrote more than {HELPER_MAX_OUTPUT} bytes")));
    }
    if !status.success() {
        let said = String::from_utf8_lossy(if err.is_empty() { &out } else { &err });
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let said: String = said.trim().chars().take(300).collect();
        return Err(fail(format!("exited with {status}: {said}")));
    }
    let reply: HelperReply = serde_json::from_slice(&out).map_err(|e| {
        // Not echoing the output: it may hold the secret.
        fail(format!("answer is not the expected JSON: {e}"))
    })?;
    if reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if reply.username == "<token>" {
        Credential::IdentityToken(reply.secret)
    } else {
        Credential::Basic {
            username: reply.username,
            password: reply.secret,
        }
    }))
}

/// A child's output pipe, read on a thread (at most `limit + 1` bytes) so a
/// chatty child cannot block us and a silent one cannot hang us.
struct Reader {
    handle: Option<thread::JoinHandle<io::Result<Vec<u8>>>>,
    done: Option<Result<Vec<u8>, &'static str>>,
}

impl Reader {
    fn start(source: Option<impl Read + Send + 'static>, limit: usize) -> Reader {
        let handle = source.map(|source| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                source.take(limit as u64 + 1).read_to_end(&mut buf)?;
                Ok(buf)
            })
        });
        let done = if handle.is_none() {
            Some(Ok(Vec::new()))
        } else {
            None
        };
        Reader { handle, done }
    }

    /// The bytes read, once the thread has finished; never blocks.
    fn poll(&mut self) -> Option<&[u8]> {
        if self.done.is_none() && self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            self.done = self.handle.take().map(|h| match h.join() {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(_)) => Err("its output could not be read"),
                Err(_) => Err("reading its output panicked"),
            });
        }
        match &self.done {
            Some(Ok(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// Waits for the thread until `deadline` (a grandchild may hold the pipe open).
    fn finish(mut self, deadline: Instant) -> Result<Vec<u8>, &'static str> {
        loop {
            self.poll();
            if let Some(done) = self.done.take() {
                return done;
            }
            if Instant::now() >= deadline {
                return Err("kept its output open past the time limit");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::{Duration, Instant};

    use crate::registry::auth::{AuthError, Credential, resolve};

    use super::super::testkit::{Fixture, b64, basic, no_flags};

    #[cfg(unix)]
    #[test]
    fn cred_helper_gets_the_host_on_stdin() {
        let fx = Fixture::new(
            r#"{"credHelpers":{"ecr.example.io":"test"},"auths":{"ecr.example.io":{"username":"no","password":"no"}}}"#,
        );
        // Answers with the host it was asked about as the user name.
        fx.helper(
            "test",
            r#"[ "$1" = get ] || exit 3; read -r host; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3cret"}' "$host" "$host""#,
        );
        let r = resolve("ECR.example.io", &no_flags(), &fx.env(&[])).expect("resolve");
        assert_eq!(r.credential, basic("u-ecr.example.io", "s3cret"));
        assert!(
            r.source.contains("credHelpers") && r.source.contains("docker-credential-test"),
            "{}",
            r.source
        );
    }

    #[cfg(unix)]
    #[test]
    fn creds_store_is_the_default_and_hub_is_asked_by_its_v1_url() {
        let fx =
            Fixture::new(r#"{"credsStore":"store","auths":{"https://index.docker.io/v1/":{}}}"#);
        fx.helper(
            "store",
            r#"read -r host; if [ "$host" = "https://index.docker.io/v1/" ]; then echo '{"Username":"<token>","Secret":"idtok"}'; else echo 'credentials not found in native keychain'; exit 1; fi"#,
        );
        let env = fx.env(&[]);
        let r = resolve("docker.io", &no_flags(), &env).expect("hub");
        assert_eq!(r.credential, Credential::IdentityToken("idtok".into()));
        assert!(r.source.contains("credsStore"), "{}", r.source);
        let r = resolve("other.io", &no_flags(), &env).expect("other");
        assert_eq!(r.credential, Credential::Anonymous);
        assert!(
            r.searched.iter().any(|s| s.contains("has no credentials")),
            "{:?}",
            r.searched
        );
    }

    #[cfg(unix)]
    #[test]
    fn helper_not_found_falls_through_to_auths() {
        let fx = Fixture::new(&format!(
            r#"{{"credHelpers":{{"x.io":"nf"}},"auths":{{"x.io":{{"auth":"{}"}}}}}}"#,
            b64("fileuser:filepass")
        ));
        fx.helper(
            "nf",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        let r = resolve("x.io", &no_flags(), &fx.env(&[])).expect("resolve");
        assert_eq!(r.credential, basic("fileuser", "filepass"));
    }

    #[cfg(unix)]
    #[test]
    fn helper_failures_are_errors_naming_the_helper() {
        let fx = Fixture::new(
            r#"{"credHelpers":{"fail.io":"fail","junk.io":"junk","hang.io":"hang","flood.io":"flood","gone.io":"gone"}}"#,
        );
        fx.helper("fail", "echo 'keychain locked' >&2; exit 2");
        fx.helper("junk", "echo 'password=hunter2'");
        fx.helper("hang", "exec sleep 5");
        fx.helper("flood", "exec head -c 3000000 /dev/zero");
        let env = fx.env(&[]).with_helper_timeout(Duration::from_millis(500));
        let expect = [
            ("fail.io", "docker-credential-fail", "keychain locked"),
            ("junk.io", "docker-credential-junk", "not the expected JSON"),
            ("hang.io", "docker-credential-hang", "did not answer"),
            ("flood.io", "docker-credential-flood", "more than"),
            ("gone.io", "docker-credential-gone", "not found on PATH"),
        ];
        for (host, helper, why) in expect {
            let started = Instant::now();
            let e = resolve(host, &no_flags(), &env).expect_err(host);
            let msg = e.to_string();
            assert!(matches!(e, AuthError::Helper { .. }), "{msg}");
            assert!(
                msg.contains(helper) && msg.contains(why) && msg.contains(host),
                "{msg}"
            );
            assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{host} took {:?}",
                started.elapsed()
            );
        }
    }
}
