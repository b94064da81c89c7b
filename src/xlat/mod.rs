//! The pure RFC 7915 translation core (no I/O).
//!
//! A [`Translator`] translates between one CLAT's IPv4 address and its IPv6 address, with the
//! far side addressed through a NAT64 prefix (RFC 6052). It is stateless (RFC 7915 §1.3): every
//! packet is translated on its own, fragments included. It writes its output straight into
//! reusable [`PacketBatch`]es and allocates nothing per packet once the batches have grown.
//!
//! What it translates (RFC 7915 section numbers in the submodules):
//! - IPv4 from `cfg.v4` to any unicast IPv4 → IPv6 from `cfg.v6` to `prefix.embed(dst)`;
//! - IPv6 to `cfg.v6` from inside the prefix → IPv4 to `cfg.v4` from `prefix.extract(src)`;
//! - in stateless mode (RFC 6877 §6.3, `cfg.clat_prefix` set): IPv4 from any other unicast
//!   address (a downstream host) → IPv6 from `clat_prefix.embed(src)`, and IPv6 to an address
//!   inside the CLAT prefix → IPv4 to the address embedded in it; everything else (checksums,
//!   ICMP errors, fragments) as for the CLAT's own address;
//! - TCP and UDP (checksums updated incrementally, RFC 1624; zero-checksum UDP from IPv4 gets a
//!   computed checksum), ICMP echo ↔ ICMPv6 echo, ICMP errors ↔ ICMPv6 errors with the packet
//!   inside translated, fragments both ways, fragmentation of DF-clear IPv4 packets that do not
//!   fit `cfg.mtu6`; other upper-layer protocols are carried unchanged.
//!
//! The caller must send whatever both batches hold after every call, whatever the verdict: a
//! dropped packet may have produced an ICMP error for its sender.

pub mod checksum;
mod icmp;
mod offload;
mod v4_to_v6;
mod v6_to_v4;

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::nat64::Nat64Prefix;

pub use offload::{
    gro_segment_size, received_segment_size, segment_tcp_v4, segment_tcp_v6, split_rx_frame,
    tcp4_gso_for_tun, to_wire_packets, VnetHdr, WireError,
};

/// The IPv4 "dummy" address of RFC 7600, the source of ICMPv4 errors the translator makes up
/// itself and of translated ICMPv6 errors whose IPv6 source has no IPv4 form.
pub const IPV4_DUMMY: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);

/// The minimum IPv6 MTU (RFC 8200 §5).
pub const IPV6_MIN_MTU: u32 = 1280;

/// The smallest IPv4 MTU reported in a translated Packet Too Big (1280 − 20, RFC 7915 §5.2).
pub const IPV4_MIN_PTB_MTU: u32 = 1260;

/// Where the data of any fragment must end at the latest, in octets from the start of the
/// datagram's data: the largest IPv4 datagram (65535 octets) less the smallest IPv4 header.
/// Fragments ending later are dropped in both directions.
const MAX_FRAGMENT_END: usize = 65535 - 20;

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
    /// error when the IPv4 packet has DF set). Values below 1280 are treated as 1280.
    pub mtu6: u32,
    /// Stateless mode (RFC 6877 §6.3): a dedicated /64 routed to this host, into which every
    /// downstream IPv4 source other than `v4` is mapped with the RFC 6052 /64 rule. `None`:
    /// only `v4` is translated (downstream hosts need NAT44 to `v4`). Must be a /64.
    pub clat_prefix: Option<Nat64Prefix>,
}

/// Packets produced by one translation step, in one reusable buffer.
///
/// The buffer only ever grows; [`clear`](Self::clear) keeps both its memory and its
/// initialised length, so writing a packet with [`push_with`](Self::push_with) costs neither an
/// allocation nor a memset once the batch has warmed up.
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
    /// Bytes used by the packets.
    pub fn bytes(&self) -> usize {
        self.used()
    }
    fn used(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }
    /// Append one packet.
    pub fn push(&mut self, pkt: &[u8]) {
        self.push_with(pkt.len(), |b| {
            b.copy_from_slice(pkt);
            pkt.len()
        });
    }
    /// Append one packet written in place: `write` gets `max` bytes (holding stale data, which
    /// it must overwrite) and returns how many it used; 0 appends nothing. Returns that count.
    pub fn push_with(&mut self, max: usize, write: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let start = self.used();
        let end = start + max;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let n = write(&mut self.buf[start..end]).min(max);
        if n > 0 {
            self.ends.push(start + n);
        }
        n
    }
    /// The `i`th packet.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.buf[start..end])
    }
    /// The `i`th packet, to change in place.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&mut self.buf[start..end])
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
    /// Truncated, inconsistent lengths, a fragment ending past the largest datagram, a bad
    /// IPv4 header checksum, or a bad ICMP checksum on a message the translator must rewrite
    /// entirely.
    Malformed,
    /// Not between the CLAT's addresses and the NAT64 prefix (the CLAT is no open relay).
    NotOurs,
    /// Valid but not translatable: RFC 7915 says drop (ICMP types without a counterpart,
    /// fragmented ICMP, fragmented zero-checksum UDP, unknown extension headers, jumbograms,
    /// IPv6 packets or fragments too long for an IPv4 datagram).
    Unsupported,
    /// DF set and too big for the uplink MTU: an ICMPv4 Fragmentation Needed was generated.
    TooBig,
    /// An unexpired IPv4 source route option: an ICMPv4 Source Route Failed was generated.
    SourceRoute,
    /// A routing header with segments left: an ICMPv6 Parameter Problem was generated.
    RoutingHeader,
    /// TTL or hop limit zero: an ICMP Time Exceeded was generated.
    TtlExceeded,
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
    /// IPv4 packets translated to IPv6 (input packets).
    pub v4_to_v6_packets: u64,
    /// Bytes of those IPv4 packets.
    pub v4_to_v6_bytes: u64,
    /// IPv6 packets translated to IPv4 (input packets).
    pub v6_to_v4_packets: u64,
    /// Bytes of those IPv6 packets.
    pub v6_to_v4_bytes: u64,
    /// Packets dropped, all reasons.
    pub dropped: u64,
    /// Of which: not between our addresses and the prefix.
    pub dropped_not_ours: u64,
    /// Of which: malformed.
    pub dropped_malformed: u64,
    /// Of which: unsupported, too big, source-routed, TTL exceeded.
    pub dropped_other: u64,
    /// IPv6 fragments made from IPv4 packets larger than the uplink MTU.
    pub fragments_made: u64,
    /// ICMP and ICMPv6 errors the translator generated itself.
    pub icmp_errors_sent: u64,
}

/// A stateless translator for one CLAT.
#[derive(Debug)]
pub struct Translator {
    cfg: XlatConfig,
    counters: Counters,
    /// Running sums of the CLAT addresses, for incremental checksum updates.
    sum_v4: u64,
    sum_v6: u64,
    /// The IPv4 Identification of the next DF-clear packet made from IPv6 (RFC 6864).
    next_id: u16,
}

impl Translator {
    /// A translator for `cfg`.
    pub fn new(cfg: XlatConfig) -> Self {
        Self {
            cfg,
            counters: Counters::default(),
            sum_v4: checksum::sum_v4(cfg.v4),
            sum_v6: checksum::sum_v6(cfg.v6),
            next_id: 1,
        }
    }
    /// The configuration.
    pub fn config(&self) -> &XlatConfig {
        &self.cfg
    }
    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// The uplink MTU in use (at least 1280, at most 65535 + 40).
    fn mtu6(&self) -> usize {
        self.cfg.mtu6.clamp(IPV6_MIN_MTU, 65535 + 40) as usize
    }
    /// An IPv4 packet read from the tun: IPv6 packets for the uplink go to `to_v6` (several
    /// when fragmented); ICMPv4 errors generated for the host (e.g. Fragmentation Needed) go to
    /// `to_v4`. Output is appended; the batches are not cleared.
    pub fn ipv4_to_ipv6(
        &mut self,
        pkt: &[u8],
        to_v6: &mut PacketBatch,
        to_v4: &mut PacketBatch,
    ) -> Verdict {
        let v = self.v4_to_v6(pkt, to_v6, to_v4, None);
        self.count(v, pkt.len(), true);
        v
    }
    /// An IPv6 packet received on the uplink: IPv4 packets for the tun go to `to_v4`;
    /// ICMPv6 errors generated for the network go to `to_v6`. Output is appended; the batches
    /// are not cleared.
    pub fn ipv6_to_ipv4(
        &mut self,
        pkt: &[u8],
        to_v4: &mut PacketBatch,
        to_v6: &mut PacketBatch,
    ) -> Verdict {
        let v = self.v6_to_v4(pkt, to_v4, to_v6, None);
        self.count(v, pkt.len(), false);
        v
    }

    fn count(&mut self, v: Verdict, bytes: usize, v4_to_v6: bool) {
        let c = &mut self.counters;
        match v {
            Verdict::Translated if v4_to_v6 => {
                c.v4_to_v6_packets += 1;
                c.v4_to_v6_bytes += bytes as u64;
            }
            Verdict::Translated => {
                c.v6_to_v4_packets += 1;
                c.v6_to_v4_bytes += bytes as u64;
            }
            Verdict::Dropped(r) => {
                c.dropped += 1;
                match r {
                    DropReason::NotOurs => c.dropped_not_ours += 1,
                    DropReason::Malformed => c.dropped_malformed += 1,
                    _ => c.dropped_other += 1,
                }
            }
        }
    }

    /// The IPv6 form of a local IPv4 address (the source of a packet from the tun): ours maps
    /// to ours; in stateless mode any downstream unicast address to its embedding under the
    /// CLAT prefix; anything else has none (the packet is not ours to translate).
    fn local6(&self, a: Ipv4Addr) -> Option<Ipv6Addr> {
        if a == self.cfg.v4 {
            Some(self.cfg.v6)
        } else {
            self.cfg
                .clat_prefix
                .filter(|_| is_downstream_unicast(a))
                .map(|p| p.embed(a))
        }
    }

    /// The IPv4 form of a local IPv6 address (the destination of a packet from the uplink):
    /// ours maps to ours; in stateless mode an address inside the CLAT prefix to the IPv4
    /// address embedded in it. An address inside the CLAT prefix that is not in the RFC 6052
    /// format (a non-zero u-octet or suffix) is `Malformed`; one embedding no downstream
    /// unicast address (or the CLAT's own) is `NotOurs`, as is any other address.
    fn local4(&self, a: Ipv6Addr) -> Result<Ipv4Addr, DropReason> {
        if a == self.cfg.v6 {
            return Ok(self.cfg.v4);
        }
        let Some(p) = self.cfg.clat_prefix.filter(|p| p.contains(a)) else {
            return Err(DropReason::NotOurs);
        };
        let o = a.octets();
        let pos = p.v4_octet_positions();
        let start = usize::from(p.len() / 8);
        if (start..16).any(|i| o[i] != 0 && !pos.contains(&i)) {
            return Err(DropReason::Malformed);
        }
        let v4 = Nat64Prefix::extract_at(a, p.len());
        if v4 == self.cfg.v4 || !is_downstream_unicast(v4) {
            return Err(DropReason::NotOurs);
        }
        Ok(v4)
    }

    /// The IPv6 form of an IPv4 address seen in a packet: ours maps to ours, any other to its
    /// embedding under the prefix.
    fn map4(&self, a: Ipv4Addr) -> Ipv6Addr {
        if a == self.cfg.v4 {
            self.cfg.v6
        } else {
            self.cfg.prefix.embed(a)
        }
    }

    /// The IPv4 form of an IPv6 address seen in a packet, if it has one.
    fn map6(&self, a: Ipv6Addr) -> Option<Ipv4Addr> {
        if a == self.cfg.v6 {
            Some(self.cfg.v4)
        } else {
            self.cfg
                .prefix
                .extract(a)
                .filter(|&v4| is_remote_unicast(v4, self.cfg.v4))
        }
    }
}

/// Whether `a` can be a far-side unicast IPv4 address: not unspecified (0/8), loopback (127/8),
/// multicast (224/4), class E or broadcast (240/4), or the CLAT's own address. Only packets to
/// (IPv4 → IPv6) or from (IPv6 → IPv4) such addresses are translated; the eBPF fast path uses
/// the same rule (`remote_unicast` in src/bpf/clat.c, `crate::bpf::fast_path_takes_ingress`).
pub fn is_remote_unicast(a: Ipv4Addr, ours: Ipv4Addr) -> bool {
    let o = a.octets();
    a != ours && o[0] != 0 && o[0] != 127 && o[0] < 224
}

/// Whether `a` can be the address of a downstream host in stateless mode: unicast, that is not
/// unspecified (0/8), loopback (127/8), multicast (224/4), class E or broadcast (240/4). The
/// eBPF fast path uses the same rule (`downstream_unicast` in src/bpf/clat.c).
pub fn is_downstream_unicast(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] != 0 && o[0] != 127 && o[0] < 224
}

/// Reads a big-endian u16 at `at` (the caller has checked the length).
#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at` (the caller has checked the length).
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

/// Writes a 40-byte IPv6 header (flow label zero).
#[inline]
#[allow(clippy::too_many_arguments)]
fn write_ipv6_header(
    out: &mut [u8],
    tc: u8,
    payload_len: u16,
    next: u8,
    hop: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    out[0] = 0x60 | (tc >> 4);
    out[1] = tc << 4;
    out[2] = 0;
    out[3] = 0;
    out[4..6].copy_from_slice(&payload_len.to_be_bytes());
    out[6] = next;
    out[7] = hop;
    out[8..24].copy_from_slice(&src.octets());
    out[24..40].copy_from_slice(&dst.octets());
}

/// Writes an 8-byte IPv6 Fragment header; `offset` in bytes (a multiple of 8).
#[inline]
fn write_fragment_header(out: &mut [u8], next: u8, offset: usize, more: bool, id: u32) {
    // Callers drop fragments that would end past 65535 octets, so the offset always fits.
    debug_assert!(offset <= 0xfff8, "fragment offset {offset} out of range");
    out[0] = next;
    out[1] = 0;
    let field = ((offset as u16) & 0xfff8) | u16::from(more);
    out[2..4].copy_from_slice(&field.to_be_bytes());
    out[4..8].copy_from_slice(&id.to_be_bytes());
}

/// The fields of an IPv4 header the writer needs.
#[derive(Debug, Clone, Copy)]
struct V4Fields {
    tos: u8,
    total_len: u16,
    id: u16,
    df: bool,
    mf: bool,
    /// In bytes (a multiple of 8).
    offset: usize,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Writes a 20-byte IPv4 header with its checksum.
#[inline]
fn write_ipv4_header(out: &mut [u8], f: &V4Fields) {
    out[0] = 0x45;
    out[1] = f.tos;
    out[2..4].copy_from_slice(&f.total_len.to_be_bytes());
    out[4..6].copy_from_slice(&f.id.to_be_bytes());
    let flags =
        (u16::from(f.df) << 14) | (u16::from(f.mf) << 13) | ((f.offset as u16 >> 3) & 0x1fff);
    out[6..8].copy_from_slice(&flags.to_be_bytes());
    out[8] = f.ttl;
    out[9] = f.proto;
    out[10] = 0;
    out[11] = 0;
    out[12..16].copy_from_slice(&f.src.octets());
    out[16..20].copy_from_slice(&f.dst.octets());
    let c = checksum::finish(checksum::add(0, &out[..20]));
    out[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Offload state passed through one translation: what the virtio header said, and where the
/// L4 header ended up.
#[derive(Debug, Clone, Copy, Default)]
struct Offload {
    /// The L4 checksum field holds only the pseudo-header sum (NEEDS_CSUM).
    partial: bool,
    /// A GSO packet: segmented later, never fragmented here.
    gso: bool,
    csum_start: usize,
    csum_offset: usize,
    /// The L4 protocol the GSO type requires (0: any).
    want_proto: u8,
    /// Out: offset of the L4 header in the input and in the output.
    l4_start_in: usize,
    l4_start_out: usize,
    /// Out: the output's checksum field is still partial.
    partial_kept: bool,
}

/// Up to four bytes to overwrite in a payload while it is copied (an L4 checksum, or the
/// ICMP type, code and checksum).
#[derive(Debug, Clone, Copy, Default)]
struct Patch {
    at: usize,
    bytes: [u8; 4],
    len: usize,
}

impl Patch {
    fn none() -> Self {
        Self::default()
    }
    fn csum(at: usize, c: u16) -> Self {
        let b = c.to_be_bytes();
        Self {
            at,
            bytes: [b[0], b[1], 0, 0],
            len: 2,
        }
    }
    fn icmp(typ: u8, code: u8, c: u16) -> Self {
        let b = c.to_be_bytes();
        Self {
            at: 0,
            bytes: [typ, code, b[0], b[1]],
            len: 4,
        }
    }
    /// Copies `src`, the payload bytes `[from, from + src.len())`, to `out`, applying the patch.
    #[inline]
    fn copy(&self, out: &mut [u8], src: &[u8], from: usize) {
        out[..src.len()].copy_from_slice(src);
        for i in 0..self.len {
            let k = self.at + i;
            if k >= from && k < from + src.len() {
                out[k - from] = self.bytes[i];
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stateless() -> Translator {
        Translator::new(XlatConfig {
            v4: Ipv4Addr::new(192, 0, 0, 4),
            v6: "2001:db8:1:1::4".parse().unwrap(),
            prefix: crate::nat64::WELL_KNOWN,
            mtu6: 1500,
            clat_prefix: Some("2001:db8:1:ff00::/64".parse().unwrap()),
        })
    }

    #[test]
    fn downstream_unicast() {
        for a in [
            "198.51.100.1",
            "203.0.113.255",
            "192.0.2.0",
            "223.255.255.255",
        ] {
            assert!(is_downstream_unicast(a.parse().unwrap()), "{a}");
        }
        for a in ["0.0.0.0", "0.1.2.3", "127.0.0.1", "224.0.0.1", "240.0.0.1"] {
            assert!(!is_downstream_unicast(a.parse().unwrap()), "{a}");
        }
        assert!(!is_downstream_unicast(Ipv4Addr::BROADCAST));
    }

    #[test]
    fn local_addresses_map_both_ways() {
        let t = stateless();
        let lan = Ipv4Addr::new(198, 51, 100, 23);
        let lan6: Ipv6Addr = "2001:db8:1:ff00:c6:3364:1700:0".parse().unwrap();
        assert_eq!(t.local6(lan), Some(lan6));
        assert_eq!(t.local4(lan6), Ok(lan));
        // Ours stays ours, even though the stateless mapping would also cover it.
        assert_eq!(t.local6(t.cfg.v4), Some(t.cfg.v6));
        assert_eq!(t.local4(t.cfg.v6), Ok(t.cfg.v4));
        assert_eq!(
            t.local4(t.cfg.clat_prefix.unwrap().embed(t.cfg.v4)),
            Err(DropReason::NotOurs)
        );
        assert_eq!(t.local6(Ipv4Addr::new(224, 0, 0, 1)), None);
        assert_eq!(t.local6(Ipv4Addr::LOCALHOST), None);
        for bad in [
            "2001:db8:1:ff00:1c6:3364:1700:0",
            "2001:db8:1:ff00:c6:3364:1700:1",
        ] {
            assert_eq!(
                t.local4(bad.parse().unwrap()),
                Err(DropReason::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            t.local4("2001:db8:1:fe00:c6:3364:1700:0".parse().unwrap()),
            Err(DropReason::NotOurs)
        );
        // Without a CLAT prefix only our own addresses are local.
        let plain = Translator::new(XlatConfig {
            clat_prefix: None,
            ..*t.config()
        });
        assert_eq!(plain.local6(lan), None);
        assert_eq!(plain.local4(lan6), Err(DropReason::NotOurs));
    }
}
