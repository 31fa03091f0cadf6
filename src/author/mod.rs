//! imgpkg/kbld-compatible authoring (interim stub until the author branch lands).

/// Lock files.
pub mod lock {
    use std::collections::BTreeMap;

    /// One lock entry.
    #[derive(Debug, Clone, serde::Deserialize)]
    pub struct ImageRef {
        /// Digest reference.
        pub image: String,
        /// Annotations.
        #[serde(default)]
        pub annotations: BTreeMap<String, String>,
    }

    /// `.imgpkg/images.yml`.
    #[derive(Debug, Clone, serde::Deserialize)]
    pub struct ImagesLock {
        /// Entries.
        #[serde(default)]
        pub images: Vec<ImageRef>,
    }

    impl ImagesLock {
        /// Parses a lock.
        pub fn parse(bytes: &[u8]) -> Result<ImagesLock, String> {
            serde_norway::from_slice(bytes).map_err(|e| e.to_string())
        }
    }
}
