//! The host's network state as the watcher knows it: pure data, updated from netlink messages,
//! read by the policy. No I/O here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::discovery::ndopt::{NdUserOpt, RaOption};
use crate::nat64::Nat64Prefix;

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
    /// The router that advertised it (the RA's source address), when the kernel tells.
    pub router: Option<Ipv6Addr>,
    /// When it was last advertised.
    pub learnt: Instant,
}

/// At most this many routers' PREF64s are kept per link (the one whose lifetime ends first
/// makes room): a LAN device sending RAs from many source addresses cannot grow it.
pub const MAX_PREF64_ROUTERS: usize = 4;

/// At most this many (prefix, router) pairs learnt from RAs are kept per link.
pub const MAX_PREFIX_ROUTERS: usize = 16;

/// A /64 a router advertised on this link (a prefix information option), for RFC 6724 rule
/// 5.5: prefer the prefix advertised by the next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearntPrefix {
    pub net: Ipv6Addr,
    pub router: Ipv6Addr,
    pub expires: Instant,
}

/// At most this many RDNSS servers are kept per link (RFC 8106 §5.3.1 asks a client to keep at
/// least three; the one whose lifetime ends first makes room for a new one).
pub const MAX_RDNSS: usize = 8;

/// A recursive DNS server (RFC 8106 RDNSS) learnt from a router advertisement on this link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearntRdnss {
    pub server: Ipv6Addr,
    pub expires: Instant,
}

/// Link kinds (`IFLA_INFO_KIND`) of tunnels: an IPv4 default route through one of them is a
/// VPN or tunnel whose transport may well run over the CLAT, so it is never native IPv4 (README
/// "Native IPv4, VPNs and tunnels"). `tun` covers tun and tap devices (OpenVPN, wireguard-go…).
pub const TUNNEL_KINDS: [&str; 15] = [
    "tun",
    "wireguard",
    "ipip",
    "gre",
    "gretap",
    "sit",
    "vti",
    "vti6",
    "ip6tnl",
    "ip6gre",
    "ip6gretap",
    "xfrm",
    "ipsec",
    "ovpn",
    "ovpn-dco",
];

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
    /// The IPv6 MTU (`net.ipv6.conf.<link>.mtu`, which an RA's MTU option sets), when the link
    /// has IPv6.
    pub v6_mtu: Option<u32>,
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
    /// The main-table default routes (one entry per next hop) leaving through this link; the two
    /// flags above are derived from it whenever a route event touches this link.
    pub default_routes: Vec<DefaultRoute>,
    /// PREF64s learnt from router advertisements, one per advertising router (at most
    /// [`MAX_PREF64_ROUTERS`]); [`Uplink::pref64`] says which one counts.
    pub pref64s: Vec<LearntPref64>,
    /// At most [`MAX_RDNSS`] servers, each with its own lifetime.
    pub rdnss: Vec<LearntRdnss>,
    /// Which router advertised which /64 (from the RAs the daemon reads itself), at most
    /// [`MAX_PREFIX_ROUTERS`].
    pub prefix_routers: Vec<LearntPrefix>,
    /// The main table's on-link IPv6 /64 routes through this link (no gateway: the RA's
    /// on-link prefixes and the kernel's prefix routes of addresses), one entry per route.
    pub onlink_v6: Vec<OnLinkRoute>,
    /// The last PREF64 refused on this link and why (logged once per new value).
    pub pref64_refused: Option<String>,
    /// How many IPv4 addresses, and IPv4 default routes, have appeared on this link since the
    /// watcher first saw it: the core tells "put back, seen, and deleted again before it
    /// looked" (`ip addr flush` deletes in rounds) from "put back, event still on its way".
    pub v4_addr_arrivals: u64,
    pub v4_route_arrivals: u64,
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
            v6_mtu: None,
            alias: None,
            kind: None,
            v6_addrs: Vec::new(),
            v4_addrs: Vec::new(),
            v6_default_route: false,
            v4_default_route: false,
            default_routes: Vec::new(),
            pref64s: Vec::new(),
            rdnss: Vec::new(),
            onlink_v6: Vec::new(),
            prefix_routers: Vec::new(),
            pref64_refused: None,
            v4_addr_arrivals: 0,
            v4_route_arrivals: 0,
        }
    }

    /// The PREF64 that counts on this link (RFC 9872: the default gateway's): the one advertised
    /// by the gateway of the best IPv6 default route through the link, else by any other
    /// gateway of it, else the most recently advertised one.
    pub fn pref64(&self) -> Option<&LearntPref64> {
        self.v6_gateways()
            .iter()
            .find_map(|g| self.pref64s.iter().find(|p| p.router == Some(*g)))
            .or_else(|| self.pref64s.iter().max_by_key(|p| p.learnt))
    }

    /// The gateways of the link's IPv6 default routes, best metric first.
    pub fn v6_gateways(&self) -> Vec<Ipv6Addr> {
        let mut gateways: Vec<(u32, Ipv6Addr)> = self
            .default_routes
            .iter()
            .filter(|r| r.family == Family::V6)
            .filter_map(|r| match r.gateway {
                Some(IpAddr::V6(g)) => Some((r.metric, g)),
                _ => None,
            })
            .collect();
        gateways.sort();
        gateways.into_iter().map(|(_, g)| g).collect()
    }

    /// Whether the /64 `net` was advertised by one of the link's IPv6 default gateways.
    pub fn advertised_by_gateway(&self, net: Ipv6Addr) -> bool {
        let gateways = self.v6_gateways();
        self.prefix_routers
            .iter()
            .any(|p| p.net == net && gateways.contains(&p.router))
    }

    /// The link's own IPv6 prefixes, as `(address, prefix length)`.
    pub fn own_v6_prefixes(&self) -> impl Iterator<Item = (Ipv6Addr, u8)> + '_ {
        self.v6_addrs
            .iter()
            .filter(|a| a.global)
            .map(|a| (a.addr, a.prefix_len))
    }

    /// Whether this interface is a tunnel (its kind is one of [`TUNNEL_KINDS`]).
    pub fn is_tunnel(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|k| TUNNEL_KINDS.contains(&k))
    }

    /// The distinct on-link /64 networks of this link, in the order their routes appeared.
    pub fn onlink_v6_nets(&self) -> Vec<Ipv6Addr> {
        let mut nets: Vec<Ipv6Addr> = Vec::new();
        for r in &self.onlink_v6 {
            if !nets.contains(&r.net) {
                nets.push(r.net);
            }
        }
        nets
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

    /// Whether the host has an IPv4 default route through a link that is neither one of our
    /// CLAT interfaces nor a tunnel ("native IPv4" for `ipv4_check = "host"`).
    pub fn has_native_v4_default(&self) -> bool {
        self.links
            .values()
            .any(|l| l.v4_default_route && !l.is_ours() && !l.is_tunnel())
    }

    /// Every IPv4 address in use on the host (to choose a free CLAT address).
    pub fn v4_addresses_in_use(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.links
            .values()
            .flat_map(|l| l.v4_addrs.iter().map(|a| a.addr))
    }
}

/// The address family of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

/// One next hop of a main-table default route (`0.0.0.0/0` or `::/0`): a multipath route gives
/// one entry per next hop. Whole-value equality identifies it, because the kernel's
/// `RTM_DELROUTE` carries the same attributes as the `RTM_NEWROUTE` that created it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DefaultRoute {
    pub family: Family,
    /// Outgoing interface of this next hop.
    pub oif: u32,
    pub gateway: Option<IpAddr>,
    /// `RTA_PRIORITY` (0 when absent).
    pub metric: u32,
    /// `RTA_PREFSRC`: the kernel silently drops IPv4 routes whose preferred source goes away.
    pub pref_src: Option<IpAddr>,
}

/// A main-table IPv6 route to a /64 without a gateway (`2001:db8:1::/64 dev eth0 proto ra`):
/// that /64 is on the link. Whole-value equality identifies it, as for [`DefaultRoute`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OnLinkRoute {
    /// Outgoing interface.
    pub oif: u32,
    /// The /64 network (host bits zero).
    pub net: Ipv6Addr,
    /// `RTA_PRIORITY` (0 when absent).
    pub metric: u32,
}

/// The link-level facts of one `RTM_NEWLINK`: everything except addresses, routes and RA options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    pub admin_up: bool,
    pub carrier: bool,
    pub loopback: bool,
    pub mtu: u32,
    /// DEVCONF_MTU6 from the link's IPv6 attributes, when it has IPv6.
    pub v6_mtu: Option<u32>,
    pub alias: Option<String>,
    pub kind: Option<String>,
}

/// An address appearing, changing (same address, new flags) or going away on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrChange {
    V6(V6Addr),
    V6Gone { addr: Ipv6Addr, prefix_len: u8 },
    V4(V4Addr),
    V4Gone { addr: Ipv4Addr, prefix_len: u8 },
}

/// One thing the watcher learnt. Applying the events in the order the kernel sent them, on top
/// of the last [`NetEvent::Resync`], reproduces the kernel's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A link appeared or changed (`RTM_NEWLINK`).
    Link(LinkInfo),
    /// A link went away (`RTM_DELLINK`), by index.
    LinkGone(u32),
    /// The IPv6 MTU of a link changed (an `AF_INET6` `RTM_NEWLINK`, which the kernel sends
    /// when an RA's MTU option changes it).
    V6Mtu { ifindex: u32, mtu: u32 },
    /// An address appeared, changed or went away (`RTM_NEWADDR` / `RTM_DELADDR`).
    Addr { ifindex: u32, change: AddrChange },
    /// Default-route next hops appeared (`RTM_NEWROUTE`). With `replace` (`NLM_F_REPLACE`), the
    /// routes of the same family and metric that were there before are gone.
    Route {
        routes: Vec<DefaultRoute>,
        replace: bool,
    },
    /// Default-route next hops went away (`RTM_DELROUTE`).
    RouteGone(Vec<DefaultRoute>),
    /// An on-link IPv6 /64 route appeared (`RTM_NEWROUTE`). With `replace`, a route to the same
    /// /64 with the same metric that was there before (on any link) is gone.
    OnLink { route: OnLinkRoute, replace: bool },
    /// An on-link IPv6 /64 route went away (`RTM_DELROUTE`).
    OnLinkGone(OnLinkRoute),
    /// Options of one router advertisement (`RTM_NEWNDUSEROPT`).
    RaOptions(NdUserOpt),
    /// The /64 prefix information options of one RA, read by the daemon itself.
    RaPrefixes {
        ifindex: u32,
        router: Ipv6Addr,
        prefixes: Vec<crate::discovery::ndopt::RaPrefix>,
    },
    /// A full dump (at start and after a netlink overrun). What was learnt from router
    /// advertisements cannot be dumped, so it is carried over for links that still exist.
    Resync(Inventory),
}

/// `now + lifetime`, saturating far in the future instead of overflowing `Instant`.
fn deadline(now: Instant, lifetime: std::time::Duration) -> Instant {
    now.checked_add(lifetime)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(u64::from(u32::MAX))))
        .unwrap_or(now)
}

impl Uplink {
    /// Recompute the two default-route flags from `default_routes`.
    fn refresh_route_flags(&mut self) {
        self.v4_default_route = self.default_routes.iter().any(|r| r.family == Family::V4);
        self.v6_default_route = self.default_routes.iter().any(|r| r.family == Family::V6);
    }

    fn set_link_info(&mut self, info: LinkInfo) {
        let LinkInfo {
            ifindex,
            name,
            admin_up,
            carrier,
            loopback,
            mtu,
            v6_mtu,
            alias,
            kind,
        } = info;
        self.ifindex = ifindex;
        self.name = name;
        self.admin_up = admin_up;
        self.carrier = carrier;
        self.loopback = loopback;
        self.mtu = mtu;
        self.v6_mtu = v6_mtu;
        self.alias = alias;
        self.kind = kind;
    }
}

impl Inventory {
    /// Apply one event; returns whether anything changed.
    pub fn apply(&mut self, ev: NetEvent, now: Instant) -> bool {
        match ev {
            NetEvent::Link(info) => self.apply_link(info),
            NetEvent::LinkGone(ifindex) => self.links.remove(&ifindex).is_some(),
            NetEvent::V6Mtu { ifindex, mtu } => match self.links.get_mut(&ifindex) {
                Some(l) if l.v6_mtu != Some(mtu) => {
                    l.v6_mtu = Some(mtu);
                    true
                }
                _ => false,
            },
            NetEvent::Addr { ifindex, change } => self.apply_addr(ifindex, change),
            NetEvent::Route { routes, replace } => self.apply_routes(routes, replace),
            NetEvent::RouteGone(routes) => self.remove_routes(&routes),
            NetEvent::OnLink { route, replace } => self.apply_onlink(route, replace),
            NetEvent::OnLinkGone(route) => self.remove_onlink(&route),
            NetEvent::RaOptions(opt) => self.apply_ra(opt, now),
            NetEvent::RaPrefixes {
                ifindex,
                router,
                prefixes,
            } => self.apply_ra_prefixes(ifindex, router, &prefixes, now),
            NetEvent::Resync(fresh) => self.resync(fresh),
        }
    }

    fn apply_link(&mut self, info: LinkInfo) -> bool {
        let ifindex = info.ifindex;
        let link = self
            .links
            .entry(ifindex)
            .or_insert_with(|| Uplink::new(ifindex, info.name.clone()));
        let before = link.clone();
        let down = !info.admin_up;
        link.set_link_info(info);
        if down {
            // The kernel flushes IPv4 routes through a link that goes down without telling
            // anyone (IPv6 sends RTM_DELROUTE).
            retain_routes(link, |r| r.family != Family::V4);
        }
        *link != before
    }

    fn apply_addr(&mut self, ifindex: u32, change: AddrChange) -> bool {
        // An address for a link we do not know yet: the RTM_NEWLINK is still queued behind it
        // (or the link is already gone); the events that follow will bring it.
        let Some(link) = self.links.get_mut(&ifindex) else {
            return false;
        };
        match change {
            AddrChange::V6(a) => upsert(&mut link.v6_addrs, a, |x, a| {
                x.addr == a.addr && x.prefix_len == a.prefix_len
            }),
            AddrChange::V6Gone { addr, prefix_len } => {
                let n = link.v6_addrs.len();
                link.v6_addrs
                    .retain(|x| !(x.addr == addr && x.prefix_len == prefix_len));
                link.v6_addrs.len() != n
            }
            AddrChange::V4(a) => {
                let new = !link
                    .v4_addrs
                    .iter()
                    .any(|x| x.addr == a.addr && x.prefix_len == a.prefix_len);
                if new {
                    link.v4_addr_arrivals += 1;
                }
                upsert(&mut link.v4_addrs, a, |x, a| {
                    x.addr == a.addr && x.prefix_len == a.prefix_len
                })
            }
            AddrChange::V4Gone { addr, prefix_len } => {
                let n = link.v4_addrs.len();
                link.v4_addrs
                    .retain(|x| !(x.addr == addr && x.prefix_len == prefix_len));
                let mut changed = link.v4_addrs.len() != n;
                // The kernel silently flushes IPv4 routes when their link loses its last IPv4
                // address, and anywhere when their preferred source is no longer on the host.
                if link.v4_addrs.is_empty() {
                    changed |= retain_routes(link, |r| r.family != Family::V4);
                }
                let still_local = self.v4_addresses_in_use().any(|a| a == addr);
                if !still_local {
                    let gone = Some(IpAddr::V4(addr));
                    for l in self.links.values_mut() {
                        changed |= retain_routes(l, |r| r.pref_src != gone);
                    }
                }
                changed
            }
        }
    }

    fn apply_routes(&mut self, routes: Vec<DefaultRoute>, replace: bool) -> bool {
        let mut changed = false;
        if replace {
            for r in &routes {
                for l in self.links.values_mut() {
                    changed |=
                        retain_routes(l, |x| !(x.family == r.family && x.metric == r.metric));
                }
            }
        }
        for r in routes {
            if let Some(link) = self.links.get_mut(&r.oif) {
                if !link.default_routes.contains(&r) {
                    if r.family == Family::V4 {
                        link.v4_route_arrivals += 1;
                    }
                    link.default_routes.push(r);
                    link.refresh_route_flags();
                    changed = true;
                }
            }
        }
        changed
    }

    fn remove_routes(&mut self, routes: &[DefaultRoute]) -> bool {
        let mut changed = false;
        for r in routes {
            if let Some(link) = self.links.get_mut(&r.oif) {
                changed |= retain_routes(link, |x| x != r);
            }
        }
        changed
    }

    fn apply_onlink(&mut self, route: OnLinkRoute, replace: bool) -> bool {
        let mut changed = false;
        if replace {
            for l in self.links.values_mut() {
                let n = l.onlink_v6.len();
                l.onlink_v6
                    .retain(|x| !(x.net == route.net && x.metric == route.metric));
                changed |= l.onlink_v6.len() != n;
            }
        }
        if let Some(link) = self.links.get_mut(&route.oif) {
            if !link.onlink_v6.contains(&route) {
                link.onlink_v6.push(route);
                changed = true;
            }
        }
        changed
    }

    fn remove_onlink(&mut self, route: &OnLinkRoute) -> bool {
        let Some(link) = self.links.get_mut(&route.oif) else {
            return false;
        };
        let n = link.onlink_v6.len();
        link.onlink_v6.retain(|x| x != route);
        link.onlink_v6.len() != n
    }

    fn apply_ra(&mut self, opt: NdUserOpt, now: Instant) -> bool {
        // 134: router advertisement; the kernel forwards options of nothing else today.
        if opt.icmp_type != 134 {
            return false;
        }
        let Some(link) = self.links.get_mut(&opt.ifindex) else {
            return false;
        };
        let before = (link.pref64s.clone(), link.rdnss.clone());
        for o in opt.options {
            match o {
                RaOption::Pref64 { prefix, lifetime } if lifetime.is_zero() => {
                    link.pref64s
                        .retain(|p| !(p.prefix == prefix && p.router == opt.source));
                }
                RaOption::Pref64 { prefix, lifetime } => {
                    if let Err(e) = prefix.check_for_uplink(link.own_v6_prefixes()) {
                        let why = e.to_string();
                        if link.pref64_refused.as_ref() != Some(&why) {
                            tracing::warn!(
                                uplink = %link.name,
                                router = ?opt.source,
                                "PREF64 refused: {why}"
                            );
                            link.pref64_refused = Some(why);
                        }
                        continue;
                    }
                    let learnt = LearntPref64 {
                        prefix,
                        expires: deadline(now, lifetime),
                        router: opt.source,
                        learnt: now,
                    };
                    if let Some(p) = link.pref64s.iter_mut().find(|p| p.router == opt.source) {
                        *p = learnt;
                    } else {
                        make_room(&mut link.pref64s, MAX_PREF64_ROUTERS, |p| p.expires);
                        link.pref64s.push(learnt);
                    }
                }
                RaOption::Rdnss { servers, lifetime } => {
                    let expires = deadline(now, lifetime);
                    for server in servers {
                        if lifetime.is_zero() {
                            link.rdnss.retain(|r| r.server != server);
                        } else if let Some(r) = link.rdnss.iter_mut().find(|r| r.server == server) {
                            r.expires = expires;
                        } else {
                            make_room(&mut link.rdnss, MAX_RDNSS, |r| r.expires);
                            link.rdnss.push(LearntRdnss { server, expires });
                        }
                    }
                }
                RaOption::Other { .. } => {}
            }
        }
        before != (link.pref64s.clone(), link.rdnss.clone())
    }

    fn apply_ra_prefixes(
        &mut self,
        ifindex: u32,
        router: Ipv6Addr,
        prefixes: &[crate::discovery::ndopt::RaPrefix],
        now: Instant,
    ) -> bool {
        let Some(link) = self.links.get_mut(&ifindex) else {
            return false;
        };
        let before = link.prefix_routers.clone();
        for p in prefixes.iter().filter(|p| p.len == 64) {
            let seg0 = p.prefix.segments()[0];
            if seg0 & 0xffc0 == 0xfe80 || seg0 & 0xff00 == 0xff00 {
                continue;
            }
            if p.valid.is_zero() {
                link.prefix_routers
                    .retain(|x| !(x.net == p.prefix && x.router == router));
                continue;
            }
            let expires = deadline(now, p.valid);
            if let Some(x) = link
                .prefix_routers
                .iter_mut()
                .find(|x| x.net == p.prefix && x.router == router)
            {
                x.expires = expires;
            } else {
                make_room(&mut link.prefix_routers, MAX_PREFIX_ROUTERS, |x| x.expires);
                link.prefix_routers.push(LearntPrefix {
                    net: p.prefix,
                    router,
                    expires,
                });
            }
        }
        // Only which router has which prefix matters, not each refreshed lifetime.
        let key = |v: &[LearntPrefix]| {
            let mut k: Vec<(Ipv6Addr, Ipv6Addr)> = v.iter().map(|x| (x.net, x.router)).collect();
            k.sort();
            k
        };
        key(&before) != key(&link.prefix_routers)
    }

    fn resync(&mut self, mut fresh: Inventory) -> bool {
        for (ifindex, link) in fresh.links.iter_mut() {
            if let Some(old) = self.links.get(ifindex) {
                link.pref64s.clone_from(&old.pref64s);
                link.rdnss.clone_from(&old.rdnss);
                link.prefix_routers.clone_from(&old.prefix_routers);
                link.pref64_refused.clone_from(&old.pref64_refused);
                link.v4_addr_arrivals = old.v4_addr_arrivals;
                link.v4_route_arrivals = old.v4_route_arrivals;
            }
        }
        let changed = *self != fresh;
        *self = fresh;
        changed
    }

    /// Drop PREF64 and RDNSS entries whose lifetime has run out; returns whether any did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for link in self.links.values_mut() {
            let n = link.pref64s.len();
            link.pref64s.retain(|p| p.expires > now);
            changed |= link.pref64s.len() != n;
            let n = link.rdnss.len();
            link.rdnss.retain(|r| r.expires > now);
            changed |= link.rdnss.len() != n;
            let n = link.prefix_routers.len();
            link.prefix_routers.retain(|p| p.expires > now);
            changed |= link.prefix_routers.len() != n;
        }
        changed
    }

    /// The earliest moment [`Inventory::expire`] has something to do.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.links
            .values()
            .flat_map(|l| {
                l.pref64s
                    .iter()
                    .map(|p| p.expires)
                    .chain(l.rdnss.iter().map(|r| r.expires))
                    .chain(l.prefix_routers.iter().map(|p| p.expires))
            })
            .min()
    }
}

/// With `list` at `cap` entries, drop the one whose lifetime ends first (linear).
fn make_room<T>(list: &mut Vec<T>, cap: usize, expires: impl Fn(&T) -> Instant) {
    while list.len() >= cap.max(1) {
        let Some(first) = (0..list.len()).min_by_key(|i| expires(&list[*i])) else {
            return;
        };
        list.swap_remove(first);
    }
}

/// Keep the link's default routes for which `keep` holds; returns whether any went away.
fn retain_routes(link: &mut Uplink, keep: impl Fn(&DefaultRoute) -> bool) -> bool {
    let n = link.default_routes.len();
    link.default_routes.retain(|r| keep(r));
    link.refresh_route_flags();
    link.default_routes.len() != n
}

/// Replace the entry that `same` matches with `item`, or append it. Whether anything changed.
fn upsert<T: PartialEq>(list: &mut Vec<T>, item: T, same: impl Fn(&T, &T) -> bool) -> bool {
    match list.iter_mut().find(|x| same(x, &item)) {
        Some(x) if *x == item => false,
        Some(x) => {
            *x = item;
            true
        }
        None => {
            list.push(item);
            true
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn link(ifindex: u32, name: &str) -> LinkInfo {
        LinkInfo {
            ifindex,
            name: name.into(),
            admin_up: true,
            carrier: true,
            loopback: false,
            mtu: 1500,
            v6_mtu: None,
            alias: None,
            kind: Some("veth".into()),
        }
    }

    fn route(family: Family, oif: u32, gw: &str, metric: u32) -> DefaultRoute {
        DefaultRoute {
            family,
            oif,
            gateway: Some(gw.parse().unwrap()),
            metric,
            pref_src: None,
        }
    }

    fn v4(addr: [u8; 4]) -> AddrChange {
        AddrChange::V4(V4Addr {
            addr: addr.into(),
            prefix_len: 24,
            global: true,
        })
    }

    fn ra(ifindex: u32, options: Vec<RaOption>) -> NetEvent {
        NetEvent::RaOptions(NdUserOpt {
            ifindex,
            icmp_type: 134,
            source: Some("fe80::1".parse().unwrap()),
            options,
        })
    }

    fn pref64(p: &str, secs: u64) -> RaOption {
        RaOption::Pref64 {
            prefix: p.parse().unwrap(),
            lifetime: Duration::from_secs(secs),
        }
    }

    fn rdnss(servers: &[&str], secs: u64) -> RaOption {
        RaOption::Rdnss {
            servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            lifetime: Duration::from_secs(secs),
        }
    }

    fn with_link() -> Inventory {
        let mut inv = Inventory::default();
        assert!(inv.apply(NetEvent::Link(link(2, "eth0")), Instant::now()));
        inv
    }

    #[test]
    fn link_update_keeps_addresses_and_routes_and_is_idempotent() {
        let now = Instant::now();
        let mut inv = with_link();
        inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: v4([198, 51, 100, 2]),
            },
            now,
        );
        inv.apply(
            NetEvent::Route {
                routes: vec![route(Family::V6, 2, "fe80::1", 1024)],
                replace: false,
            },
            now,
        );
        let mut l = link(2, "uplink0");
        l.mtu = 1400;
        assert!(inv.apply(NetEvent::Link(l.clone()), now));
        assert!(
            !inv.apply(NetEvent::Link(l), now),
            "same state again is no change"
        );
        let u = &inv.links[&2];
        assert_eq!((u.name.as_str(), u.mtu), ("uplink0", 1400));
        assert_eq!(u.v4_addrs.len(), 1);
        assert!(u.v6_default_route);
    }

    #[test]
    fn admin_down_flushes_ipv4_routes_only() {
        let now = Instant::now();
        let mut inv = with_link();
        inv.apply(
            NetEvent::Route {
                routes: vec![
                    route(Family::V4, 2, "198.51.100.1", 0),
                    route(Family::V6, 2, "fe80::1", 1024),
                ],
                replace: false,
            },
            now,
        );
        let mut l = link(2, "eth0");
        l.admin_up = false;
        assert!(inv.apply(NetEvent::Link(l), now));
        assert!(!inv.links[&2].v4_default_route);
        assert!(inv.links[&2].v6_default_route);
    }

    #[test]
    fn one_of_two_default_routes_going_keeps_the_flag() {
        let now = Instant::now();
        let mut inv = with_link();
        let a = route(Family::V6, 2, "fe80::1", 1024);
        let b = route(Family::V6, 2, "fe80::2", 1024);
        inv.apply(
            NetEvent::Route {
                routes: vec![a.clone(), b.clone()],
                replace: false,
            },
            now,
        );
        assert!(inv.apply(NetEvent::RouteGone(vec![a.clone()]), now));
        assert!(inv.links[&2].v6_default_route);
        assert!(
            !inv.apply(NetEvent::RouteGone(vec![a]), now),
            "already gone"
        );
        assert!(inv.apply(NetEvent::RouteGone(vec![b]), now));
        assert!(!inv.links[&2].v6_default_route);
    }

    #[test]
    fn replace_moves_the_route_between_links() {
        let now = Instant::now();
        let mut inv = with_link();
        inv.apply(NetEvent::Link(link(3, "eth1")), now);
        inv.apply(
            NetEvent::Route {
                routes: vec![route(Family::V4, 2, "198.51.100.1", 0)],
                replace: false,
            },
            now,
        );
        inv.apply(
            NetEvent::Route {
                routes: vec![route(Family::V4, 3, "203.0.113.1", 0)],
                replace: true,
            },
            now,
        );
        assert!(!inv.links[&2].v4_default_route);
        assert!(inv.links[&3].v4_default_route);
    }

    #[test]
    fn losing_the_last_ipv4_address_or_the_preferred_source_flushes_ipv4_routes() {
        let now = Instant::now();
        let mut inv = with_link();
        inv.apply(NetEvent::Link(link(3, "eth1")), now);
        inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: v4([198, 51, 100, 2]),
            },
            now,
        );
        inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: v4([198, 51, 100, 3]),
            },
            now,
        );
        inv.apply(
            NetEvent::Addr {
                ifindex: 3,
                change: v4([203, 0, 113, 2]),
            },
            now,
        );
        let mut via_src = route(Family::V4, 3, "203.0.113.1", 10);
        via_src.pref_src = Some("198.51.100.3".parse().unwrap());
        inv.apply(
            NetEvent::Route {
                routes: vec![route(Family::V4, 2, "198.51.100.1", 0), via_src],
                replace: false,
            },
            now,
        );
        // 198.51.100.3 was eth1's route's preferred source: that route goes.
        let gone3 = AddrChange::V4Gone {
            addr: [198, 51, 100, 3].into(),
            prefix_len: 24,
        };
        assert!(inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: gone3
            },
            now
        ));
        assert!(!inv.links[&3].v4_default_route);
        assert!(inv.links[&2].v4_default_route, "eth0 still has an address");
        let gone2 = AddrChange::V4Gone {
            addr: [198, 51, 100, 2].into(),
            prefix_len: 24,
        };
        assert!(inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: gone2
            },
            now
        ));
        assert!(!inv.links[&2].v4_default_route);
    }

    fn onlink(oif: u32, net: &str, metric: u32) -> OnLinkRoute {
        OnLinkRoute {
            oif,
            net: net.parse().unwrap(),
            metric,
        }
    }

    #[test]
    fn onlink_routes_added_replaced_and_removed() {
        let now = Instant::now();
        let mut inv = with_link();
        inv.apply(NetEvent::Link(link(3, "eth1")), now);
        let ra = onlink(2, "2001:db8:1::", 256);
        let kernel = onlink(2, "2001:db8:1::", 1024);
        let add = |r: &OnLinkRoute, replace| NetEvent::OnLink {
            route: r.clone(),
            replace,
        };
        assert!(inv.apply(add(&ra, false), now));
        assert!(!inv.apply(add(&ra, false), now), "same route again");
        assert!(inv.apply(add(&kernel, false), now));
        assert_eq!(
            inv.links[&2].onlink_v6_nets(),
            vec!["2001:db8:1::".parse::<Ipv6Addr>().unwrap()],
            "one /64 however many routes"
        );
        // One of two routes to the /64 going leaves the /64 on the link.
        assert!(inv.apply(NetEvent::OnLinkGone(ra.clone()), now));
        assert_eq!(inv.links[&2].onlink_v6_nets().len(), 1);
        assert!(!inv.apply(NetEvent::OnLinkGone(ra), now), "already gone");
        // A replace moves it to eth1.
        assert!(inv.apply(add(&onlink(3, "2001:db8:1::", 1024), true), now));
        assert!(inv.links[&2].onlink_v6.is_empty());
        assert_eq!(inv.links[&3].onlink_v6.len(), 1);
        // Unknown links are ignored; a link going takes its routes.
        assert!(!inv.apply(add(&onlink(9, "2001:db8:2::", 256), false), now));
        assert!(inv.apply(NetEvent::LinkGone(3), now));
        assert!(inv.links.values().all(|l| l.onlink_v6.is_empty()));
    }

    #[test]
    fn events_for_unknown_links_are_ignored() {
        let now = Instant::now();
        let mut inv = Inventory::default();
        assert!(!inv.apply(
            NetEvent::Addr {
                ifindex: 9,
                change: v4([192, 0, 2, 1])
            },
            now
        ));
        assert!(!inv.apply(
            NetEvent::Route {
                routes: vec![route(Family::V4, 9, "192.0.2.254", 0)],
                replace: false
            },
            now
        ));
        assert!(!inv.apply(ra(9, vec![pref64("64:ff9b::/96", 600)]), now));
        assert!(!inv.apply(NetEvent::LinkGone(9), now));
        assert!(inv.links.is_empty());
    }

    #[test]
    fn v6_address_flags_update_in_place() {
        let now = Instant::now();
        let mut inv = with_link();
        let mut a = V6Addr {
            addr: "2001:db8:1::5".parse().unwrap(),
            prefix_len: 64,
            tentative: true,
            dad_failed: false,
            deprecated: false,
            temporary: false,
            global: true,
        };
        inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: AddrChange::V6(a.clone()),
            },
            now,
        );
        a.tentative = false;
        assert!(inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: AddrChange::V6(a.clone())
            },
            now
        ));
        assert_eq!(inv.links[&2].v6_addrs, vec![a.clone()]);
        let gone = AddrChange::V6Gone {
            addr: a.addr,
            prefix_len: 64,
        };
        assert!(inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: gone
            },
            now
        ));
        assert!(inv.links[&2].v6_addrs.is_empty());
    }

    #[test]
    fn pref64_learnt_refreshed_withdrawn_and_expired() {
        let t0 = Instant::now();
        let mut inv = with_link();
        assert!(inv.apply(ra(2, vec![pref64("2001:db8:64::/96", 600)]), t0));
        let p = inv.links[&2].pref64().cloned().unwrap();
        assert_eq!(p.prefix.to_string(), "2001:db8:64::/96");
        assert_eq!(p.expires, t0 + Duration::from_secs(600));
        assert_eq!(inv.next_expiry(), Some(t0 + Duration::from_secs(600)));

        // A withdrawal of another prefix leaves ours alone; of ours removes it.
        assert!(!inv.apply(ra(2, vec![pref64("64:ff9b::/96", 0)]), t0));
        assert!(inv.apply(ra(2, vec![pref64("2001:db8:64::/96", 0)]), t0));
        assert!(inv.links[&2].pref64().is_none());
        assert_eq!(inv.next_expiry(), None);

        // Refreshed by a later RA, then its lifetime runs out.
        inv.apply(ra(2, vec![pref64("2001:db8:64::/96", 600)]), t0);
        let t1 = t0 + Duration::from_secs(500);
        assert!(inv.apply(ra(2, vec![pref64("2001:db8:64::/96", 600)]), t1));
        assert!(!inv.expire(t0 + Duration::from_secs(600)));
        assert!(inv.expire(t1 + Duration::from_secs(600)));
        assert!(inv.links[&2].pref64().is_none());
    }

    #[test]
    fn rdnss_per_server_lifetimes() {
        let t0 = Instant::now();
        let mut inv = with_link();
        inv.apply(
            ra(2, vec![rdnss(&["2001:db8::53", "2001:db8::54"], 100)]),
            t0,
        );
        inv.apply(ra(2, vec![rdnss(&["2001:db8::54"], 300)]), t0);
        assert_eq!(inv.links[&2].rdnss.len(), 2);
        assert_eq!(inv.next_expiry(), Some(t0 + Duration::from_secs(100)));
        assert!(inv.expire(t0 + Duration::from_secs(100)));
        let left: Vec<_> = inv.links[&2]
            .rdnss
            .iter()
            .map(|r| r.server.to_string())
            .collect();
        assert_eq!(left, ["2001:db8::54"]);
        assert!(inv.apply(ra(2, vec![rdnss(&["2001:db8::54"], 0)]), t0));
        assert!(inv.links[&2].rdnss.is_empty());
        // An infinite lifetime (0xffffffff s) does not overflow.
        assert!(inv.apply(
            ra(2, vec![rdnss(&["2001:db8::55"], u64::from(u32::MAX))]),
            t0
        ));
    }

    fn ra_from(ifindex: u32, router: &str, options: Vec<RaOption>) -> NetEvent {
        NetEvent::RaOptions(NdUserOpt {
            ifindex,
            icmp_type: 134,
            source: Some(router.parse().unwrap()),
            options,
        })
    }

    /// Two routers on one link with different PREF64s: the default gateway's counts, whatever
    /// order their RAs come in; without a gateway route, the newest.
    #[test]
    fn the_default_gateways_pref64_counts() {
        let t0 = Instant::now();
        let mut inv = with_link();
        inv.apply(
            ra_from(2, "fe80::a", vec![pref64("2001:db8:a::/96", 600)]),
            t0,
        );
        let t1 = t0 + Duration::from_secs(1);
        inv.apply(
            ra_from(2, "fe80::b", vec![pref64("2001:db8:b::/96", 600)]),
            t1,
        );
        let counts = |inv: &Inventory| inv.links[&2].pref64().unwrap().prefix.to_string();
        assert_eq!(
            counts(&inv),
            "2001:db8:b::/96",
            "no gateway known: the newest"
        );
        inv.apply(
            NetEvent::Route {
                routes: vec![DefaultRoute {
                    family: Family::V6,
                    oif: 2,
                    gateway: Some("fe80::a".parse().unwrap()),
                    metric: 1024,
                    pref_src: None,
                }],
                replace: false,
            },
            t1,
        );
        assert_eq!(counts(&inv), "2001:db8:a::/96", "the default gateway's");
        let t2 = t1 + Duration::from_secs(1);
        inv.apply(
            ra_from(2, "fe80::b", vec![pref64("2001:db8:b::/96", 600)]),
            t2,
        );
        assert_eq!(counts(&inv), "2001:db8:a::/96", "still the gateway's");
        assert_eq!(inv.links[&2].pref64s.len(), 2);
    }

    /// RFC 6724 rule 5.5: which router advertised which /64, learnt from the RAs; a /64 counts
    /// as the gateway's only while its router is an IPv6 default gateway of the link.
    #[test]
    fn prefixes_are_associated_with_the_router_that_advertised_them() {
        use crate::discovery::ndopt::RaPrefix;
        let t0 = Instant::now();
        let mut inv = with_link();
        let pio = |p: &str, valid: u64| RaPrefix {
            prefix: p.parse().unwrap(),
            len: 64,
            on_link: true,
            autonomous: true,
            valid: Duration::from_secs(valid),
            preferred: Duration::from_secs(valid),
        };
        let a: Ipv6Addr = "fe80::a".parse().unwrap();
        let b: Ipv6Addr = "fe80::b".parse().unwrap();
        let ev = |router, p: &str, valid| NetEvent::RaPrefixes {
            ifindex: 2,
            router,
            prefixes: vec![
                pio(p, valid),
                RaPrefix {
                    len: 48,
                    ..pio("2001:db8:9::", 600)
                },
            ],
        };
        assert!(inv.apply(ev(a, "2001:db8:1::", 600), t0));
        assert!(inv.apply(ev(b, "2001:db8:2::", 600), t0));
        assert!(
            !inv.apply(ev(b, "2001:db8:2::", 900), t0),
            "a refresh is no change"
        );
        assert_eq!(inv.links[&2].prefix_routers.len(), 2, "only /64s");
        let l = &inv.links[&2];
        assert!(!l.advertised_by_gateway("2001:db8:1::".parse().unwrap()));
        inv.apply(
            NetEvent::Route {
                routes: vec![DefaultRoute {
                    family: Family::V6,
                    oif: 2,
                    gateway: Some(IpAddr::V6(a)),
                    metric: 1024,
                    pref_src: None,
                }],
                replace: false,
            },
            t0,
        );
        let l = &inv.links[&2];
        assert!(l.advertised_by_gateway("2001:db8:1::".parse().unwrap()));
        assert!(!l.advertised_by_gateway("2001:db8:2::".parse().unwrap()));
        // Withdrawn (valid lifetime 0), and expired.
        assert!(inv.apply(ev(a, "2001:db8:1::", 0), t0));
        assert!(!inv.links[&2].advertised_by_gateway("2001:db8:1::".parse().unwrap()));
        assert!(inv.expire(t0 + Duration::from_secs(901)));
        assert!(inv.links[&2].prefix_routers.is_empty());
    }

    /// Prefixes no NAT64 can have, and the link's own /64, are refused (and logged once).
    #[test]
    fn bogus_pref64s_are_refused() {
        let t0 = Instant::now();
        let mut inv = with_link();
        inv.apply(
            NetEvent::Addr {
                ifindex: 2,
                change: AddrChange::V6(V6Addr {
                    addr: "2001:db8:1::5".parse().unwrap(),
                    prefix_len: 64,
                    tentative: false,
                    dad_failed: false,
                    deprecated: false,
                    temporary: false,
                    global: true,
                }),
            },
            t0,
        );
        for bad in [
            "ff02::/96",
            "fe80::/96",
            "::ffff:0:0/96",
            "::/96",
            "2001:db8:1::/96",
        ] {
            assert!(!inv.apply(ra(2, vec![pref64(bad, 600)]), t0), "{bad}");
            assert!(inv.links[&2].pref64().is_none(), "{bad}");
            assert!(
                inv.links[&2]
                    .pref64_refused
                    .as_deref()
                    .unwrap()
                    .contains(bad),
                "{bad}"
            );
        }
        assert!(inv.apply(ra(2, vec![pref64("2001:db8:64::/96", 600)]), t0));
    }

    /// A flood of RAs from ever new routers with ever new servers keeps a bounded state.
    #[test]
    fn ra_state_is_bounded_whatever_is_sent() {
        let t0 = Instant::now();
        let mut inv = with_link();
        for i in 0..5_000u32 {
            let servers: Vec<String> = (0..89)
                .map(|j| format!("2001:db8:53:{i:x}::{j:x}"))
                .collect();
            let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
            let router = format!("fe80::{:x}", i + 1);
            inv.apply(
                ra_from(
                    2,
                    &router,
                    vec![
                        rdnss(&servers, u64::from(u32::MAX)),
                        pref64(&format!("2001:db8:{:x}::/96", i % 7 + 100), 600),
                    ],
                ),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        let l = &inv.links[&2];
        assert!(l.rdnss.len() <= MAX_RDNSS, "{}", l.rdnss.len());
        assert!(l.pref64s.len() <= MAX_PREF64_ROUTERS);
        // The newest survive.
        assert!(l
            .rdnss
            .iter()
            .any(|r| r.server.to_string().starts_with("2001:db8:53:1387:")));
    }

    #[test]
    fn options_of_other_icmp_types_are_ignored() {
        let mut inv = with_link();
        let ev = NetEvent::RaOptions(NdUserOpt {
            ifindex: 2,
            icmp_type: 137,
            source: None,
            options: vec![pref64("64:ff9b::/96", 600)],
        });
        assert!(!inv.apply(ev, Instant::now()));
    }

    #[test]
    fn resync_replaces_state_but_keeps_ra_learnt_for_surviving_links() {
        let now = Instant::now();
        let mut inv = with_link();
        inv.apply(NetEvent::Link(link(3, "eth1")), now);
        inv.apply(
            ra(
                2,
                vec![
                    pref64("2001:db8:64::/96", 600),
                    rdnss(&["2001:db8::53"], 60),
                ],
            ),
            now,
        );
        inv.apply(ra(3, vec![pref64("64:ff9b::/96", 600)]), now);

        let mut fresh = Inventory::default();
        let mut eth0 = Uplink::new(2, "eth0");
        eth0.admin_up = true;
        eth0.v6_default_route = true;
        fresh.links.insert(2, eth0);
        fresh.links.insert(4, Uplink::new(4, "eth2"));
        assert!(inv.apply(NetEvent::Resync(fresh), now));

        assert_eq!(inv.links.keys().copied().collect::<Vec<_>>(), [2, 4]);
        assert!(inv.links[&2].v6_default_route);
        assert_eq!(
            inv.links[&2].pref64().unwrap().prefix.to_string(),
            "2001:db8:64::/96"
        );
        assert_eq!(inv.links[&2].rdnss.len(), 1);
        assert!(inv.links[&4].pref64().is_none());
        let same = inv.clone();
        assert!(
            !inv.apply(NetEvent::Resync(same), now),
            "the same dump again is no change"
        );
    }
}
