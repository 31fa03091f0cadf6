//! Credentials from the docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`): its `auths`, after the helpers it names.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::{AuthError, Credential, Env, helpers, non_empty, normalize_host};

/// Largest docker config file read; real ones are a few kilobytes.
pub const DOCKER_CONFIG_MAX: u64 = 4 * 1024 * 1024;

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

pub(super) fn from_docker_config(
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

    if let Some(found) = helpers::from_helpers(
        &config.cred_helpers,
        config.creds_store.as_deref(),
        want,
        env,
        &path,
        searched,
    )? {
        return Ok(Some(found));
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

#[cfg(test)]
mod tests {
    use crate::registry::auth::{AuthError, Credential, Env, resolve};

    use super::super::testkit::{Fixture, b64, basic, no_flags, vars};

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
}
