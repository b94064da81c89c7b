//! Notices changes to what router mode put on the host (thin I/O edge): nftables ruleset
//! changes (`NFNLGRP_NFTABLES`, someone deleting the table `autoclat`) and IPv4 per-interface
//! configuration changes (`RTNLGRP_IPV4_NETCONF`, someone switching forwarding off). The
//! messages are not parsed: any change wakes the daemon, whose pass compares what it wants
//! with what is there (our own changes find nothing to do).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: libc::c_int = 12;
/// `NFNLGRP_NFTABLES`: nf_tables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;
/// `RTNLGRP_IPV4_NETCONF`: IPv4 per-interface configuration (forwarding, rp_filter, …).
const RTNLGRP_IPV4_NETCONF: u32 = 24;

/// Two netlink subscriptions, readable when either has news.
pub struct RouterWatch {
    nft: AsyncFd<OwnedFd>,
    netconf: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

fn subscribe(protocol: libc::c_int, group: u32) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is plain old data; all-zero (pid 0: the kernel assigns one) is valid.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `sa` is a live sockaddr_nl of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid descriptor, pointer and length of a u32.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&group as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is moved into the AsyncFd, which never replaces or closes it
    // before dropping it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

impl RouterWatch {
    /// Subscribes to both groups (needs a tokio runtime with I/O enabled).
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            nft: subscribe(NETLINK_NETFILTER, NFNLGRP_NFTABLES)?,
            netconf: subscribe(libc::NETLINK_ROUTE, RTNLGRP_IPV4_NETCONF)?,
            buf: vec![0; 16384],
        })
    }

    /// Waits for the next change, then drains what is queued on both sockets (a ruleset
    /// change comes as a burst of messages). An overrun (`ENOBUFS`) is a change too.
    pub async fn changed(&mut self) -> io::Result<()> {
        tokio::select! {
            r = self.nft.readable() => { r?.clear_ready(); }
            r = self.netconf.readable() => { r?.clear_ready(); }
        }
        for fd in [&self.nft, &self.netconf] {
            loop {
                // SAFETY: `buf` is a live writable buffer of its length.
                let n = unsafe {
                    libc::recv(
                        fd.get_ref().as_raw_fd(),
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ENOBUFS) => continue,
                    Some(libc::EAGAIN) => break,
                    _ => return Err(e),
                }
            }
        }
        Ok(())
    }
}
