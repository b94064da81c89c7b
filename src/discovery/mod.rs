//! NAT64 prefix discovery: RFC 6052 prefix maths, RFC 7050 (DNS64) and the sources' ordering.
//!
//! Pure parts: [`prefix`], [`ndopt`] (RA options), [`rfc7050`] (answers → prefixes),
//! [`resolvconf`] (text → servers) and [`state`] (per-uplink choice and timers). I/O edges:
//! [`dns`] (the `ipv4only.arpa` query through one uplink) and [`oneshot`] (`autoclat discover`).

pub mod dns;
pub mod ndopt;
pub mod oneshot;
pub mod resolvconf;
pub mod resolvwatch;
pub mod rfc7050;
pub mod rs;
pub mod state;

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::nat64::{Nat64Prefix, PrefixError, PrefixSource};
pub use dns::{query_dns64, Dns64Answer};
pub use oneshot::{discover_once, DiscoverOptions, DiscoveryReport};
pub use state::{dns_servers, Pref64Seen, PrefixState};

/// Why a discovery step found no prefix.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No DNS server is known for the uplink (no RDNSS, none in resolv.conf, none configured).
    #[error("no DNS server to ask on {0}")]
    NoDnsServers(String),
    /// No server answered in time.
    #[error("DNS64 discovery on {ifname} timed out after {timeout:?}")]
    Timeout { ifname: String, timeout: Duration },
    /// The server answered, but with no AAAA for ipv4only.arpa: the network has no DNS64.
    #[error("{server} has no AAAA record for ipv4only.arpa (no DNS64 on this network)")]
    NoDns64 { server: SocketAddr },
    /// The AAAA answers held no usable prefix (RFC 7050 §3); the reasons say why.
    #[error("{server} answered ipv4only.arpa but no answer gave a usable prefix: {}",
        reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NoUsablePrefix {
        server: SocketAddr,
        reasons: Vec<rfc7050::AnswerError>,
    },
    /// The resolver failed (network unreachable, SERVFAIL, refused, ...).
    #[error("DNS query to {server} failed: {message}")]
    Resolve { server: SocketAddr, message: String },
    /// The interface does not exist.
    #[error("no interface named `{0}`")]
    NoSuchInterface(String),
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Every source in the configured order was tried and none gave a prefix.
    #[error("no NAT64 prefix found on {ifname}: {}", attempts.join("; "))]
    NothingFound {
        ifname: String,
        attempts: Vec<String>,
    },
}

impl DiscoveryError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
