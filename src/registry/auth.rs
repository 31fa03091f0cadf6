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

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::reference::DOCKER_HUB;

/// Prefix of the environment variable groups, after imgpkg's `IMGPKG_REGISTRY_`.
pub const ENV_PREFIX: &str = "AIRLIFT_REGISTRY_";

/// Longest a credential helper may run before it is killed.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes read from a credential helper's stdout; its answer is a few hundred.
pub const HELPER_MAX_OUTPUT: usize = 1024 * 1024;

/// Largest docker config file read; real ones are a few kilobytes.
pub const DOCKER_CONFIG_MAX: u64 = 4 * 1024 * 1024;

/// What the docker config uses as the server address for Docker Hub.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Most bytes of a helper's stderr kept for an error message.
const HELPER_MAX_STDERR: usize = 64 * 1024;

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
    let flag = flag_credential(opts)?;
    let groups = env_groups(&env.vars)?;
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

    if let Some((credential, source)) = from_docker_config(&want, env, &mut searched)? {
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

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn flag_credential(opts: &AuthOptions) -> Result<Option<(Credential, &'static str)>, AuthError> {
    let (user, pass, token) = (
        non_empty(&opts.username),
        non_empty(&opts.password),
        non_empty(&opts.token),
    );
    let given = user.is_some() || pass.is_some() || token.is_some();
    if opts.anonymous && given {
        return Err(AuthError::Flags(
            "--registry-anon cannot be combined with --registry-username, --registry-password or --registry-token".into(),
        ));
    }
    match (user, pass, token) {
        (None, None, None) => Ok(None),
        (None, None, Some(t)) => Ok(Some((Credential::Bearer(t.to_owned()), "--registry-token"))),
        (Some(u), Some(p), None) => Ok(Some((
            Credential::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            },
            "--registry-username/--registry-password",
        ))),
        (_, _, Some(_)) => Err(AuthError::Flags(
            "--registry-token cannot be combined with --registry-username/--registry-password"
                .into(),
        )),
        (Some(_), None, None) => Err(AuthError::Flags(
            "--registry-username needs --registry-password".into(),
        )),
        (None, Some(_), None) => Err(AuthError::Flags(
            "--registry-password needs --registry-username".into(),
        )),
    }
}

/// One `AIRLIFT_REGISTRY_*<suffix>` group, validated.
struct EnvGroup {
    suffix: String,
    hosts: Vec<String>,
    credential: Credential,
}

impl EnvGroup {
    fn label(&self) -> String {
        format!("{ENV_PREFIX}*{}", self.suffix)
    }
}

#[derive(Default)]
struct RawGroup {
    hostname: Option<String>,
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

const FIELDS: [&str; 4] = ["HOSTNAME", "USERNAME", "PASSWORD", "TOKEN"];

fn env_groups(vars: &BTreeMap<String, String>) -> Result<Vec<EnvGroup>, AuthError> {
    let mut raw: BTreeMap<String, RawGroup> = BTreeMap::new();
    for (key, value) in vars {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        for field in FIELDS {
            let Some(suffix) = rest.strip_prefix(field) else {
                continue;
            };
            if !(suffix.is_empty() || (suffix.len() > 1 && suffix.starts_with('_'))) {
                continue;
            }
            let g = raw.entry(suffix.to_owned()).or_default();
            let slot = match field {
                "HOSTNAME" => &mut g.hostname,
                "USERNAME" => &mut g.username,
                "PASSWORD" => &mut g.password,
                _ => &mut g.token,
            };
            *slot = Some(value.clone());
        }
    }
    let mut groups = Vec::with_capacity(raw.len());
    for (suffix, g) in raw {
        let group = format!("{ENV_PREFIX}*{suffix}");
        let err = |reason: String| AuthError::EnvGroup {
            group: group.clone(),
            reason,
        };
        let Some(hostname) = g.hostname else {
            return Err(err(format!(
                "{ENV_PREFIX}HOSTNAME{suffix} is not set, so the credentials apply to no registry"
            )));
        };
        let hosts: Vec<String> = hostname
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if hosts.is_empty() {
            return Err(err(format!("{ENV_PREFIX}HOSTNAME{suffix} names no host")));
        }
        let credential = match (g.username, g.password, g.token) {
            (None, None, Some(t)) => Credential::Bearer(t),
            (Some(username), Some(password), None) => Credential::Basic { username, password },
            (_, _, Some(_)) => {
                return Err(err(format!(
                    "{ENV_PREFIX}TOKEN{suffix} cannot be combined with USERNAME/PASSWORD"
                )));
            }
            (None, None, None) => {
                return Err(err(format!(
                    "neither {ENV_PREFIX}USERNAME{suffix}/PASSWORD{suffix} nor {ENV_PREFIX}TOKEN{suffix} is set"
                )));
            }
            (Some(_), None, None) => {
                return Err(err(format!(
                    "{ENV_PREFIX}USERNAME{suffix} is set without {ENV_PREFIX}PASSWORD{suffix}"
                )));
            }
            (None, Some(_), None) => {
                return Err(err(format!(
                    "{ENV_PREFIX}PASSWORD{suffix} is set without {ENV_PREFIX}USERNAME{suffix}"
                )));
            }
        };
        groups.push(EnvGroup {
            suffix,
            hosts,
            credential,
        });
    }
    // Unsuffixed first, then `_2` before `_10`.
    groups.sort_by(|a, b| (a.suffix.len(), &a.suffix).cmp(&(b.suffix.len(), &b.suffix)));
    Ok(groups)
}

/// The parts of a docker `config.json` that concern credentials.
#[derive(Deserialize, Default)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

fn from_docker_config(
    want: &str,
    env: &Env,
    searched: &mut Vec<String>,
) -> Result<Option<(Credential, String)>, AuthError> {
    let Some(path) = env.docker_config_path() else {
        searched.push("docker config: no directory ($DOCKER_CONFIG and $HOME unset)".to_owned());
        return Ok(None);
    };
    let shown = path.display().to_string();
    let bytes = match read_bounded(&path, DOCKER_CONFIG_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            searched.push(format!("docker config {shown}: not found"));
            return Ok(None);
        }
        Err(e) => {
            return Err(AuthError::DockerConfig {
                path,
                reason: e.to_string(),
            });
        }
    };
    let config: DockerConfigFile =
        serde_json::from_slice(&bytes).map_err(|e| AuthError::DockerConfig {
            path: path.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;

    if let Some((key, name)) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_host(k) == want)
    {
        let helper = helper_program(name);
        match run_helper(name, want, env, &path)? {
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

    if let Some(name) = config.creds_store.as_deref().filter(|s| !s.is_empty()) {
        let helper = helper_program(name);
        match run_helper(name, want, env, &path)? {
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

    // An exact key wins over one that only matches once normalised.
    let entry = config
        .auths
        .iter()
        .find(|(k, _)| k.as_str() == want)
        .or_else(|| config.auths.iter().find(|(k, _)| normalize_host(k) == want));
    if let Some((key, entry)) = entry {
        if let Some(c) = entry_credential(key, entry, &path)? {
            return Ok(Some((c, format!("docker config {shown} (auths {key:?})"))));
        }
        searched.push(format!(
            "docker config {shown} auths {key:?}: entry holds no credentials"
        ));
    } else {
        searched.push(format!("docker config {shown} auths: none for {want}"));
    }
    Ok(None)
}

fn entry_credential(
    key: &str,
    entry: &AuthEntry,
    path: &Path,
) -> Result<Option<Credential>, AuthError> {
    if let Some(t) = non_empty(&entry.registrytoken) {
        return Ok(Some(Credential::Bearer(t.to_owned())));
    }
    if let Some(t) = non_empty(&entry.identitytoken) {
        return Ok(Some(Credential::IdentityToken(t.to_owned())));
    }
    if let Some(a) = non_empty(&entry.auth) {
        let bad = |reason: &str| AuthError::DockerConfig {
            path: path.to_owned(),
            reason: format!("auths {key:?}: \"auth\" {reason}"),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| bad("is not valid base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad("does not decode to user:password"))?;
        return Ok(Some(Credential::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    match (non_empty(&entry.username), non_empty(&entry.password)) {
        (Some(u), Some(p)) => Ok(Some(Credential::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        })),
        _ => Ok(None),
    }
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn no_flags() -> AuthOptions {
        AuthOptions::default()
    }

    fn user_flags() -> AuthOptions {
        AuthOptions {
            username: Some("flaguser".into()),
            password: Some("flagpass".into()),
            ..AuthOptions::default()
        }
    }

    /// A docker config dir holding `config` and a `bin` dir for helper scripts.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(config: &str) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("config.json"), config).expect("write config");
            std::fs::create_dir(dir.path().join("bin")).expect("bin dir");
            Fixture { dir }
        }

        /// Writes `docker-credential-<name>` running `body` under /bin/sh.
        #[cfg(unix)]
        fn helper(&self, name: &str, body: &str) {
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

        fn env(&self, extra: &[(&str, &str)]) -> Env {
            let bin = self.dir.path().join("bin");
            let mut v = vars(extra);
            v.push(("PATH".into(), format!("{}:/usr/bin:/bin", bin.display())));
            Env::from_vars(v, Some(self.dir.path().to_owned()))
        }
    }

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
    fn missing_docker_config_file_is_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env::from_vars(vars(&[]), Some(dir.path().join("absent")));
        let r = resolve("reg.io", &no_flags(), &env).expect("resolve");
        assert_eq!(r.credential, Credential::Anonymous);
        assert!(
            r.searched.iter().any(|s| s.ends_with("not found")),
            "{:?}",
            r.searched
        );
    }

    #[test]
    fn env_group_unsuffixed_and_suffixed() {
        let env = Env::from_vars(
            vars(&[
                ("AIRLIFT_REGISTRY_HOSTNAME", "a.io"),
                ("AIRLIFT_REGISTRY_USERNAME", "ua"),
                ("AIRLIFT_REGISTRY_PASSWORD", "pa"),
                ("AIRLIFT_REGISTRY_HOSTNAME_1", "b.io, https://c.io:5000/v2/"),
                ("AIRLIFT_REGISTRY_TOKEN_1", "tok1"),
                ("AIRLIFT_REGISTRY_HOSTNAME_PROD", "D.IO"),
                ("AIRLIFT_REGISTRY_USERNAME_PROD", "ud"),
                ("AIRLIFT_REGISTRY_PASSWORD_PROD", "pd"),
                ("AIRLIFT_REGISTRY_CA_CERT_PATH", "/ignored"),
            ]),
            None,
        );
        let r = resolve("a.io", &no_flags(), &env).expect("a");
        assert_eq!(
            (r.credential, r.source.as_str()),
            (basic("ua", "pa"), "env AIRLIFT_REGISTRY_*")
        );
        let r = resolve("b.io", &no_flags(), &env).expect("b");
        assert_eq!(r.credential, Credential::Bearer("tok1".into()));
        assert_eq!(r.source, "env AIRLIFT_REGISTRY_*_1");
        let r = resolve("c.io:5000", &no_flags(), &env).expect("c");
        assert_eq!(r.credential, Credential::Bearer("tok1".into()));
        // Port must match exactly.
        let r = resolve("c.io", &no_flags(), &env).expect("c no port");
        assert_eq!(r.credential, Credential::Anonymous);
        let r = resolve("d.io", &no_flags(), &env).expect("d");
        assert_eq!(
            (r.credential, r.source.as_str()),
            (basic("ud", "pd"), "env AIRLIFT_REGISTRY_*_PROD")
        );
    }

    #[test]
    fn env_groups_are_tried_in_suffix_order() {
        let env = Env::from_vars(
            vars(&[
                ("AIRLIFT_REGISTRY_HOSTNAME_10", "x.io"),
                ("AIRLIFT_REGISTRY_TOKEN_10", "ten"),
                ("AIRLIFT_REGISTRY_HOSTNAME_2", "x.io"),
                ("AIRLIFT_REGISTRY_TOKEN_2", "two"),
            ]),
            None,
        );
        let r = resolve("x.io", &no_flags(), &env).expect("resolve");
        assert_eq!(r.credential, Credential::Bearer("two".into()));
        assert_eq!(r.source, "env AIRLIFT_REGISTRY_*_2");
    }

    #[test]
    fn malformed_env_groups_are_errors_naming_the_group() {
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("AIRLIFT_REGISTRY_USERNAME_1", "u"),
                ("AIRLIFT_REGISTRY_PASSWORD_1", "p"),
            ],
            &[
                ("AIRLIFT_REGISTRY_HOSTNAME_1", "x.io"),
                ("AIRLIFT_REGISTRY_USERNAME_1", "u"),
            ],
            &[
                ("AIRLIFT_REGISTRY_HOSTNAME_1", "x.io"),
                ("AIRLIFT_REGISTRY_PASSWORD_1", "p"),
            ],
            &[("AIRLIFT_REGISTRY_HOSTNAME_1", "x.io")],
            &[
                ("AIRLIFT_REGISTRY_HOSTNAME_1", "x.io"),
                ("AIRLIFT_REGISTRY_TOKEN_1", "t"),
                ("AIRLIFT_REGISTRY_USERNAME_1", "u"),
            ],
            &[
                ("AIRLIFT_REGISTRY_HOSTNAME_1", " , "),
                ("AIRLIFT_REGISTRY_TOKEN_1", "t"),
            ],
        ];
        for case in cases {
            let env = Env::from_vars(vars(case), None);
            match resolve("other.io", &no_flags(), &env) {
                Err(e @ AuthError::EnvGroup { .. }) => {
                    assert!(e.to_string().contains("AIRLIFT_REGISTRY_*_1"), "{e}");
                }
                other => panic!("{case:?}: expected EnvGroup error, got {other:?}"),
            }
        }
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
    fn contradictory_flags_are_errors() {
        let env = Env::from_vars(vars(&[]), None);
        let bad = [
            AuthOptions {
                username: Some("u".into()),
                ..AuthOptions::default()
            },
            AuthOptions {
                password: Some("p".into()),
                ..AuthOptions::default()
            },
            AuthOptions {
                token: Some("t".into()),
                username: Some("u".into()),
                password: Some("p".into()),
                anonymous: false,
            },
            AuthOptions {
                token: Some("t".into()),
                anonymous: true,
                ..AuthOptions::default()
            },
        ];
        for opts in &bad {
            assert!(
                matches!(resolve("x.io", opts, &env), Err(AuthError::Flags(_))),
                "{opts:?} should be rejected"
            );
        }
    }

    #[test]
    fn docker_config_auth_forms_and_key_normalisation() {
        let fx = Fixture::new(&format!(
            r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{hub}"}},
                "http://plain.io":{{"username":"pu","password":"pp"}},
                "https://withpath.io:8443/v2/x":{{"auth":"{wp}"}},
                "Upper.IO":{{"auth":"{up}"}},
                "ident.io":{{"username":"u","identitytoken":"refresh"}},
                "regtok.io":{{"registrytoken":"bearer"}},
                "empty.io":{{}},
                "colon.io":{{"auth":"{colon}"}}
            }}}}"#,
            hub = b64("hubuser:hubpass"),
            wp = b64("wu:wp"),
            up = b64("uu:up"),
            colon = b64("cu:pa:ss"),
        ));
        let env = fx.env(&[]);
        let get = |host: &str| resolve(host, &no_flags(), &env).expect(host);
        for hub in ["index.docker.io", "docker.io", "registry-1.docker.io"] {
            assert_eq!(get(hub).credential, basic("hubuser", "hubpass"), "{hub}");
        }
        assert_eq!(get("plain.io").credential, basic("pu", "pp"));
        assert_eq!(get("withpath.io:8443").credential, basic("wu", "wp"));
        assert_eq!(get("withpath.io").credential, Credential::Anonymous);
        assert_eq!(get("upper.io").credential, basic("uu", "up"));
        assert_eq!(
            get("ident.io").credential,
            Credential::IdentityToken("refresh".into())
        );
        assert_eq!(
            get("regtok.io").credential,
            Credential::Bearer("bearer".into())
        );
        let r = get("empty.io");
        assert_eq!(r.credential, Credential::Anonymous);
        assert!(
            r.searched
                .iter()
                .any(|s| s.contains("holds no credentials")),
            "{:?}",
            r.searched
        );
        assert_eq!(get("colon.io").credential, basic("cu", "pa:ss"));
        let r = get("plain.io");
        assert!(
            r.source.contains("config.json") && r.source.contains("auths"),
            "{}",
            r.source
        );
    }

    #[test]
    fn exact_auths_key_beats_normalised_one() {
        let fx = Fixture::new(&format!(
            r#"{{"auths":{{"https://x.io/v1/":{{"auth":"{}"}},"x.io":{{"auth":"{}"}}}}}}"#,
            b64("url:form"),
            b64("bare:form")
        ));
        let r = resolve("x.io", &no_flags(), &fx.env(&[])).expect("resolve");
        assert_eq!(r.credential, basic("bare", "form"));
    }

    #[test]
    fn broken_docker_config_is_an_error_naming_the_file() {
        for text in ["{not json", r#"{"auths":{"x.io":{"auth":"!!!"}}}"#] {
            let fx = Fixture::new(text);
            let e = resolve("x.io", &no_flags(), &fx.env(&[])).expect_err(text);
            assert!(matches!(e, AuthError::DockerConfig { .. }), "{e}");
            assert!(e.to_string().contains("config.json"), "{e}");
        }
    }

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
