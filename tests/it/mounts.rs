//! `--to-registry` sends a layer shared by several repositories once: the registry sink mounts
//! it from the first repository that received it, and the summary says so.

use std::time::Duration;

use crate::support::proxy::{Fault, FaultProxy};
use crate::support::{
    ImageSpec, LayerSpec, Registry, airlift, expect_ok, push_images, registry_tags, s,
};

#[test]
fn a_shared_layer_is_uploaded_once_and_mounted_into_the_other_repositories() {
    let (src, dest) = (Registry::start_plain(), Registry::start_plain());
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = LayerSpec::new(42, 2 << 20);
    let images = push_images(
        &src,
        &[
            (
                "team/api:1.0",
                ImageSpec::new(1, vec![base, LayerSpec::new(1, 4096)]),
            ),
            (
                "team/web:1.0",
                ImageSpec::new(2, vec![base, LayerSpec::new(2, 4096)]),
            ),
            (
                "team/db:1.0",
                ImageSpec::new(3, vec![base, LayerSpec::new(3, 4096)]),
            ),
        ],
    );
    let shared = images[0].layer_digests[0].to_string();
    assert!(
        images
            .iter()
            .all(|i| i.layer_digests[0].to_string() == shared)
    );
    let archive = h.join("team.tar");
    let refs: Vec<String> = ["api", "web", "db"]
        .iter()
        .map(|n| src.reference(&format!("team/{n}:1.0")))
        .collect();
    let mut args = vec!["export", "-o", s(&archive), "--unsigned", "-q"];
    for r in &refs {
        args.extend(["-i", r.as_str()]);
    }
    expect_ok(&airlift(h, &args));

    // Delay(0) rules change nothing; the proxy logs each request they match.
    let proxy = FaultProxy::start(dest.port());
    for filter in ["POST ", "PUT "] {
        proxy.inject(Fault::Delay(Duration::ZERO), 10_000, filter);
    }
    let to = proxy.reference("mirror");
    let out = airlift(
        h,
        &[
            "import",
            s(&archive),
            "--to-registry",
            &to,
            "--allow-unsigned",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    expect_ok(&out);
    let log: Vec<String> = proxy
        .log()
        .into_iter()
        .map(|l| l.replace("%3A", ":").replace("%2F", "/"))
        .collect();
    let uploads = log
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains(&format!("digest={shared}")))
        .count();
    // A mount from the repository itself is only the existence check.
    let mounts = log
        .iter()
        .filter(|l| l.starts_with("POST ") && l.contains(&format!("mount={shared}")))
        .filter(|l| {
            let into = l.trim_start_matches("POST /v2/").split("/blobs/").next();
            let from = l.split("&from=").nth(1).and_then(|f| f.split(' ').next());
            into != from
        })
        .count();
    assert_eq!(
        uploads, 1,
        "the shared layer was uploaded {uploads} times: {log:#?}"
    );
    assert_eq!(
        mounts, 2,
        "mounted into the two other repositories: {log:#?}"
    );
    assert!(
        stderr.contains("mounted 2 from another repository"),
        "{stderr}"
    );
    for n in ["api", "web", "db"] {
        assert_eq!(
            registry_tags(&dest, &format!("mirror/team/{n}")),
            vec!["1.0"]
        );
    }
}
