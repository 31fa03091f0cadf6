//! Credentials from the `AIRLIFT_REGISTRY_*` environment variable groups.

use std::collections::BTreeMap;

use super::{AuthError, Credential};

/// Prefix of the environment variable groups, after imgpkg's `IMGPKG_REGISTRY_`.
pub const ENV_PREFIX: &str = "AIRLIFT_REGISTRY_";

/// One `AIRLIFT_REGISTRY_*<suffix>` group, validated.
pub(super) struct EnvGroup {
    suffix: String,
    pub(super) hosts: Vec<String>,
    pub(super) credential: Credential,
}

impl EnvGroup {
    pub(super) fn label(&self) -> String {
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

pub(super) fn env_groups(vars: &BTreeMap<String, String>) -> Result<Vec<EnvGroup>, AuthError> {
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

#[cfg(test)]
mod tests {
    use crate::registry::auth::{AuthError, Credential, Env, resolve};

    use super::super::testkit::{basic, no_flags, vars};

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
}
