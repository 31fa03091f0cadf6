//! A real CNCF distribution registry as a child process, on 127.0.0.1 only.

use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

use super::http::{self, Endpoint};
use super::token::TokenServer;

/// Binary of the Debian `docker-registry` package (CNCF distribution 2.8).
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry may take to answer `GET /v2/` after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Attempts at finding a port that is still free when the registry binds it.
const PORT_ATTEMPTS: usize = 5;
/// htpasswd user of the TLS flavour, and token-server user of the token flavour.
const USERNAME: &str = "airlift";
/// `service` of the token flavour: the challenge names it and tokens carry it as `aud`.
const TOKEN_SERVICE: &str = "airlift-test-registry";
/// `issuer` of the token flavour: tokens must carry it as `iss`.
const TOKEN_ISSUER: &str = "airlift-test-token-issuer";

/// Which kind of registry to start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Plain,
    TlsAuth,
    TokenAuth,
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read, release).
/// Racy by nature: callers that bind it later must retry on "address already in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of listener")
        .port()
}

/// TLS material of the `start_tls_auth` flavour.
struct Tls {
    /// Directory holding only `ca.crt`: what `skopeo --cert-dir` and friends want.
    ca_dir: PathBuf,
    /// DER of the CA certificate, for the harness's own rustls client.
    ca_der: Vec<u8>,
    /// Random password of [`USERNAME`].
    password: String,
}

/// A running `docker-registry serve` child with its own temp dir (config, storage, logs).
/// Dropping it kills the child; dropping the temp dir removes storage.
pub struct Registry {
    child: Option<Child>,
    port: u16,
    tls: Option<Arc<Tls>>,
    /// Token server of the token flavour; it outlives every restart of the registry.
    token: Option<Arc<TokenServer>>,
    config: PathBuf,
    // Declared last so the child is killed (in Drop) before its files vanish.
    dir: TempDir,
}

impl Registry {
    /// Starts a plain-HTTP registry without auth; `GET /v2/` answers 200.
    pub fn start_plain() -> Registry {
        Registry::start(Flavour::Plain)
    }

    /// Starts an HTTPS registry (cert signed by a fresh test CA, SANs 127.0.0.1 and localhost)
    /// with htpasswd basic auth; `GET /v2/` without credentials answers 401.
    pub fn start_tls_auth() -> Registry {
        Registry::start(Flavour::TlsAuth)
    }

    /// Starts a plain-HTTP registry with distribution's bearer-token auth, backed by a fresh
    /// [`TokenServer`] on another 127.0.0.1 port (user [`Registry::username`], random
    /// [`Registry::password`]); `GET /v2/` without a token answers 401 with a
    /// `Bearer realm=…,service=…` challenge. [`Registry::token_server`] gives the server.
    pub fn start_token_auth() -> Registry {
        Registry::start(Flavour::TokenAuth)
    }

    fn start(flavour: Flavour) -> Registry {
        let mut dir = tempfile::Builder::new()
            .prefix("airlift-registry-")
            .tempdir()
            .expect("create registry temp dir");
        if std::env::var_os("AIRLIFT_KEEP_TEST_DIRS").is_some() {
            eprintln!("registry dir kept: {}", dir.path().display());
        }
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("create storage dir");
        let tls = (flavour == Flavour::TlsAuth).then(|| Arc::new(write_tls_material(dir.path())));
        let token = (flavour == Flavour::TokenAuth).then(|| {
            let password = hex::encode(rand::random::<[u8; 12]>());
            let server = TokenServer::start(USERNAME, &password, TOKEN_SERVICE, TOKEN_ISSUER);
            fs::write(dir.path().join("token-root.pem"), server.root_cert_pem())
                .expect("write token-root.pem");
            Arc::new(server)
        });
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = write_config(dir.path(), port, tls.is_some(), token.as_deref());
            let mut reg = Registry {
                child: None,
                port,
                tls: tls.clone(),
                token: token.clone(),
                config,
                dir,
            };
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(log) => {
                    last_log = log;
                    // Take the dir back for the next attempt; the child already exited.
                    reg.child = None;
                    dir = reg.take_dir();
                }
            }
        }
        panic!("registry did not start after {PORT_ATTEMPTS} port attempts; last log:\n{last_log}");
    }

    /// Moves the temp dir out of a registry whose child is gone (used between port retries).
    fn take_dir(mut self) -> TempDir {
        self.child = None;
        let placeholder = tempfile::tempdir().expect("placeholder temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Spawns the child and waits until `/v2/` answers as expected.
    /// Err(log) when the child exited because the port was taken (the caller may retry);
    /// panics with the log on any other early exit or on timeout.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        // Logs accumulate across restarts; only this run's part decides about port retries.
        let append = |path: PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        };
        let stdout = append(self.dir.path().join("stdout.log"));
        let stderr = append(self.log_path());
        let log_start = stderr.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn {REGISTRY_BIN}: {e} (apt-get install docker-registry)")
            });
        self.child = Some(child);
        let expected = if self.credentials().is_some() {
            401
        } else {
            200
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait registry") {
                self.child = None;
                let log = self.log();
                let this_run = fs::read(self.log_path()).unwrap_or_default();
                let this_run = this_run.get(log_start as usize..).unwrap_or_default();
                if String::from_utf8_lossy(this_run).contains("address already in use") {
                    return Err(log);
                }
                panic!("registry exited early with {status}; log:\n{log}");
            }
            if let Ok(resp) = http::get(&self.endpoint(), "/v2/", false)
                && resp.status == expected
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log();
                self.kill();
                panic!(
                    "registry not ready on {} within {READY_TIMEOUT:?}; log:\n{log}",
                    self.host()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("registry child is running")
    }

    /// The TLS flavour's server certificate and key (PEM, for 127.0.0.1, signed by the test
    /// CA) and its bcrypt htpasswd file: for other servers the same clients should trust.
    pub fn tls_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        assert!(self.tls.is_some(), "only the TLS flavour has TLS files");
        let d = self.dir.path();
        (
            d.join("tls").join("server.crt"),
            d.join("tls").join("server.key"),
            d.join("htpasswd"),
        )
    }

    /// How the harness's HTTP client reaches this registry.
    pub(super) fn endpoint(&self) -> Endpoint {
        Endpoint {
            port: self.port,
            tls_ca_der: self.tls.as_ref().map(|t| t.ca_der.clone()),
            basic_auth: self
                .tls
                .as_ref()
                .map(|t| (USERNAME.to_string(), t.password.clone())),
        }
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPO_REF`: a full reference for airlift or skopeo, e.g.
    /// `reg.reference("team/app:v1")` or `reg.reference("team/app@sha256:…")`.
    pub fn reference(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.host())
    }

    /// TCP port the registry listens on (stable across `restart`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is the HTTPS + basic-auth flavour.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// PEM of the CA that signed the server certificate; panics for the plain flavour.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.ca_cert_dir().join("ca.crt")
    }

    /// Directory containing only `ca.crt` (skopeo/containers treat every `*.crt` there as a CA).
    pub fn ca_cert_dir(&self) -> PathBuf {
        self.tls_material().ca_dir.clone()
    }

    /// User name (htpasswd or token server); panics for the plain flavour.
    pub fn username(&self) -> &str {
        self.credentials()
            .expect("this registry is the plain flavour: it has no credentials")
            .0
    }

    /// Random password (htpasswd or token server); panics for the plain flavour.
    pub fn password(&self) -> &str {
        self.credentials()
            .expect("this registry is the plain flavour: it has no credentials")
            .1
    }

    /// `Some((user, password))` for the TLS and token flavours, `None` for plain.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match (&self.tls, &self.token) {
            (Some(t), _) => Some((USERNAME, t.password.as_str())),
            (None, Some(t)) => Some((t.username(), t.password())),
            (None, None) => None,
        }
    }

    /// The token server of the token flavour; panics for the others.
    pub fn token_server(&self) -> &TokenServer {
        self.token
            .as_deref()
            .expect("this registry is not the token flavour")
    }

    fn tls_material(&self) -> &Tls {
        self.tls
            .as_deref()
            .expect("this registry is the plain flavour: it has no TLS or credentials")
    }

    /// Root of the filesystem storage driver (`docker/registry/v2/...` lives below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Registry's stderr log (level warn) plus its stdout, for failure messages; accumulated
    /// over all starts of this registry.
    pub fn log(&self) -> String {
        let err = fs::read_to_string(self.log_path()).unwrap_or_default();
        let out = fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        if out.is_empty() {
            err
        } else {
            format!("{err}\n--- stdout ---\n{out}")
        }
    }

    /// PID of the running child, if any (for tests that check the process is gone).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs the child and reaps it; storage is left as the crash left it. No-op if stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after a grace period; reaps the child. No-op if stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }

    /// Starts the registry again on the same port, config and storage (stopping it first if it
    /// still runs). Retries for a while if the port is briefly unavailable.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(log) => {
                    last = log;
                    sleep(Duration::from_millis(250));
                }
            }
        }
        panic!(
            "registry could not restart on port {}; log:\n{last}",
            self.port
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- registry {} log ---\n{}", self.host(), self.log());
        }
        self.kill();
        if std::env::var_os("AIRLIFT_KEEP_TEST_DIRS").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("placeholder temp dir"),
            );
            let _ = dir.keep();
        }
    }
}

/// Sends `sig` to the child by PID; errors (already gone) are ignored.
fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a PID we spawned and have not reaped yet; no memory is touched.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Writes `config.yml` for distribution 2.8 and returns its path.
fn write_config(dir: &Path, port: u16, tls: bool, token: Option<&TokenServer>) -> PathBuf {
    let storage = dir.join("storage");
    let mut yaml = format!(
        "version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: airlift-test-secret
",
        storage = storage.display(),
    );
    if tls {
        yaml.push_str(&format!(
            "  tls:
    certificate: {cert}
    key: {key}
auth:
  htpasswd:
    realm: airlift-test
    path: {htpasswd}
",
            cert = dir.join("tls/server.crt").display(),
            key = dir.join("tls/server.key").display(),
            htpasswd = dir.join("htpasswd").display(),
        ));
    }
    if let Some(t) = token {
        yaml.push_str(&format!(
            "auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
",
            realm = t.realm(),
            service = t.service(),
            issuer = t.issuer(),
            bundle = dir.join("token-root.pem").display(),
        ));
    }
    let path = dir.join("config.yml");
    fs::write(&path, yaml).expect("write registry config");
    path
}

/// Generates CA, server cert/key and htpasswd into `dir`.
fn write_tls_material(dir: &Path) -> Tls {
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "airlift test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("generate server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    server_params.use_authority_key_identifier_extension = true;
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("sign server cert");

    let ca_dir = dir.join("certs");
    let tls_dir = dir.join("tls");
    fs::create_dir_all(&ca_dir).expect("create certs dir");
    fs::create_dir_all(&tls_dir).expect("create tls dir");
    fs::write(ca_dir.join("ca.crt"), ca_cert.pem()).expect("write ca.crt");
    fs::write(tls_dir.join("server.crt"), server_cert.pem()).expect("write server.crt");
    fs::write(tls_dir.join("server.key"), server_key.serialize_pem()).expect("write server.key");

    let password = hex::encode(rand::random::<[u8; 12]>());
    let hash = bcrypt::hash(&password, 4).expect("bcrypt hash");
    fs::write(dir.join("htpasswd"), format!("{USERNAME}:{hash}\n")).expect("write htpasswd");

    Tls {
        ca_dir,
        ca_der: ca_cert.der().to_vec(),
        password,
    }
}
