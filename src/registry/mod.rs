//! Talking to OCI registries: auth, TLS, retries, streaming, over `oci-client`.

pub mod auth;
