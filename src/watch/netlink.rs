//! The I/O edge of the watcher: one rtnetlink connection subscribed to link, address and route
//! events, and one plain netlink socket on the ND user-option group for RA options.

use std::os::fd::AsRawFd;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::AddressFamily;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::mpsc::Sender;

use super::convert::{inventory_from_dump, message_events, nduseropt_messages, RTNLGRP_ND_USEROPT};
use super::inventory::{Inventory, NetEvent};

/// Receive buffer for the event sockets: room for a burst of events (e.g. many links appearing at
/// once) before the kernel has to report an overrun.
const RX_BUF: usize = 4 << 20;

/// Why the watcher stopped or a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Opening, binding or reading a netlink socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a request or answered with something unexpected.
    #[error("netlink request failed: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// The rtnetlink connection ended (its socket failed).
    #[error("rtnetlink connection closed")]
    Closed,
    /// No link with that name exists.
    #[error("no network interface named `{0}`")]
    NoSuchLink(String),
}

/// Aborts the spawned rtnetlink connection task when the watcher ends.
struct ConnectionTask(tokio::task::JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watch the host's links, addresses, default routes and RA options, sending a
/// [`NetEvent::Resync`] first (and after every netlink overrun), then each change as it happens.
/// Returns `Ok(())` when the receiver is dropped, an error if a socket fails.
pub async fn run(tx: Sender<NetEvent>) -> Result<(), WatchError> {
    let (mut conn, handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])?;
    grow_rx_buffer(conn.socket_mut().socket_mut())?;
    let _conn = ConnectionTask(tokio::spawn(conn));

    let mut nd = TokioSocket::new(NETLINK_ROUTE)?;
    nd.socket_mut().bind(&SocketAddr::new(0, 0))?;
    nd.socket_mut().add_membership(RTNLGRP_ND_USEROPT)?;
    grow_rx_buffer(nd.socket_mut())?;

    // Subscribed before dumping: every change after this point is queued as an event, so
    // applying the queued events on top of the dump gives the current state.
    if tx
        .send(NetEvent::Resync(dump_with(&handle).await?))
        .await
        .is_err()
    {
        return Ok(());
    }

    // Which router advertised which prefix: from the RAs themselves (the kernel does not say).
    let mut ras = match super::ralisten::RaListener::new() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("not reading router advertisements (prefix origins unknown): {e}");
            None
        }
    };

    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let resync = tokio::select! {
            _ = tx.closed() => return Ok(()),
            ra = async {
                match ras.as_mut() {
                    Some(l) => l.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match ra {
                    Ok((ifindex, router, msg)) => match crate::discovery::ndopt::ra_prefixes(&msg) {
                        Ok(prefixes) if !prefixes.is_empty() && ifindex != 0 => {
                            let ev = NetEvent::RaPrefixes { ifindex, router, prefixes };
                            if tx.send(ev).await.is_err() {
                                return Ok(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(ifindex, %router, "ignoring RA: {e}"),
                    },
                    Err(e) => {
                        tracing::warn!("no longer reading router advertisements: {e}");
                        ras = None;
                    }
                }
                false
            }
            msg = messages.next() => {
                let Some((msg, _)) = msg else { return Err(WatchError::Closed) };
                match &msg.payload {
                    NetlinkPayload::Overrun(_) => true,
                    _ => {
                        for ev in message_events(&msg) {
                            if tx.send(ev).await.is_err() {
                                return Ok(());
                            }
                        }
                        false
                    }
                }
            }
            r = nd.recv(&mut buf) => match r {
                Ok(()) => {
                    let mut from: Vec<u32> = Vec::new();
                    for opt in nduseropt_messages(&buf) {
                        match opt {
                            Ok(opt) => {
                                if !from.contains(&opt.ifindex) {
                                    from.push(opt.ifindex);
                                }
                                if tx.send(NetEvent::RaOptions(opt)).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Err(e) => tracing::warn!("ignoring ND user option message: {e}"),
                        }
                    }
                    buf.clear();
                    // The same RA may have carried an MTU option: the kernel applies it to the
                    // link's IPv6 MTU without telling anyone, so ask for the link again.
                    for ifindex in from {
                        match relink(&handle, ifindex).await {
                            Ok(Some(ev)) => {
                                if tx.send(ev).await.is_err() {
                                    return Ok(());
                                }
                            }
                            Ok(None) => {}
                            Err(e) => tracing::debug!(ifindex, "link after RA: {e}"),
                        }
                    }
                    false
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    buf.clear();
                    true
                }
                Err(e) => return Err(e.into()),
            },
        };
        if resync {
            tracing::warn!("netlink overrun: events were lost, dumping everything again");
            if tx
                .send(NetEvent::Resync(dump_with(&handle).await?))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

/// The link `ifindex` as the kernel has it now, as a [`NetEvent::Link`] (none if it is gone).
async fn relink(handle: &Handle, ifindex: u32) -> Result<Option<NetEvent>, WatchError> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(super::convert::link_event(&link)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A one-shot snapshot of links, addresses and default routes (no RA options: those exist only
/// as events).
pub async fn dump() -> Result<Inventory, WatchError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let _conn = ConnectionTask(tokio::spawn(conn));
    dump_with(&handle).await
}

/// The index of the link with that name.
pub async fn ifindex(name: &str) -> Result<u32, WatchError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let _conn = ConnectionTask(tokio::spawn(conn));
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(WatchError::NoSuchLink(name.to_string())),
        // ENODEV: the kernel's answer to a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            Err(WatchError::NoSuchLink(name.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Give a netlink socket a receive buffer of [`RX_BUF`]: beyond `net.core.rmem_max` when we may
/// (`SO_RCVBUFFORCE` needs CAP_NET_ADMIN, which the daemon has), else as much as it allows.
fn grow_rx_buffer(socket: &netlink_sys::Socket) -> std::io::Result<()> {
    let size = libc::c_int::try_from(RX_BUF).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is a socket that `socket` owns for the duration of the call; the option
    // value points to a c_int that outlives the call, and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    socket.set_rx_buf_sz(RX_BUF)
}

async fn dump_with(handle: &Handle) -> Result<Inventory, WatchError> {
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    let addrs: Vec<_> = handle.address().get().execute().try_collect().await?;
    let mut routes: Vec<RouteMessage> = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        let part: Vec<_> = handle.route().get(req).execute().try_collect().await?;
        routes.extend(part);
    }
    Ok(inventory_from_dump(&links, &addrs, &routes))
}
