//! The one integration-test binary: every module below shares one build of `support`, so the
//! harness compiles and links once instead of once per file.

mod support;

mod archive;
mod audit;
mod author;
mod author_cli;
mod behaviour;
mod export;
mod faults;
mod foreign;
mod fuzz_replay;
mod harness;
mod hostile;
mod imgpkg_registry;
mod import;
mod mounts;
mod platform;
mod reference;
mod referrers;
mod registry;
mod rollback;
mod serve;
mod stock_tools;
mod token_auth;
mod trust;
mod verify_by_hand;
mod volumes;
