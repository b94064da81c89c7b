//! The sockets behind [`super::ndp`]: duplicate address detection of a generated CLAT address,
//! and the neighbour-advertisement responder that makes the uplink answer for the CLAT address
//! when no address of the uplink covers its /64 (a DHCPv6 `/128` next to an on-link /64: the
//! kernel refuses an anycast membership there, and proxy NDP works only on interfaces with
//! forwarding on).
//!
//! Both receive on an `AF_PACKET`/`SOCK_DGRAM` socket bound with `ETH_P_ALL` to the uplink, so
//! they see solicitations sent to the CLAT address itself too (the kernel would drop those: the
//! address is not the host's), filtered by [`ndp::target_filter`]; both send whole IPv6 packets
//! on the translator's kind of raw `IPPROTO_RAW` send socket.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{recv, sendto, MsgFlags, SockaddrIn6};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::ndp::{self, NdMessage};
use crate::translator::SocketError;

/// Why DAD or the responder could not run.
#[derive(Debug, thiserror::Error)]
pub enum NdError {
    /// Opening or configuring a socket failed.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// A send, receive or membership call failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The uplink has no Ethernet address to advertise.
    #[error("uplink index {0} has no Ethernet address")]
    NoMac(u32),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> NdError {
    move |source| NdError::Io { what, source }
}

/// The receive socket for ND messages about `target` on `ifindex`.
fn open_watch(ifindex: u32, target: Ipv6Addr) -> Result<AsyncFd<OwnedFd>, NdError> {
    let fd = crate::translator::sockets::open_packet_rx(ifindex, &ndp::target_filter(target))?;
    // SAFETY: `fd` is a valid open OwnedFd moved into the AsyncFd, which never replaces it,
    // so it stays open and the same descriptor for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| io_err("register the ND socket with tokio")(e.into_parts().1))
}

fn send(tx: &OwnedFd, packet: &[u8], dst: Ipv6Addr, ifindex: u32) -> Result<(), NdError> {
    let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, ifindex));
    sendto(tx.as_raw_fd(), packet, &to, MsgFlags::empty())
        .map(|_| ())
        .map_err(|e| NdError::Io {
            what: "send a neighbour discovery packet",
            source: e.into(),
        })
}

/// Sends the neighbour advertisement for `target` answering `solicitor` (`::`: to all nodes).
fn advertise(
    tx: &OwnedFd,
    ifindex: u32,
    target: Ipv6Addr,
    solicitor: Ipv6Addr,
    mac: [u8; 6],
) -> Result<(), NdError> {
    let dst = if solicitor.is_unspecified() {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
    } else {
        solicitor
    };
    send(
        tx,
        &ndp::advertisement(target, solicitor, mac),
        dst,
        ifindex,
    )
}

/// Sends one neighbour advertisement for `target` on `ifindex`, answering `solicitor` (`::`:
/// to all nodes, as a defence against someone's DAD probe).
pub fn send_advertisement(
    ifindex: u32,
    target: Ipv6Addr,
    solicitor: Ipv6Addr,
    mac: [u8; 6],
) -> Result<(), NdError> {
    let tx = crate::translator::open_tx(ifindex, None)?;
    advertise(&tx, ifindex, target, solicitor, mac)
}

/// Reads every queued ND message from `rx` (non-blocking); `on` gets each valid one. Ends with
/// the `WouldBlock` error once the queue is empty, so that tokio's `try_io` clears the
/// readiness (any other error is a real one).
fn drain(rx: &OwnedFd, mut on: impl FnMut(NdMessage)) -> io::Result<()> {
    let mut buf = [0u8; 1500];
    loop {
        match recv(rx.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                if let Some(m) = buf.get(..n).and_then(ndp::parse) {
                    on(m);
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The outcome of one `try_io` of [`drain`]: a real error, or none (the queue is empty and
/// the readiness cleared).
fn drained(read: Result<io::Result<()>, tokio::io::unix::TryIoError>) -> io::Result<()> {
    match read {
        Ok(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(()),
    }
}

/// Duplicate address detection for `addr` on uplink `ifindex`: sends one DAD probe and listens
/// `wait` for anyone who owns the address (a neighbour advertisement for it) or is trying to
/// take it at the same moment (another DAD probe for it). Returns the first such sender (`::`
/// for a competing probe), or `None` when nobody answered.
pub async fn address_in_use(
    ifindex: u32,
    addr: Ipv6Addr,
    wait: Duration,
) -> Result<Option<Ipv6Addr>, NdError> {
    let rx = open_watch(ifindex, addr)?;
    let tx = crate::translator::open_tx(ifindex, None)?;
    send(
        &tx,
        &ndp::dad_probe(addr),
        ndp::solicited_node(addr),
        ifindex,
    )?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ready = tokio::time::timeout_at(deadline, rx.readable()).await;
        let Ok(ready) = ready else {
            return Ok(None);
        };
        let mut guard = ready.map_err(io_err("wait for neighbour advertisements"))?;
        let mut seen = None;
        let read = guard.try_io(|fd| {
            drain(fd.get_ref(), |m| match m {
                // Someone owns it.
                NdMessage::Advertisement { source, .. } => seen = seen.or(Some(source)),
                // Someone else is taking it right now (its DAD probe; ours are outgoing and
                // never reach this socket). A solicitation from a real address is someone
                // resolving it (a stale entry of an earlier CLAT): not a conflict.
                NdMessage::Solicitation { source, .. } if source.is_unspecified() => {
                    seen = seen.or(Some(source))
                }
                NdMessage::Solicitation { .. } => {}
            })
        });
        drained(read).map_err(io_err("read neighbour advertisements"))?;
        if seen.is_some() {
            return Ok(seen);
        }
    }
}

/// Answers neighbour solicitations for the CLAT address on the uplink while it lives: a task
/// that reads them from the packet socket and sends the advertisement. Dropping it stops the
/// task and leaves the solicited-node group.
#[derive(Debug)]
pub struct NdResponder {
    task: JoinHandle<()>,
    addr: Ipv6Addr,
    ifindex: u32,
}

impl NdResponder {
    /// Starts answering for `addr` on `ifindex` with the uplink's Ethernet address `mac`. Must
    /// be called inside the tokio runtime.
    pub fn start(ifindex: u32, addr: Ipv6Addr, mac: [u8; 6]) -> Result<Self, NdError> {
        let rx = open_watch(ifindex, addr)?;
        let tx = crate::translator::open_tx(ifindex, None)?;
        // Solicitations for the address go to its solicited-node group: joining makes the
        // network card let them in (a veth passes everything; real hardware filters).
        let member = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .map_err(io_err("open the multicast membership socket"))?;
        member
            .join_multicast_v6(&ndp::solicited_node(addr), ifindex)
            .map_err(io_err("join the solicited-node group"))?;
        let task = tokio::spawn(async move {
            let _member = member;
            loop {
                let mut guard = match rx.readable().await {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(%addr, ifindex, "neighbour solicitation responder stops: {e}");
                        return;
                    }
                };
                let mut answers = Vec::new();
                let read = guard.try_io(|fd| {
                    drain(fd.get_ref(), |m| {
                        if let NdMessage::Solicitation { source, target, .. } = m {
                            if target == addr {
                                answers.push(source);
                            }
                        }
                    })
                });
                if let Err(e) = drained(read) {
                    tracing::debug!(%addr, ifindex, "reading neighbour solicitations: {e}");
                    guard.clear_ready();
                }
                for solicitor in answers {
                    if let Err(e) = advertise(&tx, ifindex, addr, solicitor, mac) {
                        tracing::debug!(%addr, ifindex, "neighbour advertisement to {solicitor}: {e}");
                    }
                }
            }
        });
        Ok(Self {
            task,
            addr,
            ifindex,
        })
    }

    /// The address answered for.
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The uplink.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl Drop for NdResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Ethernet address of interface `ifindex` (from `getifaddrs`), if it has one.
pub fn ethernet_address(ifindex: u32) -> Result<[u8; 6], NdError> {
    let name = nix::net::if_::if_indextoname(ifindex).map_err(|e| NdError::Io {
        what: "if_indextoname",
        source: e.into(),
    })?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| NdError::Io {
        what: "getifaddrs",
        source: e.into(),
    })?;
    for ifa in addrs {
        if ifa.interface_name.as_bytes() != name.as_bytes() {
            continue;
        }
        if let Some(mac) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            if mac != [0; 6] {
                return Ok(mac);
            }
        }
    }
    Err(NdError::NoMac(ifindex))
}
