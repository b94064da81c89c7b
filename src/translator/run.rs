//! The translator's I/O loop: IPv4 packets from the tun go out on the uplink as IPv6, IPv6
//! packets to the CLAT address from the uplink go into the tun as IPv4.
//!
//! One thread, `poll(2)` on the signal descriptor, the tun and the receive socket; no busy
//! loop. Packets are read in batches (`recvmmsg` on the packet socket, repeated `read` on the
//! tun until `EAGAIN` or a batch is full), translated into reusable [`PacketBatch`]es, and
//! written in batches (`sendmmsg` on the raw socket, `write` on the tun). All buffers are
//! allocated once; nothing is allocated per packet.
//!
//! When the tun carries a `virtio_net_hdr` before every packet (`IFF_VNET_HDR`, as the
//! supervisor sets it up with TSO), one tun read can be a 64 KiB TCP super-packet with a
//! partial checksum: it is translated whole, then cut into IPv6 segments with complete
//! checksums ([`to_wire_packets`]), because a raw socket takes neither GSO nor partial
//! checksums — unless a GSO send socket ([`GsoSend`], a packet socket with
//! `PACKET_VNET_HDR`) is given: then a super-packet goes out whole, with its virtio header,
//! to the next hop's link-layer address ([`NextHops`]), and the kernel or the device cuts it,
//! as for native IPv6. Without a usable neighbour entry the packet takes the raw socket, so the
//! kernel resolves (or re-confirms) the neighbour. Packets written to a vnet-header tun get a
//! zeroed header (no offload).

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::csum::complete_ipv6_checksum;
use super::neigh::NextHops;
use super::sockets::{enable_auxdata, RxFraming};
use crate::xlat::{
    gro_segment_size, received_segment_size, segment_tcp_v4, split_rx_frame, tcp4_gso_for_tun,
    to_wire_packets, Counters, PacketBatch, Translator, VnetHdr,
};

/// Packets read per system call (receive socket) or per round (tun).
pub const BATCH: usize = 32;
/// Room for one received packet: a GRO-merged IPv6 packet can reach 64 KiB.
pub const SLOT: usize = 65536;
/// Room for one frame from the receive socket: a packet, and before it a virtio header and a
/// link-layer header ([`RxFraming::VnetHdr`]).
const RX_SLOT: usize = SLOT + 256;
/// Packets per `sendmmsg`: a 64 KiB super-packet from the tun makes about 45 segments.
const TX_BATCH: usize = 128;
/// Largest virtio header accepted on the tun (10, or 12 with `num_buffers`; newer kernels
/// have 20-byte forms with hash reports).
pub const MAX_VNET_HDR: usize = 64;
/// Control buffer per received packet, in u64 words (CMSG_SPACE of a tpacket_auxdata is 40).
const CMSG_WORDS: usize = 8;
/// How long a full send queue may hold the loop before packets are dropped.
const SEND_WAIT_MS: i32 = 10;

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A system call that the loop cannot do without failed.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn sys(what: &'static str, source: io::Error) -> RunError {
    RunError::Sys { what, source }
}

/// Counters of the I/O side (the translation counters are the [`Translator`]'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IoCounters {
    /// IPv6 packets received on the uplink socket.
    pub rx_packets: u64,
    /// Bytes of those.
    pub rx_bytes: u64,
    /// Received packets larger than a slot (dropped).
    pub rx_truncated: u64,
    /// IPv4 packets read from the tun.
    pub tun_read_packets: u64,
    /// Of those, TCP super-packets (GSO) cut into segments here.
    pub tun_gso_packets: u64,
    /// IPv6 segments made from them.
    pub segments_made: u64,
    /// Translated packets whose offload metadata could not be honoured (dropped).
    pub offload_errors: u64,
    /// Super-packets sent whole on the GSO socket.
    pub gso_sent: u64,
    /// Super-packets the GSO socket refused (then cut and sent on the raw socket).
    pub gso_errors: u64,
    /// Next-hop lookups over rtnetlink.
    pub neigh_lookups: u64,
    /// Bytes of those.
    pub tun_read_bytes: u64,
    /// Non-IPv4 packets read from the tun (the host's IPv6 stack talking on it), skipped.
    pub tun_non_ipv4: u64,
    /// IPv6 packets sent on the uplink.
    pub tx_packets: u64,
    /// IPv6 packets the kernel refused or that found the send queue full.
    pub tx_errors: u64,
    /// Times the send queue was full and the loop waited for it to drain.
    pub tx_waits: u64,
    /// IPv4 packets written to the tun.
    pub tun_write_packets: u64,
    /// IPv4 packets the tun refused.
    pub tun_write_errors: u64,
    /// GRO-merged TCP packets from the uplink written into the tun whole, with GSO metadata.
    pub tun_gso_written: u64,
    /// GRO-merged TCP packets from the uplink cut into segments here (a tun without a
    /// virtio header).
    pub tun_gso_cut: u64,
}

/// How the loop ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT arrived.
    Signal(Signal),
}

/// Block SIGTERM, SIGINT and SIGUSR1 and return a descriptor that reads them. Call before any
/// thread is started so that every thread inherits the mask.
pub fn signal_fd() -> Result<SignalFd, RunError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGUSR1);
    mask.thread_block()
        .map_err(|e| sys("sigprocmask", e.into()))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| sys("signalfd", e.into()))
}

/// Logs the first few occurrences of an error, then every power of two.
#[derive(Debug, Default)]
struct Throttle(u64);

impl Throttle {
    fn hit(&mut self) -> bool {
        self.0 += 1;
        self.0 <= 5 || self.0.is_power_of_two()
    }
}

/// The descriptors the loop works on.
#[derive(Debug, Clone, Copy)]
pub struct Fds<'a> {
    /// The tun (IPv4 side), non-blocking.
    pub tun: BorrowedFd<'a>,
    /// The uplink packet socket (IPv6 in), non-blocking.
    pub rx: BorrowedFd<'a>,
    /// What comes before each packet read from `rx`.
    pub rx_framing: RxFraming,
    /// The uplink raw IPv6 socket (IPv6 out), non-blocking.
    pub tx: BorrowedFd<'a>,
    /// The size of the `virtio_net_hdr` before every packet on the tun, if it has
    /// `IFF_VNET_HDR` ([`super::TunInfo::vnet_hdr_len`]); at most [`MAX_VNET_HDR`].
    pub tun_vnet_hdr: Option<usize>,
    /// The GSO send socket (packet socket with `PACKET_VNET_HDR` on the uplink), if any.
    /// Used only with a vnet-header tun and [`IoLoop::set_gso`].
    pub gso: Option<BorrowedFd<'a>>,
}

/// How to send super-packets on the GSO socket.
#[derive(Debug)]
pub struct GsoSend {
    /// The uplink's interface index.
    pub ifindex: u32,
    /// The uplink's Ethernet address: the source of the frames.
    pub src_mac: [u8; 6],
    /// Next-hop resolution on Ethernet (frames get a 14-byte header); `None` on a link
    /// without link-layer header (the frame is the IPv6 packet).
    pub next_hops: Option<NextHops>,
}

/// The I/O loop of one CLAT.
pub struct IoLoop {
    translator: Translator,
    io: IoCounters,
    /// `BATCH` receive slots of `RX_SLOT` bytes.
    rx_buf: Vec<u8>,
    rx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    /// Per slot: room for the `PACKET_AUXDATA` control message (u64 for alignment).
    rx_cmsg: Vec<u64>,
    /// One tun read at a time (room for a virtio header and a 64 KiB packet).
    tun_buf: Vec<u8>,
    /// A translated super-packet before it is cut into segments (vnet header mode).
    gso_v6: PacketBatch,
    /// Zeroes: the virtio header written before every packet into a vnet-header tun.
    zero_hdr: [u8; MAX_VNET_HDR],
    to_v6: PacketBatch,
    to_v4: PacketBatch,
    /// The packets of `to_v4` that are GRO-merged TCP: (index, segment size).
    v4_gso: Vec<(usize, u16)>,
    /// Segments of one super-packet cut here (a tun without a virtio header).
    v4_segments: PacketBatch,
    tx_iov: Vec<libc::iovec>,
    tx_addr: Vec<libc::sockaddr_in6>,
    tx_hdr: Vec<libc::mmsghdr>,
    tx_err_log: Throttle,
    gso: Option<GsoSend>,
    tun_err_log: Throttle,
    rx_err_log: Throttle,
    /// The page the supervisor reads our counters from (`clatd -c`).
    stats: Option<super::stats::StatsPage>,
}

impl std::fmt::Debug for IoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoLoop")
            .field("translator", &self.translator)
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

impl IoLoop {
    /// A loop around `translator`, with all buffers allocated.
    pub fn new(translator: Translator) -> Self {
        Self {
            translator,
            io: IoCounters::default(),
            rx_buf: vec![0; BATCH * RX_SLOT],
            rx_iov: Vec::with_capacity(BATCH),
            rx_hdr: Vec::with_capacity(BATCH),
            rx_cmsg: vec![0; BATCH * CMSG_WORDS],
            tun_buf: vec![0; MAX_VNET_HDR + SLOT],
            gso_v6: PacketBatch::with_capacity(SLOT + 2048),
            zero_hdr: [0; MAX_VNET_HDR],
            to_v6: PacketBatch::with_capacity(BATCH * 2048),
            to_v4: PacketBatch::with_capacity(BATCH * 2048),
            v4_gso: Vec::with_capacity(BATCH),
            v4_segments: PacketBatch::with_capacity(SLOT + 2048),
            tx_iov: Vec::with_capacity(TX_BATCH),
            tx_addr: Vec::with_capacity(TX_BATCH),
            tx_hdr: Vec::with_capacity(TX_BATCH),
            tx_err_log: Throttle::default(),
            gso: None,
            tun_err_log: Throttle::default(),
            rx_err_log: Throttle::default(),
            stats: None,
        }
    }

    /// Send TCP super-packets whole on the GSO socket ([`Fds::gso`]).
    pub fn set_gso(&mut self, gso: GsoSend) {
        self.gso = Some(gso);
    }

    /// Publish the counters on `page` after every pass of the loop (and at once).
    pub fn set_stats(&mut self, page: super::stats::StatsPage) {
        page.publish(self.translator.counters(), &self.io);
        self.stats = Some(page);
    }

    /// The translation counters.
    pub fn counters(&self) -> &Counters {
        self.translator.counters()
    }

    /// The I/O counters.
    pub fn io_counters(&self) -> &IoCounters {
        &self.io
    }

    /// One line with every counter, for logs.
    pub fn counters_line(&self) -> String {
        let c = self.translator.counters();
        let io = &self.io;
        format!(
            "v4->v6 {} pkts {} bytes, v6->v4 {} pkts {} bytes, dropped {} \
             (not ours {}, malformed {}, other {}), fragments made {}, icmp errors sent {}; \
             rx {} (truncated {}), tun-in {} (non-IPv4 {}, super-packets {} cut into {} segments, \
             offload errors {}), gso sent {} (errors {}, neighbour lookups {}), \
             tx {} (errors {}, waits {}), tun-out {} (errors {}, super-packets {} whole, {} cut)",
            c.v4_to_v6_packets,
            c.v4_to_v6_bytes,
            c.v6_to_v4_packets,
            c.v6_to_v4_bytes,
            c.dropped,
            c.dropped_not_ours,
            c.dropped_malformed,
            c.dropped_other,
            c.fragments_made,
            c.icmp_errors_sent,
            io.rx_packets,
            io.rx_truncated,
            io.tun_read_packets,
            io.tun_non_ipv4,
            io.tun_gso_packets,
            io.segments_made,
            io.offload_errors,
            io.gso_sent,
            io.gso_errors,
            io.neigh_lookups,
            io.tx_packets,
            io.tx_errors,
            io.tx_waits,
            io.tun_write_packets,
            io.tun_write_errors,
            io.tun_gso_written,
            io.tun_gso_cut,
        )
    }

    /// Run until SIGTERM/SIGINT arrives on `signals` or a fatal error occurs. SIGUSR1 logs the
    /// counters.
    pub fn run(&mut self, fds: Fds<'_>, signals: &SignalFd) -> Result<Exit, RunError> {
        // Needed to see which received packets carry only a partial checksum.
        enable_auxdata(fds.rx).map_err(|e| match e {
            super::SocketError::Sys { what, source } => RunError::Sys { what, source },
            other => RunError::Sys {
                what: "PACKET_AUXDATA",
                source: io::Error::other(other.to_string()),
            },
        })?;
        if fds.tun_vnet_hdr.is_some_and(|l| l > MAX_VNET_HDR) {
            return Err(sys(
                "virtio header on the tun",
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let mut more = false;
        loop {
            let mut pfd = [
                pollfd(signals.as_fd().as_raw_fd()),
                pollfd(fds.tun.as_raw_fd()),
                pollfd(fds.rx.as_raw_fd()),
            ];
            // After a full batch there may be more waiting: look without sleeping.
            let timeout = if more { 0 } else { -1 };
            // SAFETY: `pfd` is a live array of three pollfd structures.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), pfd.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(sys("poll", e));
            }
            more = false;
            if pfd[0].revents != 0 {
                while let Some(info) = signals
                    .read_signal()
                    .map_err(|e| sys("read(signalfd)", e.into()))?
                {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGUSR1) => {
                            tracing::info!("counters: {}", self.counters_line());
                        }
                        Ok(sig) => return Ok(Exit::Signal(sig)),
                        Err(_) => {}
                    }
                }
            }
            if pfd[2].revents & libc::POLLNVAL != 0 {
                return Err(sys(
                    "poll(receive socket)",
                    io::Error::from_raw_os_error(libc::EBADF),
                ));
            }
            if pfd[1].revents & libc::POLLNVAL != 0 {
                return Err(sys("poll(tun)", io::Error::from_raw_os_error(libc::EBADF)));
            }
            if pfd[2].revents != 0 {
                more |= self.uplink_to_tun(fds)?;
            }
            if pfd[1].revents != 0 {
                more |= self.tun_to_uplink(fds)?;
            }
            if let Some(page) = &self.stats {
                page.publish(self.translator.counters(), &self.io);
            }
        }
    }

    /// One `recvmmsg` from the uplink, translated and written. True when the batch was full.
    fn uplink_to_tun(&mut self, fds: Fds<'_>) -> Result<bool, RunError> {
        self.rx_iov.clear();
        self.rx_hdr.clear();
        for slot in self.rx_buf.chunks_exact_mut(RX_SLOT) {
            self.rx_iov.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: RX_SLOT,
            });
        }
        for (iov, cmsg) in self
            .rx_iov
            .iter_mut()
            .zip(self.rx_cmsg.chunks_exact_mut(CMSG_WORDS))
        {
            // SAFETY: mmsghdr is plain old data; all-zero is valid (no name).
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_WORDS * 8;
            self.rx_hdr.push(h);
        }
        // SAFETY: `rx_hdr` holds BATCH headers, each pointing at one iovec in `rx_iov` that
        // describes a distinct SLOT-byte region of `rx_buf`, and at a distinct control region
        // of `rx_cmsg`; all stay alive and unmoved for the call.
        let n = unsafe {
            libc::recvmmsg(
                fds.rx.as_raw_fd(),
                self.rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => return Ok(false),
                Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => {
                    return Err(sys("recvmmsg", e))
                }
                _ => {
                    // ENETDOWN and friends: the socket reports a link event once; keep going.
                    if self.rx_err_log.hit() {
                        tracing::warn!("recvmmsg: {e}");
                    }
                    return Ok(false);
                }
            }
        }
        let n = n as usize;
        self.to_v4.clear();
        self.v4_gso.clear();
        self.to_v6.clear();
        let mtu6 = self.translator.config().mtu6;
        for (i, h) in self.rx_hdr[..n].iter().enumerate() {
            let len = h.msg_len as usize;
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > RX_SLOT {
                self.io.rx_truncated += 1;
                continue;
            }
            let aux = auxdata(&h.msg_hdr);
            let frame = &mut self.rx_buf[i * RX_SLOT..i * RX_SLOT + len];
            // With virtio headers: the header, then the link-layer header (`tp_net` long).
            let (vnet, pkt) = match fds.rx_framing {
                RxFraming::Cooked => (None, frame),
                RxFraming::VnetHdr { .. } => {
                    let net_off = aux.map_or(0, |a| usize::from(a.tp_net));
                    match split_rx_frame(frame, net_off) {
                        Some((vh, start)) => (Some(vh), &mut frame[start..]),
                        None => {
                            self.io.rx_truncated += 1;
                            continue;
                        }
                    }
                }
            };
            self.io.rx_packets += 1;
            self.io.rx_bytes += pkt.len() as u64;
            if aux.is_some_and(|a| a.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0) {
                complete_ipv6_checksum(pkt);
            }
            let pkt = &*pkt;
            let before = self.to_v4.len();
            self.translator
                .ipv6_to_ipv4(pkt, &mut self.to_v4, &mut self.to_v6);
            // A GRO-merged TCP packet (bigger than the uplink could carry): it goes into the
            // tun with a segment size, so that forwarding can cut it again. The virtio header
            // has the real one; a cooked socket leaves only the uplink MTU to go by.
            for k in before..self.to_v4.len() {
                let mss = self.to_v4.get(k).and_then(|p| match &vnet {
                    Some(vh) => received_segment_size(vh, p),
                    None => gro_segment_size(p, mtu6),
                });
                if let Some(mss) = mss {
                    self.v4_gso.push((k, mss));
                }
            }
        }
        self.flush(fds)?;
        Ok(n == BATCH)
    }

    /// Up to BATCH reads from the tun, translated and written. True when the round was full.
    fn tun_to_uplink(&mut self, fds: Fds<'_>) -> Result<bool, RunError> {
        self.to_v4.clear();
        self.v4_gso.clear();
        self.to_v6.clear();
        let mut full = true;
        for _ in 0..BATCH {
            // SAFETY: `tun_buf` is a live, writable buffer of its length.
            let n = unsafe {
                libc::read(
                    fds.tun.as_raw_fd(),
                    self.tun_buf.as_mut_ptr().cast(),
                    self.tun_buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => {
                        full = false;
                        break;
                    }
                    // EBADFD: the tun device was deleted under us.
                    _ => return Err(sys("read(tun)", e)),
                }
            }
            if n == 0 {
                full = false;
                break;
            }
            let n = n as usize;
            let hdr_len = fds.tun_vnet_hdr.unwrap_or(0);
            let Some(pkt) = self.tun_buf.get(hdr_len..n) else {
                self.io.tun_non_ipv4 += 1;
                continue;
            };
            if pkt.first().is_none_or(|b| b >> 4 != 4) {
                // Router solicitations and MLD reports when IPv6 is not disabled on the tun:
                // nothing to translate, and not worth a "malformed" count.
                self.io.tun_non_ipv4 += 1;
                continue;
            }
            self.io.tun_read_packets += 1;
            self.io.tun_read_bytes += pkt.len() as u64;
            if fds.tun_vnet_hdr.is_none() {
                self.translator
                    .ipv4_to_ipv6(pkt, &mut self.to_v6, &mut self.to_v4);
                continue;
            }
            let hdr = VnetHdr::from_le_bytes(&self.tun_buf[..hdr_len]).unwrap_or_default();
            if hdr.gso_type != VnetHdr::GSO_NONE {
                self.io.tun_gso_packets += 1;
            }
            self.gso_v6.clear();
            let (_, out_hdr) =
                self.translator
                    .ipv4_to_ipv6_offload(&hdr, pkt, &mut self.gso_v6, &mut self.to_v4);
            let batch = mem::take(&mut self.gso_v6);
            for translated in batch.iter() {
                if out_hdr.gso_type != VnetHdr::GSO_NONE
                    && self.send_whole(fds, &out_hdr, translated)?
                {
                    continue;
                }
                match to_wire_packets(&out_hdr, translated, &mut self.to_v6) {
                    Ok(k) if out_hdr.gso_type != VnetHdr::GSO_NONE => {
                        self.io.segments_made += k as u64;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.io.offload_errors += 1;
                        if self.tun_err_log.hit() {
                            tracing::warn!("tun packet with {hdr:?}: {e}");
                        }
                    }
                }
            }
            self.gso_v6 = batch;
        }
        self.flush(fds)?;
        Ok(full)
    }

    /// Send one translated super-packet whole on the GSO socket, after everything queued
    /// for the raw socket (so a flow's packets keep their order). False when it has to be cut
    /// and sent on the raw socket instead: no GSO socket, no usable neighbour entry, or the
    /// kernel refused it.
    fn send_whole(&mut self, fds: Fds<'_>, hdr: &VnetHdr, pkt: &[u8]) -> Result<bool, RunError> {
        let (Some(fd), Some(gso)) = (fds.gso, self.gso.as_mut()) else {
            return Ok(false);
        };
        let Some(dst) = pkt.get(24..40) else {
            return Ok(false);
        };
        let mut dst16 = [0u8; 16];
        dst16.copy_from_slice(dst);
        let mac = match gso.next_hops.as_mut() {
            Some(nh) => {
                let before = nh.lookups;
                let mac = nh.lookup(std::net::Ipv6Addr::from(dst16), std::time::Instant::now());
                self.io.neigh_lookups += nh.lookups - before;
                match mac {
                    Some(m) => Some(m),
                    None => return Ok(false),
                }
            }
            None => None,
        };
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IPV6 as u16).to_be();
        sll.sll_ifindex = gso.ifindex as i32;
        if let Some(m) = mac {
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&m);
        }
        // Ethernet: destination, source, EtherType IPv6.
        let mut eth = [0u8; 14];
        if let Some(m) = mac {
            eth[..6].copy_from_slice(&m);
            eth[6..12].copy_from_slice(&gso.src_mac);
            eth[12..].copy_from_slice(&(libc::ETH_P_IPV6 as u16).to_be_bytes());
        }
        let eth = if mac.is_some() { &eth[..] } else { &eth[..0] };
        // The virtio header's offsets count from the start of the frame.
        let ll = eth.len() as u16;
        let wire = VnetHdr {
            csum_start: if hdr.flags & VnetHdr::F_NEEDS_CSUM != 0 {
                hdr.csum_start + ll
            } else {
                hdr.csum_start
            },
            hdr_len: if hdr.hdr_len != 0 {
                hdr.hdr_len + ll
            } else {
                0
            },
            ..*hdr
        }
        .to_le_bytes();
        if !self.to_v6.is_empty() {
            self.send_v6(fds.tx)?;
            self.to_v6.clear();
        }
        let mut iov = [
            libc::iovec {
                iov_base: wire.as_ptr().cast_mut().cast(),
                iov_len: wire.len(),
            },
            libc::iovec {
                iov_base: eth.as_ptr().cast_mut().cast(),
                iov_len: eth.len(),
            },
            libc::iovec {
                iov_base: pkt.as_ptr().cast_mut().cast(),
                iov_len: pkt.len(),
            },
        ];
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        let mut waited = false;
        loop {
            // SAFETY: `msg` points at `sll` and at `iov`, whose entries describe live slices;
            // all outlive the call, and the kernel only reads them.
            let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
            if n >= 0 {
                self.io.gso_sent += 1;
                self.io.tx_packets += 1;
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) if !waited => {
                    waited = true;
                    self.io.tx_waits += 1;
                    wait_writable(fd);
                }
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    self.io.tx_errors += 1;
                    return Ok(true);
                }
                Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => {
                    return Err(sys("sendmsg(GSO socket)", e));
                }
                _ => {
                    self.io.gso_errors += 1;
                    if self.tx_err_log.hit() {
                        tracing::warn!("sendmsg(GSO socket): {e}; cutting the packet instead");
                    }
                    return Ok(false);
                }
            }
        }
    }

    /// Write everything the last step produced.
    fn flush(&mut self, fds: Fds<'_>) -> Result<(), RunError> {
        if !self.to_v6.is_empty() {
            self.send_v6(fds.tx)?;
        }
        if !self.to_v4.is_empty() {
            self.write_v4(fds.tun, fds.tun_vnet_hdr.unwrap_or(0));
        }
        Ok(())
    }

    /// `write` each IPv4 packet to the tun, after a virtio header of `hdr_len` bytes (none
    /// when 0): zeroed, except for a GRO-merged TCP packet, which goes in whole with its GSO
    /// metadata so that the kernel cuts it wherever it has to (a forwarded packet bigger than
    /// the next link's MTU). Without a virtio header such a packet is cut here. Failures are
    /// counted, never fatal.
    fn write_v4(&mut self, tun: BorrowedFd<'_>, hdr_len: usize) {
        let hdr_len = hdr_len.min(MAX_VNET_HDR);
        let mut marks = self.v4_gso.iter().copied().peekable();
        for i in 0..self.to_v4.len() {
            let gso = marks.next_if(|m| m.0 == i).map(|(_, mss)| mss);
            let Some(pkt) = self.to_v4.get_mut(i) else {
                break;
            };
            let mut hdr = self.zero_hdr;
            match gso {
                Some(mss) if hdr_len >= VnetHdr::LEN => {
                    if let Some(h) = tcp4_gso_for_tun(pkt, mss) {
                        hdr[..VnetHdr::LEN].copy_from_slice(&h.to_le_bytes());
                        self.io.tun_gso_written += 1;
                    }
                }
                Some(mss) if hdr_len == 0 => {
                    self.v4_segments.clear();
                    if segment_tcp_v4(pkt, usize::from(mss), &mut self.v4_segments).is_ok() {
                        self.io.tun_gso_cut += 1;
                        for seg in self.v4_segments.iter() {
                            write_tun(tun, &[], seg, &mut self.io, &mut self.tun_err_log);
                        }
                        continue;
                    }
                }
                _ => {}
            }
            write_tun(
                tun,
                &hdr[..hdr_len],
                pkt,
                &mut self.io,
                &mut self.tun_err_log,
            );
        }
    }

    /// `sendmmsg` the IPv6 packets, each to its own destination address.
    fn send_v6(&mut self, tx: BorrowedFd<'_>) -> Result<(), RunError> {
        let total = self.to_v6.len();
        let mut pkts = self.to_v6.iter();
        let mut done = 0;
        while done < total {
            self.tx_iov.clear();
            self.tx_addr.clear();
            self.tx_hdr.clear();
            for pkt in pkts.by_ref().take(TX_BATCH) {
                self.tx_iov.push(libc::iovec {
                    iov_base: pkt.as_ptr().cast_mut().cast(),
                    iov_len: pkt.len(),
                });
                self.tx_addr.push(destination(pkt));
            }
            let chunk = self.tx_iov.len();
            for i in 0..chunk {
                // SAFETY: mmsghdr is plain old data; all-zero is valid.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_name = (&mut self.tx_addr[i] as *mut libc::sockaddr_in6).cast();
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut self.tx_iov[i];
                h.msg_hdr.msg_iovlen = 1;
                self.tx_hdr.push(h);
            }
            let mut sent = 0;
            let mut waited = false;
            while sent < chunk {
                // SAFETY: headers `sent..chunk` point at live addresses and iovecs, which
                // point into `to_v6`'s buffer; none is moved or freed during the call, and
                // the kernel only reads the packet bytes.
                let n = unsafe {
                    libc::sendmmsg(
                        tx.as_raw_fd(),
                        self.tx_hdr[sent..].as_mut_ptr(),
                        (chunk - sent) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    sent += n as usize;
                    self.io.tx_packets += n as u64;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) if !waited => {
                        waited = true;
                        self.io.tx_waits += 1;
                        wait_writable(tx);
                        continue;
                    }
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                        // Still full: drop the rest of this chunk, as a router would.
                        self.io.tx_errors += (chunk - sent) as u64;
                        if self.tx_err_log.hit() {
                            tracing::warn!("sendmmsg: {e}; dropped {} packets", chunk - sent);
                        }
                        sent = chunk;
                    }
                    Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => {
                        return Err(sys("sendmmsg", e));
                    }
                    _ => {
                        // This packet was refused (EMSGSIZE, ENETUNREACH, EPERM by a
                        // firewall...): skip it, go on with the next.
                        self.io.tx_errors += 1;
                        if self.tx_err_log.hit() {
                            let dst = self.tx_addr[sent].sin6_addr.s6_addr;
                            tracing::warn!("send to {}: {e}", std::net::Ipv6Addr::from(dst));
                        }
                        sent += 1;
                    }
                }
            }
            done += chunk;
        }
        Ok(())
    }

    /// The translator, e.g. to read its configuration.
    pub fn translator(&self) -> &Translator {
        &self.translator
    }
}

/// The `PACKET_AUXDATA` control message of a received packet: whether its transport checksum
/// is only partial (`tp_status`), where its network header starts (`tp_net`).
fn auxdata(msg: &libc::msghdr) -> Option<libc::tpacket_auxdata> {
    // SAFETY: `msg` was filled by recvmmsg: msg_control/msg_controllen describe the control
    // messages the kernel wrote into our buffer, which the CMSG macros walk within bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == libc::PACKET_AUXDATA
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                return Some(
                    libc::CMSG_DATA(c)
                        .cast::<libc::tpacket_auxdata>()
                        .read_unaligned(),
                );
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// One `writev` of `hdr` and `pkt` into the tun, counted.
fn write_tun(
    tun: BorrowedFd<'_>,
    hdr: &[u8],
    pkt: &[u8],
    io: &mut IoCounters,
    err_log: &mut Throttle,
) {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr().cast_mut().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: pkt.as_ptr().cast_mut().cast(),
            iov_len: pkt.len(),
        },
    ];
    // SAFETY: both iovecs describe live slices of their lengths, which the kernel only reads.
    let n = unsafe { libc::writev(tun.as_raw_fd(), iov.as_ptr(), 2) };
    if n < 0 {
        io.tun_write_errors += 1;
        if err_log.hit() {
            tracing::warn!("write(tun): {}", io::Error::last_os_error());
        }
    } else {
        io.tun_write_packets += 1;
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Wait up to SEND_WAIT_MS for the send socket to drain.
fn wait_writable(fd: BorrowedFd<'_>) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is one live pollfd.
    unsafe { libc::poll(&mut pfd, 1, SEND_WAIT_MS) };
}

/// The `sockaddr_in6` for an IPv6 packet: its destination address (zero if the packet is too
/// short to have one; the kernel then refuses it and it is counted).
fn destination(pkt: &[u8]) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    if let Some(dst) = pkt.get(24..40) {
        sa.sin6_addr.s6_addr.copy_from_slice(dst);
    }
    sa
}
