//! Basic auth against an htpasswd file of bcrypt entries (`htpasswd -B`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use sha2::{Digest as _, Sha256};

use super::ServeError;

/// Largest htpasswd file read.
const MAX_FILE: u64 = 1024 * 1024;
/// Credentials remembered as good, so bcrypt runs once per client, not once per request.
const MAX_CACHED: usize = 1024;

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    good: Mutex<HashSet<[u8; 32]>>,
}

impl Htpasswd {
    /// Reads `path`; refuses entries that are not bcrypt, naming the line.
    pub fn load(path: &Path) -> Result<Htpasswd, ServeError> {
        let ctx =
            |e: std::io::Error| ServeError::Usage(format!("--htpasswd {}: {e}", path.display()));
        let meta = std::fs::metadata(path).map_err(ctx)?;
        if meta.len() > MAX_FILE {
            return Err(ServeError::Usage(format!(
                "--htpasswd {}: {} bytes is over the {MAX_FILE}-byte limit",
                path.display(),
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(ctx)?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(ServeError::Usage(format!(
                    "--htpasswd {} line {}: expected USER:HASH",
                    path.display(),
                    n + 1
                )));
            };
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err(ServeError::Usage(format!(
                    "--htpasswd {} line {} (user {user}): only bcrypt entries are supported; \
                     create them with `htpasswd -B`",
                    path.display(),
                    n + 1
                )));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(ServeError::Usage(format!(
                "--htpasswd {}: no users in the file",
                path.display()
            )));
        }
        Ok(Htpasswd {
            users,
            good: Mutex::new(HashSet::new()),
        })
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub async fn check(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let Some(hash) = self.users.get(&user).cloned() else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if self.good.lock().is_ok_and(|g| g.contains(&key)) {
            return true;
        }
        // bcrypt is slow by design: keep it off the request threads.
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok && let Ok(mut g) = self.good.lock() {
            if g.len() >= MAX_CACHED {
                g.clear();
            }
            g.insert(key);
        }
        ok
    }
}

fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bcrypt_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&p, format!("alice:{hash}\n")).unwrap();
        let h = Htpasswd::load(&p).unwrap();
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:nope")
        );
        assert!(h.check(Some(&good)).await);
        assert!(h.check(Some(&good)).await, "cached");
        assert!(!h.check(Some(&bad)).await);
        assert!(!h.check(None).await);
        std::fs::write(&p, "bob:$apr1$abc$def\n").unwrap();
        let e = Htpasswd::load(&p).err().unwrap().to_string();
        assert!(e.contains("only bcrypt"), "{e}");
    }
}
