//! Where registry credentials come from, and where we looked when none worked.
//!
//! # Precedence
//!
//! For each registry host contacted, [`resolve`] takes the first of:
//!
//! 0. `--registry-anon`: forces anonymous access for every registry; it wins
//!    over everything else because it is the user saying "send nothing".
//! 1. Environment groups `AIRLIFT_REGISTRY_HOSTNAME[_<suffix>]` with
//!    `..._USERNAME`/`..._PASSWORD` or `..._TOKEN` (a bearer token) of the same
//!    suffix, as imgpkg's `IMGPKG_REGISTRY_*`. `HOSTNAME` may list several hosts
//!    separated by commas. Groups are tried unsuffixed first, then by suffix
//!    (`_2` before `_10`); the first group naming the host wins.
//! 2. Flags `--registry-username`/`--registry-password` or `--registry-token`,
//!    which apply to every registry contacted.
//! 3. The docker config, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`:
//!    `credHelpers` for the host, then `credsStore`, then `auths`.
//! 4. Otherwise anonymous (`source` "none found").
//!
//! Environment groups beat flags on purpose: a group names its host, a flag
//! does not, and the more specific setting should win when a copy touches two
//! registries (say, a public source and a private destination).
//!
//! # Host matching
//!
//! Hosts are compared as `host[:port]`, case-insensitively, after dropping an
//! `http://`/`https://` prefix and any path (`https://reg.io/v1/` is `reg.io`).
//! A port must match exactly (`reg.io` is not `reg.io:443`). `docker.io`,
//! `index.docker.io`, `registry-1.docker.io` and `registry.hub.docker.com` all
//! mean Docker Hub.
//!
//! # Deliberate choices
//!
//! - A malformed environment group (say `USERNAME_1` without `PASSWORD_1`, or
//!   without `HOSTNAME_1`) is an error for every host, so a typo is not silently
//!   turned into an anonymous request and a confusing 401.
//! - A credential helper that answers "credentials not found" makes the search
//!   go on (to `credsStore`, then `auths`); a helper that is configured but not on
//!   `PATH`, fails, hangs or floods its output is an error naming the helper, as
//!   go-containerregistry's default keychain does.
//! - Lookup is synchronous (it may run a helper process for up to
//!   [`HELPER_TIMEOUT`]); call it from `spawn_blocking` in async code.

mod docker_config;
mod env;
mod flags;
mod helpers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::secrets::RegistryAuth;

use crate::reference::DOCKER_HUB;

pub use docker_config::DOCKER_CONFIG_MAX;
pub use env::ENV_PREFIX;
pub use helpers::{HELPER_MAX_OUTPUT, HELPER_TIMEOUT};

/// A credential to present to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Send nothing.
    Anonymous,
    /// HTTP basic credentials (exchanged for a token when the registry asks).
    Basic {
        /// The user name.
        username: String,
        /// The password or access token used as a password.
        password: String,
    },
    /// A registry bearer token, sent as is.
    Bearer(String),
    /// An OAuth2 refresh token (docker's `identitytoken`, or a helper's `<token>` user).
    IdentityToken(String),
}

impl Credential {
    /// The form `oci-client` takes.
    ///
    /// `oci-client` 0.18 cannot do the OAuth2 refresh-token grant, so an
    /// [`Credential::IdentityToken`] is offered as basic credentials with user
    /// `<token>` (best effort: registries that accept a refresh token as a
    /// password, such as Azure's, work; others answer 401).
    pub fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credential::Bearer(t) => RegistryAuth::Bearer(t.clone()),
            Credential::IdentityToken(t) => RegistryAuth::Basic("<token>".into(), t.clone()),
        }
    }

    /// Whether anything is sent at all.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credential::Anonymous)
    }
}

impl From<&Credential> for RegistryAuth {
    fn from(c: &Credential) -> RegistryAuth {
        c.to_registry_auth()
    }
}

impl fmt::Debug for Credential {
    /// Secrets are never printed; only their kind and the user name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => write!(f, "Anonymous"),
            Credential::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credential::Bearer(_) => write!(f, "Bearer(<redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// The credential flags given on the command line; they apply to every registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthOptions {
    /// `--registry-username`.
    pub username: Option<String>,
    /// `--registry-password`.
    pub password: Option<String>,
    /// `--registry-token`: a bearer token.
    pub token: Option<String>,
    /// `--registry-anon`: send no credentials anywhere.
    pub anonymous: bool,
}

impl fmt::Debug for AuthOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// A snapshot of the environment, so lookups are testable without touching the process env.
#[derive(Clone)]
pub struct Env {
    vars: BTreeMap<String, String>,
    docker_config_dir: Option<PathBuf>,
    helper_timeout: Duration,
}

impl Env {
    /// Reads the process environment: variables, `PATH`, and the docker config
    /// directory (`$DOCKER_CONFIG`, else `$HOME/.docker`). Non-UTF-8 variables are skipped.
    pub fn from_process() -> Env {
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let docker_config_dir = match vars.get("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(d) => Some(PathBuf::from(d)),
            None => vars
                .get("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(h).join(".docker")),
        };
        Env {
            vars,
            docker_config_dir,
            helper_timeout: HELPER_TIMEOUT,
        }
    }

    /// An explicit environment: `vars` (its `PATH` entry is where credential helpers
    /// are looked for) and the docker config directory, `None` for no docker config.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        docker_config_dir: Option<PathBuf>,
    ) -> Env {
        Env {
            vars: vars.into_iter().collect(),
            docker_config_dir,
            helper_timeout: HELPER_TIMEOUT,
        }
    }

    /// The same environment with another helper time limit (tests use a short one).
    pub fn with_helper_timeout(mut self, timeout: Duration) -> Env {
        self.helper_timeout = timeout;
        self
    }

    /// The docker config file this environment points at, if any.
    pub fn docker_config_path(&self) -> Option<PathBuf> {
        self.docker_config_dir
            .as_ref()
            .map(|d| d.join("config.json"))
    }
}

impl fmt::Debug for Env {
    /// Variable values may be secrets: only the names of airlift's own are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&String> = self
            .vars
            .keys()
            .filter(|k| k.starts_with(ENV_PREFIX))
            .collect();
        f.debug_struct("Env")
            .field("vars", &self.vars.len())
            .field("airlift_vars", &names)
            .field("docker_config_dir", &self.docker_config_dir)
            .field("helper_timeout", &self.helper_timeout)
            .finish()
    }
}

/// The credential chosen for a host, where it came from and where else we looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What to send.
    pub credential: Credential,
    /// Where it came from, e.g. `env AIRLIFT_REGISTRY_*_1` or `none found`.
    pub source: String,
    /// Every place consulted, in order, for a 401 message.
    pub searched: Vec<String>,
}

impl Resolved {
    /// One line for an authentication failure: what was used and where we looked.
    pub fn explain(&self) -> String {
        format!(
            "credentials from {}; looked at: {}",
            self.source,
            self.searched.join("; ")
        )
    }
}

/// Why credentials could not be determined (a configuration error, not "none found").
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An `AIRLIFT_REGISTRY_*` group is incomplete or contradictory.
    #[error("environment group {group}: {reason}")]
    EnvGroup {
        /// The group, e.g. `AIRLIFT_REGISTRY_*_1`.
        group: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credential flags contradict each other or are incomplete.
    #[error("registry credential flags: {0}")]
    Flags(String),
    /// The docker config exists but cannot be read or parsed.
    #[error("docker config {}: {reason}", path.display())]
    DockerConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A docker credential helper is missing, failed, hung or misbehaved.
    #[error("credential helper {helper} (for {host}, configured in {}): {reason}", config.display())]
    Helper {
        /// The helper program, `docker-credential-<name>`.
        helper: String,
        /// The registry asked about.
        host: String,
        /// The config file naming the helper.
        config: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Normalises a registry host for comparison: no scheme, no path, lower case,
/// Docker Hub's aliases folded to `index.docker.io`.
pub fn normalize_host(text: &str) -> String {
    let s = text.trim();
    let lower = s.to_ascii_lowercase();
    let s = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        s
    };
    let s = s.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match s.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => s,
    }
}

/// Finds the credential for `host` (`host[:port]`, as in an image reference).
pub fn resolve(host: &str, opts: &AuthOptions, env: &Env) -> Result<Resolved, AuthError> {
    let want = normalize_host(host);
    // Check everything the user configured up front, so a mistake is reported
    // even when an earlier source would have answered.
    let flag = flags::flag_credential(opts)?;
    let groups = env::env_groups(&env.vars)?;
    let mut searched = Vec::new();

    if opts.anonymous {
        searched.push("--registry-anon (forces anonymous access)".to_owned());
        return Ok(Resolved {
            credential: Credential::Anonymous,
            source: "--registry-anon".to_owned(),
            searched,
        });
    }

    for g in &groups {
        if g.hosts.iter().any(|h| normalize_host(h) == want) {
            let label = g.label();
            searched.push(format!("env {label} (matches {want})"));
            return Ok(Resolved {
                credential: g.credential.clone(),
                source: format!("env {label}"),
                searched,
            });
        }
    }
    searched.push(format!(
        "env {ENV_PREFIX}HOSTNAME[_*]: {} group(s), none for {want}",
        groups.len()
    ));

    if let Some((credential, source)) = flag {
        searched.push(format!("flag {source}"));
        return Ok(Resolved {
            credential,
            source: source.to_owned(),
            searched,
        });
    }
    searched.push("flags --registry-username/--registry-token: not given".to_owned());

    if let Some((credential, source)) =
        docker_config::from_docker_config(&want, env, &mut searched)?
    {
        return Ok(Resolved {
            credential,
            source,
            searched,
        });
    }
    Ok(Resolved {
        credential: Credential::Anonymous,
        source: "none found".to_owned(),
        searched,
    })
}

/// An option that is set to something, as flags and config entries treat "".
fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Builders shared by the tests of every credential source.
#[cfg(test)]
mod testkit {
    use base64::Engine as _;

    use super::{AuthOptions, Credential, Env};

    pub(super) fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    pub(super) fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        }
    }

    pub(super) fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    pub(super) fn no_flags() -> AuthOptions {
        AuthOptions::default()
    }

    pub(super) fn user_flags() -> AuthOptions {
        AuthOptions {
            username: Some("flaguser".into()),
            password: Some("flagpass".into()),
            ..AuthOptions::default()
        }
    }

    /// A docker config dir holding `config` and a `bin` dir for helper scripts.
    pub(super) struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        pub(super) fn new(config: &str) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("config.json"), config).expect("write config");
            std::fs::create_dir(dir.path().join("bin")).expect("bin dir");
            Fixture { dir }
        }

        /// Writes `docker-credential-<name>` running `body` under /bin/sh.
        #[cfg(unix)]
        pub(super) fn helper(&self, name: &str, body: &str) {
            use std::os::unix::fs::PermissionsExt;
            let path = self
                .dir
                .path()
                .join("bin")
                .join(format!("docker-credential-{name}"));
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write helper");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod helper");
        }

        pub(super) fn env(&self, extra: &[(&str, &str)]) -> Env {
            let bin = self.dir.path().join("bin");
            let mut v = vars(extra);
            v.push(("PATH".into(), format!("{}:/usr/bin:/bin", bin.display())));
            Env::from_vars(v, Some(self.dir.path().to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    #[test]
    fn nothing_configured_is_anonymous_with_a_search_trail() {
        let env = Env::from_vars(vars(&[]), None);
        let r = resolve("reg.io", &no_flags(), &env).expect("resolve");
        assert_eq!(r.credential, Credential::Anonymous);
        assert_eq!(r.source, "none found");
        assert_eq!(r.searched.len(), 3, "{:?}", r.searched);
        assert!(r.explain().contains("none for reg.io"), "{}", r.explain());
    }

    #[test]
    fn env_beats_flags_and_flags_beat_docker_config() {
        let fx = Fixture::new(&format!(
            r#"{{"auths":{{"x.io":{{"auth":"{}"}},"y.io":{{"auth":"{}"}}}}}}"#,
            b64("cfguser:cfgpass"),
            b64("cfguser:cfgpass")
        ));
        let env = fx.env(&[
            ("AIRLIFT_REGISTRY_HOSTNAME", "x.io"),
            ("AIRLIFT_REGISTRY_TOKEN", "envtok"),
        ]);
        let r = resolve("x.io", &user_flags(), &env).expect("x");
        assert_eq!(r.credential, Credential::Bearer("envtok".into()));
        let r = resolve("y.io", &user_flags(), &env).expect("y");
        assert_eq!(r.credential, basic("flaguser", "flagpass"));
        assert_eq!(r.source, "--registry-username/--registry-password");
        let r = resolve("y.io", &no_flags(), &env).expect("y no flags");
        assert_eq!(r.credential, basic("cfguser", "cfgpass"));
        let tok = AuthOptions {
            token: Some("flagtok".into()),
            ..AuthOptions::default()
        };
        let r = resolve("y.io", &tok, &env).expect("y token");
        assert_eq!(
            (r.credential, r.source.as_str()),
            (Credential::Bearer("flagtok".into()), "--registry-token")
        );
    }

    #[test]
    fn anon_flag_wins_over_everything() {
        let fx = Fixture::new(&format!(
            r#"{{"auths":{{"x.io":{{"auth":"{}"}}}}}}"#,
            b64("u:p")
        ));
        let env = fx.env(&[
            ("AIRLIFT_REGISTRY_HOSTNAME", "x.io"),
            ("AIRLIFT_REGISTRY_TOKEN", "t"),
        ]);
        let anon = AuthOptions {
            anonymous: true,
            ..AuthOptions::default()
        };
        let r = resolve("x.io", &anon, &env).expect("resolve");
        assert_eq!(
            (r.credential, r.source.as_str()),
            (Credential::Anonymous, "--registry-anon")
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            basic("alice", "pw-secret"),
            Credential::Bearer("tok-secret".into()),
            Credential::IdentityToken("id-secret".into()),
            AuthOptions {
                username: Some("alice".into()),
                password: Some("pw-secret".into()),
                token: Some("tok-secret".into()),
                anonymous: false
            },
        );
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["pw-secret", "tok-secret", "id-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let env = Env::from_vars(vars(&[("AIRLIFT_REGISTRY_PASSWORD", "env-secret")]), None);
        assert!(!format!("{env:?}").contains("env-secret"));
    }

    #[test]
    fn conversion_to_oci_client_auth() {
        assert!(matches!(
            Credential::Anonymous.to_registry_auth(),
            RegistryAuth::Anonymous
        ));
        match RegistryAuth::from(&basic("u", "p")) {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("u", "p")),
            other => panic!("{other:?}"),
        }
        match Credential::Bearer("t".into()).to_registry_auth() {
            RegistryAuth::Bearer(t) => assert_eq!(t, "t"),
            other => panic!("{other:?}"),
        }
        match Credential::IdentityToken("r".into()).to_registry_auth() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("<token>", "r")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_normalisation() {
        let cases = [
            ("https://Reg.IO:5000/v2/", "reg.io:5000"),
            ("HTTP://reg.io", "reg.io"),
            (" reg.io ", "reg.io"),
            ("https://index.docker.io/v1/", "index.docker.io"),
            ("registry.hub.docker.com", "index.docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_host(input), want, "{input}");
        }
    }
}
