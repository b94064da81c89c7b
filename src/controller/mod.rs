//! The controller: reconciles wanted CLATs against running ones (tun, addresses, child, route).

pub mod addressing;
pub mod backoff;
