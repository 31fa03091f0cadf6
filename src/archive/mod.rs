//! archive (to be written)
