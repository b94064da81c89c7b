//! Router advertisements read by the daemon itself (thin I/O edge): the kernel hands RA options
//! to user space only for RDNSS, DNSSL, PREF64 and a few more (`RTM_NEWNDUSEROPT`), never the
//! prefix information options, so which router advertised which prefix is learnt from the RAs.
//! One raw ICMPv6 socket with an `ICMP6_FILTER` that lets only type 134 through.

use std::io;
use std::mem::MaybeUninit;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

/// `ICMP6_FILTER` (netinet/icmp6.h): a 256-bit mask, a set bit blocks that type.
const ICMP6_FILTER: libc::c_int = 1;

/// Receives every router advertisement delivered to this host.
pub struct RaListener {
    fd: AsyncFd<Socket>,
    buf: Vec<MaybeUninit<u8>>,
}

impl RaListener {
    /// Opens the socket (needs CAP_NET_RAW). Needs a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Self> {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        s.set_cloexec(true)?;
        s.set_nonblocking(true)?;
        let mut filter = [u32::MAX; 8];
        filter[134 >> 5] &= !(1 << (134 & 31));
        // SAFETY: `filter` is a live 32-byte struct icmp6_filter for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_ICMPV6,
                ICMP6_FILTER,
                filter.as_ptr().cast(),
                std::mem::size_of_val(&filter) as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the socket is moved into the AsyncFd, which never replaces or closes it
        // before dropping it.
        let fd = unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            buf: vec![MaybeUninit::uninit(); 2048],
        })
    }

    /// The next RA: (interface index, the router's link-local source, the ICMPv6 message).
    pub async fn next(&mut self) -> io::Result<(u32, Ipv6Addr, Vec<u8>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.get_inner().recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let Some(v6) = from.as_socket_ipv6() else {
                        continue;
                    };
                    let n = n.min(self.buf.len());
                    // SAFETY: `recv_from` initialised the first `n` bytes.
                    let bytes: Vec<u8> = self.buf[..n]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    return Ok((v6.scope_id(), *v6.ip(), bytes));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }
}
