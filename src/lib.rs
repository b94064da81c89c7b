//! autoclat: a zero-touch 464XLAT customer-side translator (CLAT, RFC 6877) for Linux.
//!
//! The library holds everything the two binaries share. Pure logic (configuration, policy,
//! prefix maths, packet translation) lives in modules without I/O; syscalls and netlink live in
//! thin edge modules (`watch`, `controller`, `bpf`, the I/O halves of `discovery`).

pub mod bpf;
pub mod config;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod discovery;
pub mod hooks;
pub mod instance;
pub mod journal;
pub mod metrics;
pub mod nat64;
pub mod nft;
pub mod nlmsg;
pub mod nlsock;
pub mod notify;
pub mod policy;
pub mod translator;
pub mod tunif;
pub mod watch;
pub mod xlat;
