//! The imgpkg/kbld golden fixtures (`tests/fixtures/imgpkg-compat`) that the authoring tests,
//! library and CLI alike, compare airlift's output against.

use std::path::{Path, PathBuf};

/// The registry host the goldens were recorded against; tests swap in their own registry's.
pub const GOLDEN_HOST: &str = "127.0.0.1:5070";

/// The golden fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imgpkg-compat")
}

/// The text of golden file `name`.
pub fn golden(name: &str) -> String {
    let path = fixtures().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of guestbook-src with the modes the golden tar was made from (files 0644); with
/// `host`, the configuration's references are moved from [`GOLDEN_HOST`] to that registry.
pub fn guestbook_copy(host: Option<&str>) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = fixtures().join("guestbook-src");
    for sub in [".imgpkg", "config"] {
        std::fs::create_dir(tmp.path().join(sub)).expect("create fixture dir");
        for e in std::fs::read_dir(src.join(sub)).expect("read guestbook-src") {
            let e = e.expect("guestbook-src entry");
            let to = tmp.path().join(sub).join(e.file_name());
            let text = std::fs::read_to_string(e.path()).expect("read fixture");
            let text = match host {
                Some(h) => text.replace(GOLDEN_HOST, h),
                None => text,
            };
            std::fs::write(&to, text).expect("write fixture copy");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))
                .expect("chmod fixture copy");
        }
    }
    tmp
}
