//! Makes the uplink answer neighbour solicitation for the CLAT's IPv6 address without adding
//! that address to the host: an `IPV6_JOIN_ANYCAST` membership (Android's way).
//!
//! The membership belongs to the socket: it lasts exactly as long as [`AnycastMembership`] is
//! alive, and the kernel drops it by itself if the supervisor dies, so it can never be a leftover.
//! The kernel still answers some packets sent to an anycast address (ICMPv6 errors for UDP); the
//! fast path's ingress program drops the host's copy (see ARCHITECTURE.md, piece 2).

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Why the anycast membership could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AnycastError {
    /// The AF_INET6 datagram socket could not be created (IPv6 disabled?).
    #[error("cannot open an IPv6 socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused the membership. EADDRNOTAVAIL: the address is not inside a prefix on
    /// the uplink (hosts may only join anycast addresses of on-link prefixes); EINVAL: the
    /// address is already a unicast address of the host; EPERM: no CAP_NET_ADMIN.
    #[error("IPV6_JOIN_ANYCAST {addr} on ifindex {ifindex}: {source}")]
    Join {
        /// The CLAT's IPv6 address.
        addr: Ipv6Addr,
        /// The uplink.
        ifindex: u32,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
}

/// A live anycast membership of `addr` on the uplink `ifindex`; dropping it leaves the group.
#[derive(Debug)]
pub struct AnycastMembership {
    socket: OwnedFd,
    addr: Ipv6Addr,
    ifindex: u32,
}

impl AnycastMembership {
    /// Joins `addr` as an anycast address on `ifindex`.
    pub fn join(addr: Ipv6Addr, ifindex: u32) -> Result<Self, AnycastError> {
        // socket2 creates sockets with SOCK_CLOEXEC, so the translator never inherits it.
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .map_err(AnycastError::Socket)?;
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: addr.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        // SAFETY: the descriptor is an open AF_INET6 socket; `mreq` is a fully initialised
        // `struct ipv6_mreq` that lives across the call and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_JOIN_ANYCAST,
                (&mreq as *const libc::ipv6_mreq).cast(),
                std::mem::size_of::<libc::ipv6_mreq>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(AnycastError::Join {
                addr,
                ifindex,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            socket: socket.into(),
            addr,
            ifindex,
        })
    }

    /// The anycast address.
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The uplink's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The socket holding the membership (for diagnostics only).
    pub fn socket(&self) -> &OwnedFd {
        &self.socket
    }
}
