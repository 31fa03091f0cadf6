//! Shared support for integration tests: real registries, real images, real tools. No mocks.
//!
//! The one test binary (`tests/it/main.rs`) declares this module once; every test module
//! reaches it as `crate::support` and uses:
//!
//! - [`Registry`]: a real CNCF distribution (`docker-registry serve`) child process on
//!   `127.0.0.1:<free port>`, storage in a fresh temp dir.
//!   [`Registry::start_plain`] is plain HTTP without auth; [`Registry::start_tls_auth`] serves
//!   HTTPS with a test CA made by `rcgen` and htpasswd basic auth (user [`Registry::username`],
//!   random [`Registry::password`]). [`Registry::host`] gives `127.0.0.1:PORT` for references;
//!   [`Registry::ca_cert_path`] / [`Registry::ca_cert_dir`] give the CA to trust.
//!   [`Registry::kill`], [`Registry::stop`] and [`Registry::restart`] drive failure tests
//!   ("registry died mid-transfer, then came back": storage and port are kept);
//!   [`Registry::storage_dir`] and [`Registry::log`] let tests look inside.
//!   [`Registry::start_token_auth`] is plain HTTP with distribution's bearer-token auth, backed
//!   by a [`token::TokenServer`] of the harness's own on another 127.0.0.1 port:
//!   it checks basic credentials and issues ES256 JWTs the registry verifies.
//!   Dropping a `Registry` kills the child by PID (also when the test panics, and then the
//!   registry's log is printed to stderr so the failure explains itself).
//! - [`write_oci_image`] / [`write_oci_index`]: write a deterministic image (or a two-platform
//!   index) into an OCI image layout directory from seeded pseudo-random data; equal
//!   [`LayerSpec`]s give byte-identical layers, so images can share base layers.
//! - [`skopeo_push`], [`skopeo_pull`], [`skopeo_inspect_raw`], [`skopeo_list_tags`]: drive the
//!   real `skopeo` against a [`Registry`], so airlift is checked against an independent client.
//! - [`registry_tags`] and [`registry_state`]: what a registry serves (repo → tag → manifest
//!   bytes), to compare before and after an operation.
//! - [`catalog`] and [`http_get`]: tiny HTTP/1.1 client (std TCP, or rustls trusting the test CA,
//!   with basic auth) for the registry API.
//! - [`run_measuring_rss`]: run a command and get its peak resident memory from `wait4` rusage
//!   (and a bound on what it inherited from this process: check with [`Measured::peak_within`]).
//! - [`free_port`]: a currently free TCP port on 127.0.0.1.
//! - [`Corpus`] (module [`corpus`]): images sharing layers, a two-platform index, a nested and
//!   an outer bundle in a registry, with every digest and the unique blob set; plus the
//!   tar-by-offset helpers that export/import tests share.
//! - [`cli`]: run the real binary with a private HOME ([`airlift`], [`airlift_cmd`] to add env)
//!   and check its exit ([`expect_ok`], [`expect_code`], [`expect_failed`]) with all of its
//!   output in the panic message; [`run_tool`] for independent tools that must succeed;
//!   [`s`] for paths as arguments.
//! - [`validate_json_schema`]: check a JSON document against `format-spec/*.schema.json` with
//!   python3-jsonschema, independent of airlift's own code.
//! - [`fixtures`]: the imgpkg/kbld golden files and a fresh copy of the guestbook sources.
//! - [`sha256_digest`]: expected digests computed with `sha2`, independent of airlift's code.
//! - [`proxy::FaultProxy`]: a fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a
//!   [`Registry`] (injected 5xx/429 answers, connections cut after N bytes, delays).
//! - [`synth`]: synthetic archives from the library's writer (no source registry), and
//!   [`synth::raw_tar`] for tar entries the writer would refuse (links, devices, lying sizes).
//!
//! Conventions: references given to the skopeo helpers are relative to the registry
//! (`"team/app:v1"`, `"team/app@sha256:…"`); [`Registry::reference`] makes the full
//! `127.0.0.1:PORT/team/app:v1` form for airlift. Layers up to 8 MiB are tar+gzip, larger ones
//! plain tar (about 65 MiB/s to generate). Keep each `Registry` local to its test: statics are
//! never dropped, so a registry kept in one would outlive the test binary. Starting one takes
//! ~0.1 s (TLS ~0.2 s).
//!
//! Set `AIRLIFT_KEEP_TEST_DIRS=1` to keep registry temp dirs (their paths are printed).
//!
//! ```ignore
//! use crate::support::{self, ImageSpec, LayerSpec, Registry};
//!
//! let reg = Registry::start_plain();
//! let dir = tempfile::tempdir().unwrap();
//! let img = support::write_oci_image(dir.path(), "v1", &ImageSpec::new(1, vec![LayerSpec::new(7, 4096)]));
//! support::skopeo_push(dir.path(), "v1", "team/app:v1", &reg);
//! let raw = support::skopeo_inspect_raw("team/app:v1", &reg);
//! assert_eq!(support::sha256_digest(&raw), img.manifest_digest);
//! ```

pub mod cli;
pub mod corpus;
pub mod fixtures;
mod http;
mod layout;
pub mod proxy;
mod registry;
mod rss;
mod schema;
pub mod served;
mod skopeo;
mod state;
pub mod synth;
pub mod token;

pub use cli::{
    airlift, airlift_cmd, expect_code, expect_failed, expect_ok, keygen, output_text, run_tool, s,
};
pub use corpus::{
    Corpus, CorpusBundle, blob_entry_name, flip_entry, push_bundle, tar_entries, tar_entry,
    ustar_header, whole_tar_entries,
};
pub use http::{catalog, http_get};
pub use layout::{
    ImageSpec, LayerSpec, WrittenImage, WrittenIndex, write_oci_image, write_oci_index,
};
pub use registry::{Registry, free_port};
pub use rss::{Measured, run_measuring_rss};
pub use schema::validate_json_schema;
pub use skopeo::{
    push_images, skopeo_inspect_raw, skopeo_list_tags, skopeo_pull, skopeo_push,
    skopeo_push_with_creds,
};
pub use state::{all_tags, registry_state, registry_tags};

use airlift::digest::Digest;
use sha2::{Digest as _, Sha256};

/// sha256 of `bytes` as an airlift [`Digest`], computed with `sha2` directly so that test
/// expectations do not depend on the library's own hashing code.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let hex = hex::encode(Sha256::digest(bytes));
    parse_sha256_hex(&hex)
}

/// Turns a lowercase sha256 hex string into a [`Digest`]; panics on malformed input since it
/// is only ever fed hashes the harness computed itself.
fn parse_sha256_hex(hex: &str) -> Digest {
    format!("sha256:{hex}")
        .parse()
        .unwrap_or_else(|e| panic!("harness produced an invalid digest sha256:{hex}: {e}"))
}
