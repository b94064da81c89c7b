//! The translator's uplink sockets: a packet socket that receives IPv6 packets to the CLAT
//! address, and a raw IPv6 socket that sends translated packets. The supervisor opens both
//! itself and passes them to `clatd` as `-r`/`-w`, so `clatd` needs no privileges; `clatd`
//! opens them with these same functions when it is run by hand.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libc::{c_int, c_void, sock_filter, socklen_t};

use crate::nat64::Nat64Prefix;

pub use super::filter::{rx_filter, rx_filter_behind, rx_filter_exact, FastPathExclusion};

/// How the receive socket hands over a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxFraming {
    /// `SOCK_DGRAM`: the IPv6 packet alone. A GRO-merged packet arrives without its segment
    /// size, which the loop can then only estimate from the uplink MTU.
    Cooked,
    /// `SOCK_RAW` with `PACKET_VNET_HDR`: `[virtio_net_hdr][link-layer header][IPv6 packet]`.
    /// The virtio header gives a GRO-merged packet's real segment size; the link-layer header
    /// is `link_len` octets on this uplink (14 on Ethernet, 0 on a link without one), which the
    /// filter skips; the loop skips what `PACKET_AUXDATA`'s `tp_net` says for each packet.
    VnetHdr { link_len: u8 },
}

/// `ARPHRD_RAWIP` (linux/if_arp.h; `libc` lacks it): raw IP, no link-layer header.
const ARPHRD_RAWIP: u16 = 519;

/// The framing a receive socket on a link of hardware type `hatype` uses: with virtio
/// headers on Ethernet (14-octet header) and on links without a link-layer header; cooked
/// on anything else (whose headers we do not know the length of).
pub fn framing_for_hatype(hatype: u16) -> RxFraming {
    match hatype {
        libc::ARPHRD_ETHER => RxFraming::VnetHdr { link_len: 14 },
        libc::ARPHRD_NONE | ARPHRD_RAWIP => RxFraming::VnetHdr { link_len: 0 },
        _ => RxFraming::Cooked,
    }
}

/// The receive buffer we ask for: bursts of a fast uplink must not overflow it while the
/// translator is busy with the previous batch.
pub const RX_BUFFER_BYTES: c_int = 8 << 20;

/// The send buffer of the GSO socket ([`open_gso_tx`]).
pub const GSO_SEND_BUFFER_BYTES: c_int = 4 << 20;

/// Why a socket could not be opened or configured.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A socket system call failed; `what` names the step.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The filter has more instructions than the kernel accepts.
    #[error("socket filter of {0} instructions is too long")]
    FilterTooLong(usize),
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Sys { what, source }
}

/// `setsockopt` with a plain value.
fn setsockopt<T>(fd: BorrowedFd<'_>, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes for the duration of the
    // call, and `fd` is an open descriptor borrowed for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<c_void>(),
            mem::size_of::<T>() as socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new socket with `SOCK_CLOEXEC | SOCK_NONBLOCK`.
fn socket(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call without pointers.
    let fd = unsafe {
        libc::socket(
            domain,
            ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the receive socket on uplink `ifindex`: `AF_PACKET`, `ETH_P_ALL` (so it sees frames
/// before tc ingress, where the fast path's program drops the kernel's own copy of packets to
/// the CLAT address), filtered by [`rx_filter_behind`] (destination `clat_v6`, or inside
/// `clat_prefix` in stateless mode; with `exclude`, not what the fast path takes, exactly so
/// when `clat_v4` is known). On Ethernet and on links without a link-layer header it is a
/// `SOCK_RAW` socket with `PACKET_VNET_HDR`, so that GRO-merged packets come with their
/// segment size; elsewhere `SOCK_DGRAM` (see [`RxFraming`]).
///
/// The socket is created with protocol 0, which delivers nothing, and only bound to
/// `ETH_P_ALL` on the uplink once the filter is attached: no unfiltered packet from another
/// interface ever reaches it.
pub fn open_rx(
    ifindex: u32,
    clat_v6: Ipv6Addr,
    clat_v4: Option<Ipv4Addr>,
    clat_prefix: Option<Nat64Prefix>,
    exclude: Option<FastPathExclusion>,
) -> Result<(OwnedFd, RxFraming), SocketError> {
    // A raw socket bound with protocol 0 receives nothing; its name tells the link type.
    let raw = socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(sys("socket(AF_PACKET)"))?;
    bind_packet(raw.as_fd(), ifindex, 0, "bind(AF_PACKET)")?;
    let hatype = bound_hatype(raw.as_fd()).map_err(sys("getsockname(AF_PACKET)"))?;
    let one: c_int = 1;
    let (fd, framing) = match framing_for_hatype(hatype) {
        RxFraming::VnetHdr { link_len }
            if setsockopt(raw.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one).is_ok() =>
        {
            (raw, RxFraming::VnetHdr { link_len })
        }
        _ => {
            drop(raw);
            let fd =
                socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0).map_err(sys("socket(AF_PACKET)"))?;
            (fd, RxFraming::Cooked)
        }
    };
    let link_len = match framing {
        RxFraming::Cooked => 0,
        RxFraming::VnetHdr { link_len } => link_len,
    };
    set_rx_filter(
        fd.as_fd(),
        &rx_filter_behind(
            link_len,
            clat_v6,
            clat_v4,
            clat_prefix.as_ref(),
            exclude.as_ref(),
        ),
    )?;

    // A large buffer; SO_RCVBUFFORCE ignores rmem_max but needs CAP_NET_ADMIN.
    if setsockopt(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &RX_BUFFER_BYTES,
    )
    .is_err()
    {
        setsockopt(
            fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &RX_BUFFER_BYTES,
        )
        .map_err(sys("setsockopt(SO_RCVBUF)"))?;
    }
    ignore_outgoing(fd.as_fd());

    enable_auxdata(fd.as_fd())?;

    bind_packet(
        fd.as_fd(),
        ifindex,
        libc::ETH_P_ALL as u16,
        "bind(AF_PACKET)",
    )?;
    Ok((fd, framing))
}

/// The framing of an inherited receive socket: `SOCK_DGRAM`, or `SOCK_RAW` with
/// `PACKET_VNET_HDR`; `None` for anything else (a raw socket without virtio headers, or not
/// a packet socket).
pub fn rx_framing(fd: BorrowedFd<'_>) -> Option<RxFraming> {
    let (domain, ty) = socket_kind(fd).ok()?;
    if domain != libc::AF_PACKET {
        return None;
    }
    match ty {
        libc::SOCK_DGRAM => Some(RxFraming::Cooked),
        libc::SOCK_RAW if has_vnet_hdr(fd) => {
            let link_len = match bound_hatype(fd).map(framing_for_hatype) {
                Ok(RxFraming::VnetHdr { link_len }) => link_len,
                // Unknown header length: the loop finds it per packet (tp_net) anyway.
                _ => 0,
            };
            Some(RxFraming::VnetHdr { link_len })
        }
        _ => None,
    }
}

/// The hardware type (`ARPHRD_*`) of the link a packet socket is bound to.
fn bound_hatype(fd: BorrowedFd<'_>) -> io::Result<u16> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_ll>() as socklen_t;
    // SAFETY: `sll` is a live sockaddr_ll and `len` its size.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sll as *mut libc::sockaddr_ll).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sll.sll_hatype)
}

/// A small `AF_PACKET`/`SOCK_DGRAM` receive socket on uplink `ifindex` with `filter` attached
/// before it is bound to `ETH_P_ALL` (so nothing unfiltered ever reaches it), ignoring the
/// host's own outgoing frames: the supervisor's neighbour-discovery sockets
/// (`controller::ndsock`).
pub fn open_packet_rx(ifindex: u32, filter: &[sock_filter]) -> Result<OwnedFd, SocketError> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0).map_err(sys("socket(AF_PACKET)"))?;
    set_rx_filter(fd.as_fd(), filter)?;
    ignore_outgoing(fd.as_fd());
    bind_packet(
        fd.as_fd(),
        ifindex,
        libc::ETH_P_ALL as u16,
        "bind(AF_PACKET)",
    )?;
    Ok(fd)
}

/// Outgoing frames are of no interest to a receive socket: not cloning them saves work
/// (Linux ≥ 4.20; older kernels keep them, and the filters reject them anyway).
fn ignore_outgoing(fd: BorrowedFd<'_>) {
    let one: c_int = 1;
    let _ = setsockopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
}

/// Binds the packet socket `fd` to `ifindex` for `protocol` (host order; 0: nothing).
fn bind_packet(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    protocol: u16,
    what: &'static str,
) -> Result<(), SocketError> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| SocketError::Sys {
        what,
        source: io::Error::from_raw_os_error(libc::ENODEV),
    })?;
    // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_ll>() as socklen_t,
        )
    };
    if rc != 0 {
        return Err(SocketError::Sys {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Ask for `PACKET_AUXDATA` control messages, which say whether a packet's checksum is only
/// partial (`TP_STATUS_CSUMNOTREADY`). The I/O loop needs them; setting them needs no
/// privileges, so `clatd` does it on an inherited socket too.
pub fn enable_auxdata(fd: BorrowedFd<'_>) -> Result<(), SocketError> {
    let one: c_int = 1;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, &one)
        .map_err(sys("setsockopt(PACKET_AUXDATA)"))
}

/// Replace the classic BPF filter of `fd` (the supervisor does this on its copy of the receive
/// socket when the fast path goes on or off).
pub fn set_rx_filter(fd: BorrowedFd<'_>, filter: &[sock_filter]) -> Result<(), SocketError> {
    let len = u16::try_from(filter.len()).map_err(|_| SocketError::FilterTooLong(filter.len()))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call; `filter` outlives it.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
        .map_err(sys("setsockopt(SO_ATTACH_FILTER)"))
}

/// `SO_LOCK_FILTER` (asm-generic value, the same on x86_64 and aarch64).
const SO_LOCK_FILTER: c_int = 44;

/// Make the receive socket's current filter final (`SO_LOCK_FILTER`): from now on nobody
/// holding the descriptor, the translator included, can replace, detach or widen it, and
/// [`set_rx_filter`] on it fails with `EPERM`. The supervisor calls this once the final filter
/// is set (after deciding the fast path) and before it spawns the translator.
pub fn lock_rx_filter(fd: BorrowedFd<'_>) -> Result<(), SocketError> {
    let one: c_int = 1;
    setsockopt(fd, libc::SOL_SOCKET, SO_LOCK_FILTER, &one)
        .map_err(sys("setsockopt(SO_LOCK_FILTER)"))
}

/// Whether the socket's filter is locked (see [`lock_rx_filter`]).
pub fn rx_filter_locked(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut v: c_int = 0;
    let mut len = mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `v` and `len` are live and sized for an int option.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_LOCK_FILTER,
            (&mut v as *mut c_int).cast::<c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v != 0)
}

/// Open the send socket on uplink `ifindex`: `AF_INET6`, `SOCK_RAW`, `IPPROTO_RAW` (the
/// packets carry their own IPv6 header, so the CLAT's anycast source goes out unchanged),
/// bound to the uplink, marked with `fwmark` if given.
pub fn open_tx(ifindex: u32, fwmark: Option<u32>) -> Result<OwnedFd, SocketError> {
    let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW)
        .map_err(sys("socket(AF_INET6, SOCK_RAW)"))?;
    let idx = c_int::try_from(ifindex).map_err(|_| SocketError::Sys {
        what: "setsockopt(SO_BINDTOIFINDEX)",
        source: io::Error::from_raw_os_error(libc::ENODEV),
    })?;
    if let Err(e) = setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &idx) {
        // Kernels before 5.0 only know the by-name form.
        if e.raw_os_error() != Some(libc::ENOPROTOOPT) {
            return Err(SocketError::Sys {
                what: "setsockopt(SO_BINDTOIFINDEX)",
                source: e,
            });
        }
        let name = nix::net::if_::if_indextoname(ifindex).map_err(|e| SocketError::Sys {
            what: "if_indextoname",
            source: e.into(),
        })?;
        let bytes = name.as_bytes_with_nul();
        // SAFETY: `bytes` is a live NUL-terminated buffer of the given length.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                bytes.as_ptr().cast::<c_void>(),
                bytes.len() as socklen_t,
            )
        };
        if rc != 0 {
            return Err(SocketError::Sys {
                what: "setsockopt(SO_BINDTODEVICE)",
                source: io::Error::last_os_error(),
            });
        }
    }
    if let Some(mark) = fwmark {
        setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, &mark)
            .map_err(sys("setsockopt(SO_MARK)"))?;
    }
    // This socket only sends. Shrink what it could queue (IPPROTO_RAW receives nothing on
    // IPv6, but be sure).
    let small: c_int = 0;
    let _ = setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &small);
    Ok(fd)
}

/// Open the GSO send socket on uplink `ifindex`: `AF_PACKET`, `SOCK_RAW` (the kernel takes
/// `PACKET_VNET_HDR` on raw packet sockets only), bound with protocol 0 (it receives
/// nothing), `PACKET_VNET_HDR` on, so that every frame sent is `[virtio_net_hdr][link-layer
/// header][IPv6 packet]` and may be a TCP super-packet with a partial checksum, which the
/// kernel (or the device) segments and completes.
pub fn open_gso_tx(ifindex: u32, fwmark: Option<u32>) -> Result<OwnedFd, SocketError> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(sys("socket(AF_PACKET)"))?;
    let one: c_int = 1;
    setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)
        .map_err(sys("setsockopt(PACKET_VNET_HDR)"))?;
    if let Some(mark) = fwmark {
        setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, &mark)
            .map_err(sys("setsockopt(SO_MARK)"))?;
    }
    // Room for a few dozen 64 KiB super-packets queued at a real NIC: with the default
    // (about three of them) a burst would find the socket full and lose whole super-packets.
    // SO_SNDBUFFORCE ignores wmem_max but needs CAP_NET_ADMIN; best effort either way.
    if setsockopt(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        &GSO_SEND_BUFFER_BYTES,
    )
    .is_err()
    {
        let _ = setsockopt(
            fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &GSO_SEND_BUFFER_BYTES,
        );
    }
    // Protocol 0: it receives nothing.
    bind_packet(fd.as_fd(), ifindex, 0, "bind(AF_PACKET, GSO send socket)")?;
    Ok(fd)
}

/// Whether `fd` has `PACKET_VNET_HDR` set (an inherited `-g` socket must).
pub fn has_vnet_hdr(fd: BorrowedFd<'_>) -> bool {
    let mut v: c_int = 0;
    let mut len = mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `v` and `len` are live and sized for an int option.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            (&mut v as *mut c_int).cast::<c_void>(),
            &mut len,
        )
    };
    rc == 0 && v != 0
}

/// Bind the send socket to the CLAT's IPv6 address (with `IPV6_FREEBIND`, since the address
/// is not configured on the host). The packets carry their own source either way; a bound
/// source spares the kernel a source-address selection for every packet sent, and lets
/// source-based routing rules see the right address. Needs no privileges, so `clatd` does it
/// on an inherited socket too.
pub fn bind_tx_source(fd: BorrowedFd<'_>, source: Ipv6Addr) -> Result<(), SocketError> {
    let one: c_int = 1;
    setsockopt(fd, libc::SOL_IPV6, libc::IPV6_FREEBIND, &one)
        .map_err(sys("setsockopt(IPV6_FREEBIND)"))?;
    // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = source.octets();
    // SAFETY: `sa` is a valid sockaddr_in6 and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_in6>() as socklen_t,
        )
    };
    if rc != 0 {
        return Err(SocketError::Sys {
            what: "bind(AF_INET6, SOCK_RAW)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The socket domain (`SO_DOMAIN`) and type (`SO_TYPE`) of `fd`, to check descriptors handed
/// over as `-r`/`-w`.
pub fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<(c_int, c_int)> {
    let get = |name: c_int| -> io::Result<c_int> {
        let mut v: c_int = 0;
        let mut len = mem::size_of::<c_int>() as socklen_t;
        // SAFETY: `v` and `len` are live and sized for an int option.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut c_int).cast::<c_void>(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(v)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    Ok((get(libc::SO_DOMAIN)?, get(libc::SO_TYPE)?))
}
