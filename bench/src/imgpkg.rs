//! imgpkg (carvel) as the second comparison next to skopeo: it is the tool airlift's bundles
//! come from, and `imgpkg copy` does what airlift's export, import and copy do.
//!
//! Why optional: it is not a Debian package. The benchmark looks for it in `IMGPKG`, then on
//! `PATH`; when it is absent every imgpkg column says "not installed" and the run goes on, and
//! a failing imgpkg run marks its column "failed" instead of ending the benchmark.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::Ctx;
use crate::proc::{Sample, Tls, run_soft, sync_fs};

/// `IMGPKG` (an explicit path) or the first `imgpkg` on `PATH`; `None` when neither exists.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IMGPKG").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return fs::canonicalize(&p).ok();
        }
        eprintln!(
            "IMGPKG={} does not exist: imgpkg columns say \"not installed\"",
            p.display()
        );
        return None;
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("imgpkg"))
            .find(|p| p.is_file())
    })
}

/// imgpkg's flags for a TLS + basic-auth registry.
pub fn tls_args(tls: &Tls) -> Vec<String> {
    vec![
        "--registry-ca-cert-path".into(),
        tls.ca_crt().to_string_lossy().into_owned(),
        "--registry-username".into(),
        tls.user.clone(),
        "--registry-password".into(),
        tls.password.clone(),
    ]
}

impl Ctx {
    /// `imgpkg` with a HOME (and docker config) made fresh for this one run, so no
    /// credentials, config or cache of an earlier run or of the host leak in. `None` when
    /// imgpkg is not installed.
    pub(crate) fn imgpkg_cmd(&self) -> Option<Command> {
        let bin = self.imgpkg.as_ref()?;
        let home = self.work.join("imgpkg-home");
        let _ = fs::remove_dir_all(&home);
        crate::mkdir(&home);
        let mut cmd = Command::new(bin);
        cmd.env("HOME", &home)
            .env("DOCKER_CONFIG", home.join(".docker"))
            .env_remove("IMGPKG_USERNAME")
            .env_remove("IMGPKG_PASSWORD")
            .env_remove("IMGPKG_TOKEN")
            .env_remove("IMGPKG_ANON")
            .env_remove("IMGPKG_REGISTRY_HOSTNAME")
            .env_remove("IMGPKG_REGISTRY_USERNAME")
            .env_remove("IMGPKG_REGISTRY_PASSWORD")
            .env_remove("IMGPKG_REGISTRY_IDENTITY_TOKEN")
            .env_remove("IMGPKG_REGISTRY_REGISTRY_TOKEN");
        Some(cmd)
    }

    /// `imgpkg copy -b|-i REF --to-tar TAR --registry-insecure` (the source is plain HTTP).
    /// Returns the copy and, separately, the flush that follows (imgpkg does not fsync).
    pub(crate) fn imgpkg_export(
        &self,
        what: &[&str],
        tar: &Path,
        log: &str,
    ) -> Option<(Sample, f64)> {
        let _ = fs::remove_file(tar);
        let mut cmd = self.imgpkg_cmd()?;
        sync_fs(&self.work);
        cmd.arg("copy")
            .args(what)
            .arg("--to-tar")
            .arg(tar)
            .arg("--registry-insecure");
        let s = run_soft(&mut cmd, &self.log(log))?;
        let t = Instant::now();
        sync_fs(&self.work);
        Some((s, t.elapsed().as_secs_f64()))
    }

    /// `imgpkg copy --tar TAR --to-repo REG/mirror/imgpkg` into a fresh TLS + basic-auth
    /// registry; returns imgpkg's sample and the registry's CPU.
    pub(crate) fn imgpkg_import(&self, tar: &Path, log: &str) -> Option<(Sample, f64)> {
        if !tar.is_file() {
            eprintln!(
                "{}: missing (imgpkg export failed), no imgpkg import",
                tar.display()
            );
            return None;
        }
        let mut cmd = self.imgpkg_cmd()?;
        let reg = self.fresh_tls_registry("import-target");
        sync_fs(&self.work);
        cmd.arg("copy")
            .arg("--tar")
            .arg(tar)
            .arg("--to-repo")
            .arg(format!("{}/mirror/imgpkg", reg.host()))
            .args(tls_args(&self.tls));
        let s = run_soft(&mut cmd, &self.log(log));
        let reg_cpu = reg.stop();
        let _ = fs::remove_dir_all(self.work.join("import-target"));
        Some((s?, reg_cpu))
    }
}
