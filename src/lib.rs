//! airlift: carry container images and their Kubernetes configuration across an air gap.
//!
//! The crate is laid out by architecture:
//! - [`reference`], [`digest`], [`oci`]: the vocabulary (image names, content digests, manifests);
//! - [`registry`]: talking to OCI registries (auth, TLS, retries) over `oci-client`;
//! - [`archive`]: the airlift archive format v1 (an OCI image layout in a signed tar);
//! - [`graph`]: the content graph every transfer moves;
//! - [`store`]: places content lives (registries, archives being read or written), behind two traits;
//! - [`transfer`]: the one engine over stores, and export, import and copy as its policies;
//! - [`serve`]: archives served in place as a read-only registry;
//! - [`author`]: imgpkg/kbld-compatible locks, rewrites and bundles;
//! - [`keys`]: ed25519 signing keys.
#![warn(missing_docs)]

pub mod archive;
pub mod author;
pub mod cosign;
pub mod digest;
pub mod fsutil;
pub mod graph;
pub mod keys;
pub mod oci;
pub mod reference;
pub mod referrers;
pub mod registry;
pub mod serve;
pub mod store;
pub mod transfer;
pub mod yaml;
