//! Where registry credentials come from (interim: flags only; full chain lands from the refauth branch).

use std::path::PathBuf;

/// A credential for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credentials.
    Anonymous,
    /// HTTP basic.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// Bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => write!(f, "Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// Credentials given on the command line.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// `--registry-username`.
    pub username: Option<String>,
    /// `--registry-password`.
    pub password: Option<String>,
    /// `--registry-token`.
    pub token: Option<String>,
    /// `--registry-anon`.
    pub anonymous: bool,
}

/// A snapshot of the environment credentials are looked up in.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: Vec<(String, String)>,
    docker_config_dir: Option<PathBuf>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
            docker_config_dir: None,
        }
    }
}

/// The credential chosen for a host, and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The credential.
    pub credential: Credential,
    /// Where it came from.
    pub source: String,
    /// Where the lookup looked.
    pub searched: Vec<String>,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(String);

/// Picks the credential for `host`.
pub fn resolve(_host: &str, opts: &AuthOptions, _env: &Env) -> Result<Resolved, AuthError> {
    let credential = match (&opts.username, &opts.password, &opts.token) {
        _ if opts.anonymous => Credential::Anonymous,
        (_, _, Some(t)) => Credential::Bearer(t.clone()),
        (Some(u), Some(p), _) => Credential::Basic {
            username: u.clone(),
            password: p.clone(),
        },
        _ => Credential::Anonymous,
    };
    Ok(Resolved {
        credential,
        source: "flags".into(),
        searched: vec!["--registry-username/--registry-password".into()],
    })
}
