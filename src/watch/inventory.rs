//! The host's network state as the watcher knows it: pure data, updated from netlink messages,
//! read by the policy. No I/O here.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::discovery::Nat64Prefix;

/// One IPv6 address on a link, with the flags the policy cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V6Addr {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// `IFA_F_TENTATIVE`: DAD has not finished; the address cannot be used yet.
    pub tentative: bool,
    /// `IFA_F_DADFAILED`.
    pub dad_failed: bool,
    /// `IFA_F_DEPRECATED`: preferred lifetime ran out.
    pub deprecated: bool,
    /// `IFA_F_TEMPORARY`: an RFC 8981 privacy address.
    pub temporary: bool,
    /// RT_SCOPE_UNIVERSE and not link-local / ULA? — global scope as the kernel reports it.
    pub global: bool,
}

/// One IPv4 address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Addr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// RT_SCOPE_UNIVERSE (not host or link scope).
    pub global: bool,
}

/// A PREF64 (RFC 8781) learnt from a router advertisement on this link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearntPref64 {
    pub prefix: Nat64Prefix,
    /// When the advertised lifetime runs out.
    pub expires: Instant,
}

/// A recursive DNS server (RFC 8106 RDNSS) learnt from a router advertisement on this link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearntRdnss {
    pub server: Ipv6Addr,
    pub expires: Instant,
}

/// Everything known about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub ifindex: u32,
    pub name: String,
    /// IFF_UP: administratively up.
    pub admin_up: bool,
    /// IFF_LOWER_UP / oper state up: carrier present.
    pub carrier: bool,
    pub loopback: bool,
    pub mtu: u32,
    /// IFLA_IFALIAS; ours carry `autoclat:<uplink>`.
    pub alias: Option<String>,
    /// Link kind from IFLA_LINKINFO (e.g. "veth", "bridge", "tun"), if any.
    pub kind: Option<String>,
    pub v6_addrs: Vec<V6Addr>,
    pub v4_addrs: Vec<V4Addr>,
    /// An IPv6 default route (`::/0`) leaves through this link (main table).
    pub v6_default_route: bool,
    /// An IPv4 default route (`0.0.0.0/0`) leaves through this link (main table).
    pub v4_default_route: bool,
    pub pref64: Option<LearntPref64>,
    pub rdnss: Vec<LearntRdnss>,
}

impl Uplink {
    /// A fresh, empty record for a link.
    pub fn new(ifindex: u32, name: impl Into<String>) -> Self {
        Self {
            ifindex,
            name: name.into(),
            admin_up: false,
            carrier: false,
            loopback: false,
            mtu: 1500,
            alias: None,
            kind: None,
            v6_addrs: Vec::new(),
            v4_addrs: Vec::new(),
            v6_default_route: false,
            v4_default_route: false,
            pref64: None,
            rdnss: Vec::new(),
        }
    }

    /// Whether this interface is a CLAT interface made by autoclat (alias `autoclat:*`).
    pub fn is_ours(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.starts_with("autoclat:"))
    }
}

/// All links of the host, by interface index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub links: BTreeMap<u32, Uplink>,
}

impl Inventory {
    /// The link with that name, if known.
    pub fn by_name(&self, name: &str) -> Option<&Uplink> {
        self.links.values().find(|l| l.name == name)
    }

    /// Whether the host has an IPv4 default route through a link that is not one of our CLAT
    /// interfaces ("native IPv4" for `ipv4_check = "host"`).
    pub fn has_native_v4_default(&self) -> bool {
        self.links
            .values()
            .any(|l| l.v4_default_route && !l.is_ours())
    }

    /// Every IPv4 address in use on the host (to choose a free CLAT address).
    pub fn v4_addresses_in_use(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.links
            .values()
            .flat_map(|l| l.v4_addrs.iter().map(|a| a.addr))
    }
}
