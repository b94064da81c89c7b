//! RA options forwarded by the kernel on the ND user-option netlink group (RTNLGRP_ND_USEROPT):
//! parsing of `struct nduseroptmsg` and of the PREF64 (RFC 8781) and RDNSS (RFC 8106) options.
//!
//! SCAFFOLD: signatures are the contract; bodies are being written on the `discovery` branch.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::discovery::Nat64Prefix;

/// Why an ND user-option message could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdOptError {
    #[error("nduseroptmsg truncated: {0}")]
    Truncated(&'static str),
}

/// One RA option the kernel forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaOption {
    /// RFC 8781 PREF64; a zero lifetime withdraws the prefix.
    Pref64 {
        prefix: Nat64Prefix,
        lifetime: Duration,
    },
    /// RFC 8106 RDNSS; a zero lifetime withdraws the servers.
    Rdnss {
        servers: Vec<Ipv6Addr>,
        lifetime: Duration,
    },
    /// Any other option type (ignored).
    Other { kind: u8 },
}

/// One `RTM_NEWNDUSEROPT` message: the options of one RA on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdUserOpt {
    pub ifindex: u32,
    /// The ICMPv6 type the options came in (134 = router advertisement).
    pub icmp_type: u8,
    /// The RA's source address (NDUSEROPT_SRCADDR), if given.
    pub source: Option<Ipv6Addr>,
    pub options: Vec<RaOption>,
}

/// Parse the payload of an `RTM_NEWNDUSEROPT` message (the bytes after `struct nlmsghdr`).
pub fn parse_nduseropt(_msg: &[u8]) -> Result<NdUserOpt, NdOptError> {
    Err(NdOptError::Truncated("not implemented yet"))
}
