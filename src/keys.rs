//! ed25519 signing keys: generation, PEM files compatible with openssl, fingerprints.
//!
//! Archives are signed so that the air-gapped side can tell an archive made by a trusted
//! exporter from anything else on the USB stick. Keys are plain PKCS#8/SPKI PEM files so
//! operators can make and check them with `openssl` alone.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef;
use ed25519_dalek::pkcs8::spki::der::Decode;
use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
    PrivateKeyInfoRef,
};
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::Digest as _;

/// Length of a raw ed25519 signature, as stored in `airlift/signatures/*.sig`.
pub const SIGNATURE_LEN: usize = 64;

/// Largest key file read; real ed25519 PEM files are about 120 bytes.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// The ed25519 object identifier (RFC 8410), as it appears in key files.
const ED25519_OID: &str = "1.3.101.112";

/// Why a key could not be made, read or used; each variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
    /// A private key file that group or others may read.
    #[error(
        "{path}: private key is accessible by others (mode {mode:04o}); run `chmod 600 {path}` \
         (or pass --allow-insecure-key-permissions)",
        path = path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a PEM file, or PEM of the wrong kind, or undecodable DER inside.
    #[error("{path}: malformed key file: {reason}")]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed key of another algorithm (RSA, EC, ...).
    #[error(
        "{path}: not an ed25519 key (algorithm {algorithm}); make one with `airlift keygen` or `openssl genpkey -algorithm ed25519`"
    )]
    NotEd25519 {
        /// The file concerned.
        path: PathBuf,
        /// The algorithm found (name or OID).
        algorithm: String,
    },
    /// A signature file that is not exactly 64 bytes.
    #[error("{path}: signature must be exactly 64 bytes, found {found}")]
    SignatureLength {
        /// The file (or archive entry) concerned.
        path: PathBuf,
        /// Its length.
        found: usize,
    },
    /// Encoding a key as PEM failed (should not happen for valid keys).
    #[error("cannot encode key: {0}")]
    Encode(String),
}

/// Makes a new random signing key from the operating system's CSPRNG.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// The files a keypair lives in: `BASE.key` and `BASE.pub`.
pub fn keypair_paths(base: &Path) -> (PathBuf, PathBuf) {
    let mut key = base.as_os_str().to_owned();
    key.push(".key");
    let mut public = base.as_os_str().to_owned();
    public.push(".pub");
    (PathBuf::from(key), PathBuf::from(public))
}

/// Generates a key and writes `BASE.key` (PKCS#8 PEM, mode 0600) and `BASE.pub` (SPKI PEM).
///
/// The private key file is created with mode 0600 from the start (never readable by others,
/// not even briefly) and is never overwritten: an existing file is an error.
pub fn write_keypair(base: &Path) -> Result<(SigningKey, PathBuf, PathBuf), KeyError> {
    let key = generate()?;
    let (key_path, pub_path) = keypair_paths(base);
    let private_pem = private_key_pem(&key)?;
    let public_pem = public_key_pem(&key.verifying_key())?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut f =
        crate::fsutil::create_new(&key_path, crate::fsutil::PRIVATE).map_err(io(&key_path))?;
    f.write_all(private_pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&key_path))?;
    let mut p =
        crate::fsutil::create_new(&pub_path, crate::fsutil::PUBLIC).map_err(io(&pub_path))?;
    p.write_all(public_pem.as_bytes())
        .and_then(|_| p.sync_all())
        .map_err(io(&pub_path))?;
    let dir = key_path.parent().filter(|d| !d.as_os_str().is_empty());
    crate::fsutil::sync_dir(dir.unwrap_or(Path::new("."))).map_err(io(&key_path))?;
    Ok((key, key_path, pub_path))
}

/// The PKCS#8 v1 PEM text of a private key (`-----BEGIN PRIVATE KEY-----`).
///
/// v1 (no embedded public key), exactly like `openssl genpkey -algorithm ed25519`: OpenSSL
/// 3.0 cannot read the v2 form that the generic encoder emits.
pub fn private_key_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| KeyError::Encode(e.to_string()))
}

/// The SPKI PEM text of a public key (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

fn read_small(path: &Path) -> Result<Vec<u8>, KeyError> {
    Ok(read_small_with_mode(path)?.0)
}

/// The file's bytes and its permission bits, both from the same open file.
fn read_small_with_mode(path: &Path) -> Result<(Vec<u8>, u32), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io)?;
    let mode = f.metadata().map_err(io)?.permissions().mode();
    let mut buf = Vec::new();
    f.take(MAX_KEY_FILE + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_KEY_FILE} bytes"),
        });
    }
    Ok((buf, mode))
}

fn algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.1" => "RSA (1.2.840.113549.1.1.1)".to_owned(),
        "1.2.840.10045.2.1" => "EC (1.2.840.10045.2.1)".to_owned(),
        "1.3.101.113" => "ed448 (1.3.101.113)".to_owned(),
        "1.3.101.110" => "x25519 (1.3.101.110)".to_owned(),
        other => other.to_owned(),
    }
}

fn decode_pem(path: &Path, text: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
    let (label, der) = pem::decode_vec(text).map_err(|e| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: format!("not PEM: {e}"),
    })?;
    Ok((label.to_owned(), der))
}

/// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), as written by
/// [`write_keypair`] or `openssl genpkey -algorithm ed25519`; refuses one that group or
/// others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    load_signing_key_with(path, false)
}

/// [`load_signing_key`], where `allow_insecure` (`--allow-insecure-key-permissions`) accepts
/// a key file readable by group or others, as ssh refuses to by default.
pub fn load_signing_key_with(path: &Path, allow_insecure: bool) -> Result<SigningKey, KeyError> {
    let (key, mode) = parse_signing_key(path)?;
    if mode & 0o077 != 0 && !allow_insecure {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(key)
}

fn parse_signing_key(path: &Path) -> Result<(SigningKey, u32), KeyError> {
    let (text, mode) = read_small_with_mode(path)?;
    let malformed = |reason: String| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let (label, der) = decode_pem(path, &text)?;
    match label.as_str() {
        "PRIVATE KEY" => {}
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            return Err(KeyError::NotEd25519 {
                path: path.to_path_buf(),
                algorithm: label.trim_end_matches(" PRIVATE KEY").to_owned(),
            });
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err(malformed(
                "encrypted private keys are not supported; store the key unencrypted with mode 0600"
                    .to_owned(),
            ));
        }
        other => {
            return Err(malformed(format!(
                "PEM label {other:?}, expected \"PRIVATE KEY\""
            )));
        }
    }
    let info = PrivateKeyInfoRef::from_der(&der)
        .map_err(|e| malformed(format!("invalid PKCS#8 structure: {e}")))?;
    let oid = info.algorithm.oid.to_string();
    if oid != ED25519_OID {
        return Err(KeyError::NotEd25519 {
            path: path.to_path_buf(),
            algorithm: algorithm_name(&oid),
        });
    }
    let key = SigningKey::from_pkcs8_der(&der)
        .map_err(|e| malformed(format!("invalid ed25519 key: {e}")))?;
    Ok((key, mode))
}

/// Reads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`), as written by
/// [`write_keypair`] or `openssl pkey -pubout`.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = read_small(path)?;
    let malformed = |reason: String| KeyError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let (label, der) = decode_pem(path, &text)?;
    if label != "PUBLIC KEY" {
        return Err(malformed(format!(
            "PEM label {label:?}, expected \"PUBLIC KEY\""
        )));
    }
    let info = SubjectPublicKeyInfoRef::from_der(&der)
        .map_err(|e| malformed(format!("invalid SubjectPublicKeyInfo: {e}")))?;
    let oid = info.algorithm.oid.to_string();
    if oid != ED25519_OID {
        return Err(KeyError::NotEd25519 {
            path: path.to_path_buf(),
            algorithm: algorithm_name(&oid),
        });
    }
    VerifyingKey::from_public_key_der(&der)
        .map_err(|e| malformed(format!("invalid ed25519 public key: {e}")))
}

/// Lower-case hex sha256 of the key's DER SubjectPublicKeyInfo: names signature files.
///
/// Same as `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`.
pub fn fingerprint(key: &VerifyingKey) -> String {
    // The SPKI of an ed25519 key is a fixed 12-byte prefix followed by the 32-byte key
    // (RFC 8410 §4); building it directly cannot fail, unlike the generic encoder.
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut h = sha2::Sha256::new();
    h.update(SPKI_PREFIX);
    h.update(key.as_bytes());
    hex::encode(h.finalize())
}

/// Signs `message` (the exact airlift manifest bytes), giving the raw 64-byte signature.
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; SIGNATURE_LEN] {
    use ed25519_dalek::Signer as _;
    key.sign(message).to_bytes()
}

/// Checks a raw signature strictly (rejects malleable and small-order forms).
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let sig = Signature::from_bytes(signature);
    key.verify_strict(message, &sig).is_ok()
}

/// Turns signature bytes read from `origin` into a fixed array, refusing any other length.
pub fn signature_from_slice(origin: &Path, bytes: &[u8]) -> Result<[u8; SIGNATURE_LEN], KeyError> {
    bytes.try_into().map_err(|_| KeyError::SignatureLength {
        path: origin.to_path_buf(),
        found: bytes.len(),
    })
}

/// Reads a detached signature file (exactly 64 bytes).
pub fn load_signature(path: &Path) -> Result<[u8; SIGNATURE_LEN], KeyError> {
    let bytes = read_small(path)?;
    signature_from_slice(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_generic_spki_encoding() {
        let key = generate().unwrap().verifying_key();
        let der = key.to_public_key_der().unwrap();
        let expected = hex::encode(sha2::Sha256::digest(der.as_bytes()));
        assert_eq!(fingerprint(&key), expected);
    }

    #[test]
    fn sign_then_verify() {
        let key = generate().unwrap();
        let sig = sign(&key, b"manifest");
        assert!(verify(&key.verifying_key(), b"manifest", &sig));
        assert!(!verify(&key.verifying_key(), b"manifesT", &sig));
    }
}
