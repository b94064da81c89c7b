//! Netlink messages to [`NetEvent`]s: pure functions, no sockets.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::discovery::ndopt::{parse_nduseropt, NdOptError, NdUserOpt};

use super::inventory::{
    AddrChange, DefaultRoute, Family, Inventory, LinkInfo, NetEvent, V4Addr, V6Addr,
};

/// `RTM_NEWNDUSEROPT` (linux/rtnetlink.h); netlink-packet-route does not know it.
pub const RTM_NEWNDUSEROPT: u16 = 68;
/// `RTNLGRP_ND_USEROPT`: the multicast group the kernel forwards RA options to.
pub const RTNLGRP_ND_USEROPT: u32 = 20;

const NLMSG_HDRLEN: usize = 16;

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
/// unicast default routes of the main table only; `replace` is the message's `NLM_F_REPLACE`.
pub fn route_event(m: &RouteMessage, gone: bool, replace: bool) -> Option<NetEvent> {
    let routes = default_routes(m);
    if routes.is_empty() {
        return None;
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
/// (other message types are skipped). A malformed netlink header ends the walk with an error.
pub fn nduseropt_messages(datagram: &[u8]) -> Vec<Result<NdUserOpt, NdOptError>> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDRLEN || len > rest.len() {
            out.push(Err(NdOptError::Truncated("netlink message header")));
            break;
        }
        if kind == RTM_NEWNDUSEROPT {
            out.push(parse_nduseropt(&rest[NLMSG_HDRLEN..len]));
        }
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..).unwrap_or(&[]);
    }
    out
}
