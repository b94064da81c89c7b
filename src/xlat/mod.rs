//! The pure RFC 7915 translation core (no I/O).
//!
//! SCAFFOLD: the signatures below are the contract between the translator core and its users
//! (the `clatd` I/O loop, tests, benches). The bodies are being written on the `xlat` branch.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::discovery::Nat64Prefix;

/// What one translator instance translates between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XlatConfig {
    /// The CLAT's IPv4 address (on `v4-<uplink>`), e.g. 192.0.0.4.
    pub v4: Ipv4Addr,
    /// The CLAT's IPv6 address on the uplink.
    pub v6: Ipv6Addr,
    /// The NAT64 prefix (PLAT side).
    pub prefix: Nat64Prefix,
    /// The uplink's MTU: IPv6 packets longer than this are fragmented (or refused with an ICMP
    /// error when the IPv4 packet has DF set).
    pub mtu6: u32,
}

/// Packets produced by one translation step, in one reusable buffer.
#[derive(Debug, Default)]
pub struct PacketBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl PacketBatch {
    /// A batch with room for `bytes` bytes before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(64),
        }
    }
    /// Forget all packets, keep the memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
    /// Number of packets.
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    /// No packets.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// Append one packet.
    pub fn push(&mut self, pkt: &[u8]) {
        self.buf.extend_from_slice(pkt);
        self.ends.push(self.buf.len());
    }
    /// The packets, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let p = &self.buf[start..end];
            start = end;
            p
        })
    }
}

/// Why a packet was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    NotOurs,
    Unsupported,
}

/// The result of one translation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Packets were written to the output batches.
    Translated,
    /// Nothing to send on; counted.
    Dropped(DropReason),
}

/// Packet and byte counters of one translator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub v4_to_v6_packets: u64,
    pub v4_to_v6_bytes: u64,
    pub v6_to_v4_packets: u64,
    pub v6_to_v4_bytes: u64,
    pub dropped: u64,
}

/// A stateless translator for one CLAT.
#[derive(Debug)]
pub struct Translator {
    cfg: XlatConfig,
    counters: Counters,
}

impl Translator {
    pub fn new(cfg: XlatConfig) -> Self {
        Self {
            cfg,
            counters: Counters::default(),
        }
    }
    pub fn config(&self) -> &XlatConfig {
        &self.cfg
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// An IPv4 packet read from the tun: IPv6 packets for the uplink go to `to_v6` (several
    /// when fragmented); ICMPv4 errors generated for the host (e.g. Fragmentation Needed) go to
    /// `to_v4`.
    pub fn ipv4_to_ipv6(
        &mut self,
        _pkt: &[u8],
        _to_v6: &mut PacketBatch,
        _to_v4: &mut PacketBatch,
    ) -> Verdict {
        self.counters.dropped += 1;
        Verdict::Dropped(DropReason::Unsupported)
    }
    /// An IPv6 packet received on the uplink: IPv4 packets for the tun go to `to_v4`;
    /// ICMPv6 errors generated for the network go to `to_v6`.
    pub fn ipv6_to_ipv4(
        &mut self,
        _pkt: &[u8],
        _to_v4: &mut PacketBatch,
        _to_v6: &mut PacketBatch,
    ) -> Verdict {
        self.counters.dropped += 1;
        Verdict::Dropped(DropReason::Unsupported)
    }
}
