//! Credentials from `--registry-username`/`--registry-password` or `--registry-token`.

use super::{AuthError, AuthOptions, Credential, non_empty};

pub(super) fn flag_credential(
    opts: &AuthOptions,
) -> Result<Option<(Credential, &'static str)>, AuthError> {
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

#[cfg(test)]
mod tests {
    use crate::registry::auth::{AuthError, AuthOptions, Env, resolve};

    use super::super::testkit::vars;

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
}
