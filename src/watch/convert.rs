//! Netlink messages to [`NetEvent`]s: pure functions, no sockets.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, Nla, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    LinkProtoInfoInet6, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::inventory::{
    AddrChange, DefaultRoute, Family, Inventory, LinkInfo, NetEvent, OnLinkRoute, V4Addr, V6Addr,
};

/// `RTM_NEWNDUSEROPT` (linux/rtnetlink.h); netlink-packet-route does not know it.
pub const RTM_NEWNDUSEROPT: u16 = 68;
/// `RTNLGRP_ND_USEROPT`: the multicast group the kernel forwards RA options to.
pub const RTNLGRP_ND_USEROPT: u32 = 20;

/// The events in one message from the rtnetlink event stream (or a dump): links, addresses and
/// main-table default routes; everything else gives none.
pub fn message_events(msg: &NetlinkMessage<RouteNetlinkMessage>) -> Vec<NetEvent> {
    let NetlinkPayload::InnerMessage(inner) = &msg.payload else {
        return Vec::new();
    };
    let replace = msg.header.flags & NLM_F_REPLACE != 0;
    match inner {
        RouteNetlinkMessage::NewLink(m) => link_event(m).into_iter().collect(),
        RouteNetlinkMessage::DelLink(m) => link_gone_event(m).into_iter().collect(),
        RouteNetlinkMessage::NewAddress(m) => addr_event(m, false).into_iter().collect(),
        RouteNetlinkMessage::DelAddress(m) => addr_event(m, true).into_iter().collect(),
        RouteNetlinkMessage::NewRoute(m) => route_event(m, false, replace).into_iter().collect(),
        RouteNetlinkMessage::DelRoute(m) => route_event(m, true, false).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// `RTM_NEWLINK` → [`NetEvent::Link`]. Messages of another family (bridge port notifications,
/// `AF_BRIDGE`) carry only part of the link and give none.
pub fn link_event(m: &LinkMessage) -> Option<NetEvent> {
    if m.header.interface_family == AddressFamily::Inet6 && m.header.index != 0 {
        return v6_mtu_of_protinfo(m).map(|mtu| NetEvent::V6Mtu {
            ifindex: m.header.index,
            mtu,
        });
    }
    if m.header.interface_family != AddressFamily::Unspec || m.header.index == 0 {
        return None;
    }
    let flags = m.header.flags;
    let mut info = LinkInfo {
        ifindex: m.header.index,
        name: String::new(),
        admin_up: flags.contains(LinkFlags::Up),
        carrier: flags.contains(LinkFlags::LowerUp),
        loopback: flags.contains(LinkFlags::Loopback),
        mtu: 0,
        v6_mtu: None,
        alias: None,
        kind: None,
    };
    let mut have_name = false;
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(n) => {
                info.name.clone_from(n);
                have_name = true;
            }
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::IfAlias(a) if !a.is_empty() => info.alias = Some(a.clone()),
            LinkAttribute::OperState(State::Up) => info.carrier = true,
            LinkAttribute::AfSpecUnspec(specs) => {
                info.v6_mtu = specs.iter().find_map(|s| match s {
                    AfSpecUnspec::Inet6(v6) => v6.iter().find_map(|a| match a {
                        AfSpecInet6::DevConf(c) => u32::try_from(c.mtu6).ok().filter(|m| *m > 0),
                        _ => None,
                    }),
                    _ => None,
                });
            }
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    have_name.then_some(NetEvent::Link(info))
}

/// `IFLA_INET6_CONF` inside `IFLA_PROTINFO` (linux/if_link.h), an array of s32 indexed by
/// `DEVCONF_*` (linux/ipv6.h), of which `DEVCONF_MTU6` is the third.
const IFLA_INET6_CONF: u16 = 2;
const DEVCONF_MTU6: usize = 2;

/// The IPv6 MTU in an `AF_INET6` `RTM_NEWLINK` (the kernel's `inet6_ifinfo_notify`, sent when
/// an RA changes the link's RA flags or MTU); netlink-packet-route leaves its `IFLA_PROTINFO`
/// unparsed, so the one value is read here.
fn v6_mtu_of_protinfo(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::ProtoInfoInet6(infos) => infos.iter().find_map(|i| match i {
            LinkProtoInfoInet6::Other(nla) if nla.kind() == IFLA_INET6_CONF => {
                let mut buf = vec![0u8; nla.value_len()];
                nla.emit_value(&mut buf);
                let at = DEVCONF_MTU6 * 4;
                let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
                u32::try_from(i32::from_ne_bytes(bytes))
                    .ok()
                    .filter(|m| *m > 0)
            }
            _ => None,
        }),
        _ => None,
    })
}

/// `RTM_DELLINK` → [`NetEvent::LinkGone`]. An `AF_BRIDGE` `RTM_DELLINK` means "left its bridge",
/// not "gone", and gives none.
pub fn link_gone_event(m: &LinkMessage) -> Option<NetEvent> {
    (m.header.interface_family == AddressFamily::Unspec && m.header.index != 0)
        .then_some(NetEvent::LinkGone(m.header.index))
}

/// `RTM_NEWADDR` / `RTM_DELADDR` (`gone`) → [`NetEvent::Addr`].
pub fn addr_event(m: &AddressMessage, gone: bool) -> Option<NetEvent> {
    let mut local = None;
    let mut address = None;
    // IFA_FLAGS (32 bits) supersedes the 8-bit ifa_flags of the header when present.
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    for attr in &m.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer and IFA_LOCAL ours; otherwise they agree
    // (IPv4) or only IFA_ADDRESS is given (IPv6).
    let addr = local.or(address)?;
    let prefix_len = m.header.prefix_len;
    let universe = m.header.scope == AddressScope::Universe;
    let change = match (addr, gone) {
        (IpAddr::V6(addr), true) => AddrChange::V6Gone { addr, prefix_len },
        (IpAddr::V4(addr), true) => AddrChange::V4Gone { addr, prefix_len },
        (IpAddr::V6(addr), false) => AddrChange::V6(V6Addr {
            addr,
            prefix_len,
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
            deprecated: flags.contains(AddressFlags::Deprecated),
            // IFA_F_TEMPORARY has the value of IFA_F_SECONDARY.
            temporary: flags.contains(AddressFlags::Secondary),
            global: universe && !is_link_local(addr),
        }),
        (IpAddr::V4(addr), false) => AddrChange::V4(V4Addr {
            addr,
            prefix_len,
            global: universe,
        }),
    };
    Some(NetEvent::Addr {
        ifindex: m.header.index,
        change,
    })
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// `RTM_NEWROUTE` / `RTM_DELROUTE` (`gone`) → [`NetEvent::Route`] / [`NetEvent::RouteGone`], for
/// unicast default routes of the main table, and [`NetEvent::OnLink`] /
/// [`NetEvent::OnLinkGone`] for its on-link IPv6 /64 routes; `replace` is the message's
/// `NLM_F_REPLACE`.
pub fn route_event(m: &RouteMessage, gone: bool, replace: bool) -> Option<NetEvent> {
    let routes = default_routes(m);
    if routes.is_empty() {
        let route = onlink_v6_route(m)?;
        return Some(if gone {
            NetEvent::OnLinkGone(route)
        } else {
            NetEvent::OnLink { route, replace }
        });
    }
    Some(if gone {
        NetEvent::RouteGone(routes)
    } else {
        NetEvent::Route { routes, replace }
    })
}

/// The next hops of `m` if it is a unicast default route of the main table, else none.
pub fn default_routes(m: &RouteMessage) -> Vec<DefaultRoute> {
    let family = match m.header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return Vec::new(),
    };
    if m.header.destination_prefix_length != 0 || m.header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let mut table = u32::from(m.header.table);
    let mut oif = None;
    let mut gateway = None;
    let mut metric = 0;
    let mut pref_src = None;
    let mut multipath = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::PrefSource(a) => pref_src = route_ip(a),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            a => {
                if let Some(g) = gateway_of(a) {
                    gateway = Some(g);
                }
            }
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return Vec::new();
    }
    let route = |oif: u32, gateway: Option<IpAddr>| DefaultRoute {
        family,
        oif,
        gateway,
        metric,
        pref_src,
    };
    match multipath {
        Some(hops) => hops
            .iter()
            .filter(|h| h.interface_index != 0)
            .map(|h| {
                let gw = h.attributes.iter().find_map(gateway_of);
                route(h.interface_index, gw)
            })
            .collect(),
        None => oif.map(|o| route(o, gateway)).into_iter().collect(),
    }
}

/// `m` as an on-link /64 of the main table: IPv6 unicast to a /64 that is neither link-local
/// nor multicast, through one interface, without a gateway.
pub fn onlink_v6_route(m: &RouteMessage) -> Option<OnLinkRoute> {
    if m.header.address_family != AddressFamily::Inet6
        || m.header.destination_prefix_length != 64
        || m.header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut oif = None;
    let mut dst = None;
    let mut metric = 0;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = Some(*d),
            RouteAttribute::MultiPath(_) => return None,
            a if gateway_of(a).is_some() => return None,
            _ => {}
        }
    }
    let net = dst?;
    let seg0 = net.segments()[0];
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || is_link_local(net)
        || seg0 & 0xff00 == 0xff00
        || net.is_unspecified()
    {
        return None;
    }
    Some(OnLinkRoute {
        oif: oif.filter(|&o| o != 0)?,
        net: crate::policy::slash64(net),
        metric,
    })
}

fn gateway_of(a: &RouteAttribute) -> Option<IpAddr> {
    match a {
        RouteAttribute::Gateway(g) => route_ip(g),
        RouteAttribute::Via(RouteVia::Inet(v)) => Some(IpAddr::V4(*v)),
        RouteAttribute::Via(RouteVia::Inet6(v)) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// Build an inventory from dumped messages (links first, then addresses and routes), by
/// applying their events to an empty one.
pub fn inventory_from_dump<'a>(
    links: impl IntoIterator<Item = &'a LinkMessage>,
    addrs: impl IntoIterator<Item = &'a AddressMessage>,
    routes: impl IntoIterator<Item = &'a RouteMessage>,
) -> Inventory {
    let now = std::time::Instant::now();
    let mut inv = Inventory::default();
    let events = links
        .into_iter()
        .filter_map(link_event)
        .chain(addrs.into_iter().filter_map(|a| addr_event(a, false)))
        .chain(
            routes
                .into_iter()
                .filter_map(|r| route_event(r, false, false)),
        );
    for ev in events {
        inv.apply(ev, now);
    }
    inv
}

/// The `RTM_NEWNDUSEROPT` messages in one datagram from the ND user-option group, each parsed
/// (other message types are skipped): the one walker, [`crate::discovery::ndopt::nduseropts_in_datagram`].
pub use crate::discovery::ndopt::nduseropts_in_datagram as nduseropt_messages;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::address::AddressHeaderFlags;
    use netlink_packet_route::link::InfoKind;
    use netlink_packet_route::route::RouteNextHop;

    use super::*;

    /// The link's IPv6 MTU from its AF_SPEC (dumps and AF_UNSPEC RTM_NEWLINK), and from the
    /// AF_INET6 RTM_NEWLINK the kernel sends when an RA's MTU option changes it.
    #[test]
    fn the_ipv6_mtu_from_af_spec_and_from_an_inet6_newlink() {
        use netlink_packet_route::link::Inet6DevConf;
        let mut m = link_msg(AddressFamily::Unspec, LinkFlags::Up);
        let mut conf = Inet6DevConf::default();
        conf.mtu6 = 1400;
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::DevConf(conf)],
            )]));
        match link_event(&m) {
            Some(NetEvent::Link(info)) => assert_eq!(info.v6_mtu, Some(1400)),
            other => panic!("{other:?}"),
        }
        // IPv6 disabled on the link: no AF_INET6 attributes, no IPv6 MTU.
        let m = link_msg(AddressFamily::Unspec, LinkFlags::Up);
        match link_event(&m) {
            Some(NetEvent::Link(info)) => assert_eq!(info.v6_mtu, None),
            other => panic!("{other:?}"),
        }
        // inet6_ifinfo_notify: IFLA_PROTINFO { IFLA_INET6_CONF: s32[DEVCONF_MAX] }.
        let mut conf = vec![0u8; 4 * 60];
        conf[8..12].copy_from_slice(&1280i32.to_ne_bytes());
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Inet6;
        m.header.index = 7;
        m.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::ProtoInfoInet6(vec![LinkProtoInfoInet6::Other(
                netlink_packet_core::DefaultNla::new(IFLA_INET6_CONF, conf),
            )]),
        ];
        assert_eq!(
            link_event(&m),
            Some(NetEvent::V6Mtu {
                ifindex: 7,
                mtu: 1280
            })
        );
    }

    fn link_msg(family: AddressFamily, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.interface_family = family;
        m.header.index = 7;
        m.header.flags = flags;
        m.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Mtu(1480),
            LinkAttribute::IfAlias("autoclat:wlan0".into()),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Tun)]),
        ];
        m
    }

    #[test]
    fn link_message_to_link_info() {
        let m = link_msg(AddressFamily::Unspec, LinkFlags::Up | LinkFlags::LowerUp);
        let Some(NetEvent::Link(l)) = link_event(&m) else {
            panic!("a link event")
        };
        assert_eq!(l.ifindex, 7);
        assert_eq!(l.name, "eth0");
        assert!(l.admin_up && l.carrier && !l.loopback);
        assert_eq!(l.mtu, 1480);
        assert_eq!(l.alias.as_deref(), Some("autoclat:wlan0"));
        assert_eq!(l.kind.as_deref(), Some("tun"));

        let m = link_msg(AddressFamily::Unspec, LinkFlags::Loopback);
        let Some(NetEvent::Link(l)) = link_event(&m) else {
            panic!("a link event")
        };
        assert!(!l.admin_up && !l.carrier && l.loopback);

        let mut m = link_msg(AddressFamily::Unspec, LinkFlags::Up);
        m.attributes.push(LinkAttribute::OperState(State::Up));
        let Some(NetEvent::Link(l)) = link_event(&m) else {
            panic!("a link event")
        };
        assert!(l.carrier, "oper state up counts as carrier");
    }

    #[test]
    fn bridge_port_messages_are_not_link_events() {
        let m = link_msg(AddressFamily::Bridge, LinkFlags::Up);
        assert_eq!(link_event(&m), None);
        assert_eq!(
            link_gone_event(&m),
            None,
            "leaving a bridge is not going away"
        );
        let m = link_msg(AddressFamily::Unspec, LinkFlags::Up);
        assert_eq!(link_gone_event(&m), Some(NetEvent::LinkGone(7)));
    }

    fn addr_msg(addr: IpAddr, scope: AddressScope) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = 64;
        m.header.index = 7;
        m.header.scope = scope;
        m.attributes = vec![AddressAttribute::Address(addr)];
        m
    }

    #[test]
    fn ifa_flags_attribute_wins_over_header_flags() {
        let mut m = addr_msg("2001:db8::5".parse().unwrap(), AddressScope::Universe);
        m.header.flags = AddressHeaderFlags::Tentative;
        m.attributes.push(AddressAttribute::Flags(
            AddressFlags::Deprecated | AddressFlags::Secondary | AddressFlags::Managetempaddr,
        ));
        let Some(NetEvent::Addr {
            ifindex: 7,
            change: AddrChange::V6(a),
        }) = addr_event(&m, false)
        else {
            panic!("an IPv6 address event")
        };
        assert!(!a.tentative && a.deprecated && a.temporary && a.global && !a.dad_failed);

        // Without IFA_FLAGS the header's 8 bits count.
        let mut m = addr_msg("2001:db8::6".parse().unwrap(), AddressScope::Universe);
        m.header.flags = AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed;
        let Some(NetEvent::Addr {
            change: AddrChange::V6(a),
            ..
        }) = addr_event(&m, false)
        else {
            panic!("an IPv6 address event")
        };
        assert!(a.tentative && a.dad_failed);
    }

    #[test]
    fn address_scope_and_kind() {
        let m = addr_msg("fe80::1".parse().unwrap(), AddressScope::Link);
        let Some(NetEvent::Addr {
            change: AddrChange::V6(a),
            ..
        }) = addr_event(&m, false)
        else {
            panic!("an IPv6 address event")
        };
        assert!(!a.global);
        let m = addr_msg("127.0.0.1".parse().unwrap(), AddressScope::Host);
        let Some(NetEvent::Addr {
            change: AddrChange::V4(a),
            ..
        }) = addr_event(&m, false)
        else {
            panic!("an IPv4 address event")
        };
        assert!(!a.global);
        // Point-to-point: IFA_LOCAL is ours, IFA_ADDRESS the peer.
        let mut m = addr_msg("192.0.2.9".parse().unwrap(), AddressScope::Universe);
        m.attributes
            .push(AddressAttribute::Local("192.0.2.1".parse().unwrap()));
        assert_eq!(
            addr_event(&m, true),
            Some(NetEvent::Addr {
                ifindex: 7,
                change: AddrChange::V4Gone {
                    addr: Ipv4Addr::new(192, 0, 2, 1),
                    prefix_len: 64
                },
            })
        );
    }

    fn route_msg(family: AddressFamily, dst_len: u8, table: u8, kind: RouteType) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.destination_prefix_length = dst_len;
        m.header.table = table;
        m.header.kind = kind;
        m
    }

    #[test]
    fn only_unicast_main_table_default_routes_count() {
        let main = RouteHeader::RT_TABLE_MAIN;
        let mut m = route_msg(AddressFamily::Inet6, 0, main, RouteType::Unicast);
        m.attributes = vec![
            RouteAttribute::Oif(7),
            RouteAttribute::Priority(1024),
            RouteAttribute::Gateway(RouteAddress::Inet6("fe80::1".parse().unwrap())),
        ];
        let want = DefaultRoute {
            family: Family::V6,
            oif: 7,
            gateway: Some("fe80::1".parse().unwrap()),
            metric: 1024,
            pref_src: None,
        };
        assert_eq!(default_routes(&m), vec![want.clone()]);
        assert_eq!(
            route_event(&m, true, false),
            Some(NetEvent::RouteGone(vec![want]))
        );

        for (dst_len, table, kind) in [
            (64, main, RouteType::Unicast),
            (0, 100, RouteType::Unicast),
            (0, 255, RouteType::Unicast),
            (0, main, RouteType::Unreachable),
            (0, main, RouteType::BlackHole),
        ] {
            let mut other = m.clone();
            other.header.destination_prefix_length = dst_len;
            other.header.table = table;
            other.header.kind = kind;
            assert!(
                default_routes(&other).is_empty(),
                "{dst_len} {table} {kind:?}"
            );
        }
        // RTA_TABLE overrides the 8-bit header field (tables above 255 need it).
        let mut t = m.clone();
        t.header.table = RouteHeader::RT_TABLE_UNSPEC;
        t.attributes.push(RouteAttribute::Table(254));
        assert_eq!(default_routes(&t).len(), 1);
        t.attributes.push(RouteAttribute::Table(1000));
        assert!(default_routes(&t).is_empty());
    }

    #[test]
    fn onlink_v6_slash64_routes_of_the_main_table() {
        let main = RouteHeader::RT_TABLE_MAIN;
        let mut m = route_msg(AddressFamily::Inet6, 64, main, RouteType::Unicast);
        let dst = |a: &str| RouteAttribute::Destination(RouteAddress::Inet6(a.parse().unwrap()));
        m.attributes = vec![
            dst("2001:db8:1::"),
            RouteAttribute::Oif(7),
            RouteAttribute::Priority(256),
        ];
        let want = OnLinkRoute {
            oif: 7,
            net: "2001:db8:1::".parse().unwrap(),
            metric: 256,
        };
        assert_eq!(onlink_v6_route(&m), Some(want.clone()));
        assert_eq!(
            route_event(&m, false, true),
            Some(NetEvent::OnLink {
                route: want.clone(),
                replace: true
            })
        );
        assert_eq!(
            route_event(&m, true, false),
            Some(NetEvent::OnLinkGone(want))
        );

        let mut gw = m.clone();
        gw.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet6(
                "fe80::1".parse().unwrap(),
            )));
        let mut ll = m.clone();
        ll.attributes[0] = dst("fe80::");
        let mut mc = m.clone();
        mc.attributes[0] = dst("ff02::");
        let mut no_dst = m.clone();
        no_dst.attributes.remove(0);
        let mut other_table = m.clone();
        other_table.attributes.push(RouteAttribute::Table(100));
        let mut len48 = m.clone();
        len48.header.destination_prefix_length = 48;
        let mut v4 = m.clone();
        v4.header.address_family = AddressFamily::Inet;
        let mut local = m.clone();
        local.header.kind = RouteType::Local;
        for (what, r) in [
            ("gateway", gw),
            ("link-local", ll),
            ("multicast", mc),
            ("no destination", no_dst),
            ("table 100", other_table),
            ("/48", len48),
            ("IPv4", v4),
            ("local", local),
        ] {
            assert_eq!(onlink_v6_route(&r), None, "{what}");
            assert_eq!(route_event(&r, false, false), None, "{what}");
        }
    }

    #[test]
    fn multipath_gives_one_entry_per_next_hop() {
        let mut m = route_msg(
            AddressFamily::Inet,
            0,
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unicast,
        );
        let hop = |oif, gw: &str| {
            let mut h = RouteNextHop::default();
            h.interface_index = oif;
            h.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(
                gw.parse().unwrap(),
            ))];
            h
        };
        m.attributes = vec![
            RouteAttribute::PrefSource(RouteAddress::Inet("198.51.100.2".parse().unwrap())),
            RouteAttribute::MultiPath(vec![hop(7, "198.51.100.1"), hop(8, "203.0.113.1")]),
        ];
        let r = default_routes(&m);
        assert_eq!(r.iter().map(|r| r.oif).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(r[1].gateway, Some("203.0.113.1".parse().unwrap()));
        assert!(r
            .iter()
            .all(|r| r.pref_src == Some("198.51.100.2".parse().unwrap())));
    }

    #[test]
    fn replace_flag_comes_from_the_netlink_header() {
        let mut m = route_msg(
            AddressFamily::Inet,
            0,
            RouteHeader::RT_TABLE_MAIN,
            RouteType::Unicast,
        );
        m.attributes = vec![RouteAttribute::Oif(7)];
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REPLACE;
        let msg = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)),
        );
        let evs = message_events(&msg);
        assert!(
            matches!(evs.as_slice(), [NetEvent::Route { replace: true, routes }] if routes.len() == 1)
        );
    }

    #[test]
    fn nduseropt_datagram_walk() {
        // Two netlink messages in one datagram: a foreign type (skipped), then a bad length.
        let mut d = Vec::new();
        d.extend_from_slice(&20u32.to_ne_bytes());
        d.extend_from_slice(&16u16.to_ne_bytes());
        d.extend_from_slice(&[0; 10]);
        d.extend_from_slice(&[0xaa; 4]); // payload of 4, already aligned
        d.extend_from_slice(&64u32.to_ne_bytes());
        d.extend_from_slice(&RTM_NEWNDUSEROPT.to_ne_bytes());
        d.extend_from_slice(&[0; 10]);
        let out = nduseropt_messages(&d);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err(), "a length beyond the datagram is an error");
        assert!(nduseropt_messages(&d[..20]).is_empty());
    }
}
