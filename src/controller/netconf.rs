//! rtnetlink requests the controller makes on the CLAT's `v4-` interface: alias, MTU, up/down,
//! its IPv4 address, its IPv4 default route, deletion, and the listing of leftovers by alias.
//!
//! Each function is one request; undo is the caller's business (the controller records what it
//! did). Requests use `NLM_F_EXCL` where the kernel supports it, so an existing route or address
//! is an error instead of something silently taken over (and later deleted) by autoclat.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};

/// Prefix of the interface alias (IFLA_IFALIAS) that marks a link as autoclat's.
pub const ALIAS_PREFIX: &str = "autoclat:";

/// The alias autoclat puts on the CLAT interface of uplink `uplink`.
pub fn alias_for(uplink: &str) -> String {
    format!("{ALIAS_PREFIX}{uplink}")
}

/// The prefix length of the CLAT's IPv4 address on the tun.
///
/// /32, as Android's clatd does: the address is one host, the tun is point-to-point and the
/// default route is `scope link` through the device, so no on-link subnet is needed. A /29 would
/// add a connected route for all of 192.0.0.0/29, which two CLATs (two uplinks) would each claim,
/// and which would hijack the other RFC 7335 addresses (e.g. a DS-Lite B4's 192.0.0.2).
pub const V4_PREFIX_LEN: u8 = 32;

/// A failed rtnetlink request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetconfError(#[from] pub rtnetlink::Error);

impl NetconfError {
    /// The kernel's errno (positive), if the kernel answered with an error.
    pub fn errno(&self) -> Option<i32> {
        match &self.0 {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
            _ => None,
        }
    }

    /// Whether the error says the object is already gone (what an undo wanted anyway).
    pub fn is_already_gone(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}

/// A link as seen in a dump: index, name and alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name (empty if the kernel sent none).
    pub name: String,
    /// Interface alias, if set.
    pub alias: Option<String>,
    /// MTU, if the kernel sent it.
    pub mtu: Option<u32>,
}

impl LinkInfo {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut info = LinkInfo {
            ifindex: msg.header.index,
            name: String::new(),
            alias: None,
            mtu: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => info.name = n.clone(),
                LinkAttribute::IfAlias(a) => info.alias = Some(a.clone()),
                LinkAttribute::Mtu(m) => info.mtu = Some(*m),
                _ => {}
            }
        }
        info
    }
}

async fn change_link(handle: &Handle, msg: LinkMessage) -> Result<(), NetconfError> {
    // RTM_NEWLINK without NLM_F_CREATE: changes an existing link (`ip link set`).
    handle.link().change(msg).execute().await?;
    Ok(())
}

/// `ip link set dev IFINDEX alias ALIAS`.
pub async fn set_alias(handle: &Handle, ifindex: u32, alias: &str) -> Result<(), NetconfError> {
    change_link(
        handle,
        LinkUnspec::new_with_index(ifindex).alias(alias).build(),
    )
    .await
}

/// `ip link set dev IFINDEX mtu MTU`.
pub async fn set_mtu(handle: &Handle, ifindex: u32, mtu: u32) -> Result<(), NetconfError> {
    change_link(handle, LinkUnspec::new_with_index(ifindex).mtu(mtu).build()).await
}

/// `ip link set dev IFINDEX up`.
pub async fn set_up(handle: &Handle, ifindex: u32) -> Result<(), NetconfError> {
    change_link(handle, LinkUnspec::new_with_index(ifindex).up().build()).await
}

/// `ip link set dev IFINDEX down`.
pub async fn set_down(handle: &Handle, ifindex: u32) -> Result<(), NetconfError> {
    change_link(handle, LinkUnspec::new_with_index(ifindex).down().build()).await
}

/// `ip addr add V4/32 dev IFINDEX` (fails with EEXIST if it is there already).
pub async fn add_v4_address(
    handle: &Handle,
    ifindex: u32,
    v4: Ipv4Addr,
) -> Result<(), NetconfError> {
    handle
        .address()
        .add(ifindex, IpAddr::V4(v4), V4_PREFIX_LEN)
        .execute()
        .await?;
    Ok(())
}

/// `ip addr del V4/32 dev IFINDEX`.
pub async fn del_v4_address(
    handle: &Handle,
    ifindex: u32,
    v4: Ipv4Addr,
) -> Result<(), NetconfError> {
    let msg = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(ifindex)
        .address(v4, V4_PREFIX_LEN)
        .build();
    handle.address().del(msg).execute().await?;
    Ok(())
}

/// The IPv4 default route through the CLAT: `0.0.0.0/0 dev IFINDEX metric M scope link
/// proto static [table T]`.
pub fn default_route(ifindex: u32, metric: u32, table: Option<u32>) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .output_interface(ifindex)
        .priority(metric)
        .scope(RouteScope::Link);
    if let Some(table) = table {
        builder = builder.table_id(table);
    }
    builder.build()
}

/// Adds [`default_route`]; EEXIST if a default route with the same metric is in the table.
pub async fn add_default_route(
    handle: &Handle,
    ifindex: u32,
    metric: u32,
    table: Option<u32>,
) -> Result<(), NetconfError> {
    handle
        .route()
        .add(default_route(ifindex, metric, table))
        .execute()
        .await?;
    Ok(())
}

/// Deletes [`default_route`] (only the one through `ifindex` with that metric).
pub async fn del_default_route(
    handle: &Handle,
    ifindex: u32,
    metric: u32,
    table: Option<u32>,
) -> Result<(), NetconfError> {
    handle
        .route()
        .del(default_route(ifindex, metric, table))
        .execute()
        .await?;
    Ok(())
}

/// `ip link del dev IFINDEX`. On a tun this detaches every open descriptor as well.
pub async fn delete_link(handle: &Handle, ifindex: u32) -> Result<(), NetconfError> {
    handle.link().del(ifindex).execute().await?;
    Ok(())
}

/// One link by index (ENODEV if there is none).
pub async fn get_link(handle: &Handle, ifindex: u32) -> Result<LinkInfo, NetconfError> {
    let mut stream = handle.link().get().match_index(ifindex).execute();
    match stream.try_next().await? {
        Some(msg) => Ok(LinkInfo::from_message(&msg)),
        None => Err(NetconfError(rtnetlink::Error::RequestFailed)),
    }
}

/// Every link whose alias starts with [`ALIAS_PREFIX`] — autoclat's, from this run or another.
pub async fn links_with_our_alias(handle: &Handle) -> Result<Vec<LinkInfo>, NetconfError> {
    let mut stream = handle.link().get().execute();
    let mut ours = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        let info = LinkInfo::from_message(&msg);
        if info
            .alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
        {
            ours.push(info);
        }
    }
    Ok(ours)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};

    #[test]
    fn alias_marks_the_uplink() {
        assert_eq!(alias_for("eth0"), "autoclat:eth0");
        assert!(alias_for("wlan0").starts_with(ALIAS_PREFIX));
    }

    #[test]
    fn default_route_message_is_a_scope_link_default_with_metric() {
        let msg = default_route(7, 2048, None);
        assert_eq!(msg.header.destination_prefix_length, 0);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(
            msg.header.table,
            netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
        );
        assert!(msg.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(msg.attributes.contains(&RouteAttribute::Priority(2048)));
        assert!(msg
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::UNSPECIFIED
            ))));
        let in_table = default_route(7, 2048, Some(1000));
        assert!(in_table.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(default_route(7, 1, Some(100)).header.table, 100);
    }
}
