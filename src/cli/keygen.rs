//! `airlift keygen`: an ed25519 key pair for signing archives.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Make an ed25519 signing key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SPKI PEM).
///
/// Both files are readable by openssl, and keys made by `openssl genpkey -algorithm ed25519`
/// work with airlift too. Keep NAME.key on the connected side; carry NAME.pub to the air-gapped
/// side and pass it to `airlift verify --trust` / `airlift import --trust`. The fingerprint printed
/// (sha256 of the public key's DER) names the key's signature inside archives.
///
/// Example: airlift keygen --out release-2026
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Base name of the two files to write (NAME.key, NAME.pub); existing files are not overwritten.
    #[arg(long, value_name = "NAME")]
    pub out: PathBuf,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let (key, private, public) = airlift::keys::write_keypair(&args.out)
        .with_context(|| format!("writing key pair {}", args.out.display()))?;
    println!("{}", airlift::keys::fingerprint(&key.verifying_key()));
    eprintln!(
        "wrote {} (private, mode 0600) and {}",
        private.display(),
        public.display()
    );
    Ok(())
}
