//! Notices changes to what router mode put on the host (thin I/O edge): nftables ruleset
//! changes (`NFNLGRP_NFTABLES`, someone deleting the table `autoclat`) and IPv4 per-interface
//! configuration changes (`RTNLGRP_IPV4_NETCONF`, someone switching forwarding off). The
//! messages are not parsed: any change wakes the daemon, whose pass compares what it wants
//! with what is there (our own changes find nothing to do).

use std::io;

use tokio::io::unix::AsyncFd;

use crate::nlsock::NlSocket;

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: libc::c_int = 12;
/// `NFNLGRP_NFTABLES`: nf_tables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;
/// `RTNLGRP_IPV4_NETCONF`: IPv4 per-interface configuration (forwarding, rp_filter, …).
const RTNLGRP_IPV4_NETCONF: u32 = 24;

/// Two netlink subscriptions, readable when either has news.
pub struct RouterWatch {
    nft: AsyncFd<NlSocket>,
    netconf: AsyncFd<NlSocket>,
    buf: Vec<u8>,
}

fn subscribe(protocol: libc::c_int, group: u32) -> io::Result<AsyncFd<NlSocket>> {
    let sock = NlSocket::open(protocol, None)?;
    sock.subscribe(group)?;
    // SAFETY: the socket is moved into the AsyncFd, which never replaces or closes its
    // descriptor before dropping it.
    unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
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
                match fd.get_ref().recv(&mut self.buf) {
                    Ok(_) => continue,
                    Err(e) => match e.raw_os_error() {
                        Some(libc::ENOBUFS) => continue,
                        Some(libc::EAGAIN) => break,
                        _ => return Err(e),
                    },
                }
            }
        }
        Ok(())
    }
}
