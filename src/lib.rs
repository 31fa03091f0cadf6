//! airlift: carry container images and their Kubernetes configuration across an air gap.
//!
//! The crate is laid out by architecture:
//! - [`reference`], [`digest`], [`oci`]: the vocabulary (image names, content digests, manifests);
//! - [`registry`]: talking to OCI registries (auth, TLS, retries) over `oci-client`;
//! - [`archive`]: the airlift archive format v1 (an OCI image layout in a signed tar);
//! - [`transfer`]: one graph walk that moves content between registries and archives;
//! - [`author`]: imgpkg/kbld-compatible locks, rewrites and bundles;
//! - [`keys`]: ed25519 signing keys.
#![warn(missing_docs)]

pub mod archive;
pub mod author;
pub mod digest;
pub mod fsutil;
pub mod keys;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod transfer;
pub mod yaml;
