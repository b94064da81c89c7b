//! NAT64 prefix discovery: RFC 6052 prefix maths, RFC 7050 (DNS64) and the sources' ordering.

pub mod ndopt;
pub mod prefix;
pub mod rfc7050;

pub use prefix::{Nat64Prefix, PrefixError};

/// Where a NAT64 prefix came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixSource {
    /// `nat64_prefix` in the configuration.
    Static,
    /// RFC 8781 PREF64 option in a router advertisement.
    Pref64,
    /// RFC 7050 discovery through DNS64 (`ipv4only.arpa`).
    Dns64,
}

impl std::fmt::Display for PrefixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrefixSource::Static => "static",
            PrefixSource::Pref64 => "pref64",
            PrefixSource::Dns64 => "dns64",
        })
    }
}
