//! Where registry credentials come from (to be written).
