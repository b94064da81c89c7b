//! Translation with checksum and segmentation offload metadata: `struct virtio_net_hdr`, as a
//! tun device opened with `IFF_VNET_HDR` (and a packet socket with `PACKET_VNET_HDR`) puts
//! before every packet.
//!
//! With `NEEDS_CSUM` the L4 checksum field holds only the pseudo-header sum; it is updated
//! for the new pseudo-header and left for the device (or the kernel) to complete. A GSO
//! packet (TCPv4 ↔ TCPv6, UDP L4) is translated whole and keeps its `gso_size`: it is cut
//! into segments after translation, so it is never fragmented here.

use super::{checksum, DropReason, Offload, PacketBatch, Translator, Verdict};

/// `struct virtio_net_hdr` (the 10-byte form), fields decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with the ECN bit.
    pub gso_type: u8,
    /// Length of the headers up to and including the L4 header (GSO).
    pub hdr_len: u16,
    /// Segment payload size (GSO).
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the packet (NEEDS_CSUM).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start` (NEEDS_CSUM).
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Bytes on the wire.
    pub const LEN: usize = 10;
    /// The L4 checksum field holds the pseudo-header sum; complete it.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum is known to be good.
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    pub const GSO_ECN: u8 = 0x80;

    /// Decodes a little-endian header (the tun default on little-endian hosts, or after
    /// `TUNSETVNETLE`). `None` if `b` is shorter than [`Self::LEN`].
    pub fn from_le_bytes(b: &[u8]) -> Option<Self> {
        let b = b.get(..Self::LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Encodes little-endian.
    pub fn to_le_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    fn offload(&self) -> Offload {
        Offload {
            partial: self.flags & Self::F_NEEDS_CSUM != 0,
            gso: self.gso_type & !Self::GSO_ECN != Self::GSO_NONE,
            csum_start: usize::from(self.csum_start),
            csum_offset: usize::from(self.csum_offset),
            ..Offload::default()
        }
    }

    /// The header for the translated packet(s), with the GSO type `gso_out`.
    fn translated(&self, o: &Offload, gso_out: u8) -> Self {
        let delta = |v: u16| {
            (usize::from(v) + o.l4_start_out)
                .saturating_sub(o.l4_start_in)
                .min(usize::from(u16::MAX)) as u16
        };
        let fragmented = !o.gso && o.l4_start_out == 48;
        Self {
            flags: if o.partial_kept {
                Self::F_NEEDS_CSUM
            } else if fragmented {
                0
            } else {
                self.flags & Self::F_DATA_VALID
            },
            gso_type: if o.gso {
                gso_out | (self.gso_type & Self::GSO_ECN)
            } else {
                Self::GSO_NONE
            },
            hdr_len: if o.gso && self.hdr_len != 0 {
                delta(self.hdr_len)
            } else {
                0
            },
            gso_size: if o.gso { self.gso_size } else { 0 },
            csum_start: if o.partial_kept {
                o.l4_start_out as u16
            } else {
                0
            },
            csum_offset: if o.partial_kept { self.csum_offset } else { 0 },
        }
    }
}

impl Translator {
    /// [`ipv4_to_ipv6`](Self::ipv4_to_ipv6) for a packet read from a tun with `IFF_VNET_HDR`:
    /// returns the verdict and the header to put before every packet this call appended to
    /// `to_v6`. Packets appended to `to_v4` (ICMP errors) are complete: send them with a
    /// zeroed header. Partial checksums and GSO apply to unfragmented TCP and UDP only; a
    /// partial checksum on a packet that has to be fragmented is completed here.
    pub fn ipv4_to_ipv6_offload(
        &mut self,
        hdr: &VnetHdr,
        pkt: &[u8],
        to_v6: &mut PacketBatch,
        to_v4: &mut PacketBatch,
    ) -> (Verdict, VnetHdr) {
        let gso = hdr.gso_type & !VnetHdr::GSO_ECN;
        let (gso_out, proto) = match gso {
            VnetHdr::GSO_NONE => (VnetHdr::GSO_NONE, None),
            VnetHdr::GSO_TCPV4 => (VnetHdr::GSO_TCPV6, Some(6)),
            VnetHdr::GSO_UDP_L4 => (VnetHdr::GSO_UDP_L4, Some(17)),
            _ => (0, Some(0)),
        };
        let mut o = hdr.offload();
        let v = match proto {
            Some(0) => Verdict::Dropped(DropReason::Unsupported),
            _ => {
                o.want_proto = proto.unwrap_or(0);
                self.v4_to_v6(pkt, to_v6, to_v4, Some(&mut o))
            }
        };
        self.count(v, pkt.len(), true);
        match v {
            Verdict::Translated => (v, hdr.translated(&o, gso_out)),
            Verdict::Dropped(_) => (v, VnetHdr::default()),
        }
    }

    /// [`ipv6_to_ipv4`](Self::ipv6_to_ipv4) for a packet with virtio metadata (from a packet
    /// socket with `PACKET_VNET_HDR`): returns the verdict and the header for every packet
    /// this call appended to `to_v4`. Packets appended to `to_v6` (ICMPv6 errors) are
    /// complete.
    pub fn ipv6_to_ipv4_offload(
        &mut self,
        hdr: &VnetHdr,
        pkt: &[u8],
        to_v4: &mut PacketBatch,
        to_v6: &mut PacketBatch,
    ) -> (Verdict, VnetHdr) {
        let gso = hdr.gso_type & !VnetHdr::GSO_ECN;
        let (gso_out, proto) = match gso {
            VnetHdr::GSO_NONE => (Some(VnetHdr::GSO_NONE), 0),
            VnetHdr::GSO_TCPV6 => (Some(VnetHdr::GSO_TCPV4), 6),
            VnetHdr::GSO_UDP_L4 => (Some(VnetHdr::GSO_UDP_L4), 17),
            _ => (None, 0),
        };
        let mut o = hdr.offload();
        let v = match gso_out {
            None => Verdict::Dropped(DropReason::Unsupported),
            Some(_) => {
                o.want_proto = proto;
                self.v6_to_v4(pkt, to_v4, to_v6, Some(&mut o))
            }
        };
        self.count(v, pkt.len(), false);
        match v {
            Verdict::Translated => (v, hdr.translated(&o, gso_out.unwrap_or_default())),
            Verdict::Dropped(_) => (v, VnetHdr::default()),
        }
    }
}

/// Why a translated offload packet could not be turned into packets for a raw socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A GSO packet that is not IPv6 + TCP without extension headers, or whose headers are cut
    /// short or inconsistent with its payload length.
    #[error("GSO packet is not a well-formed IPv6 TCP packet")]
    NotTcpV6,
    /// A packet to cut that is not an unfragmented IPv4 TCP packet with consistent lengths.
    #[error("GSO packet is not a well-formed IPv4 TCP packet")]
    NotTcpV4,
    /// A GSO header with a segment size of zero.
    #[error("GSO packet with gso_size 0")]
    ZeroGsoSize,
    /// The GSO type is one this code does not cut (only TCPv6 is produced from a TSO4 tun).
    #[error("unsupported GSO type {0}")]
    UnsupportedGso(u8),
    /// `NEEDS_CSUM` points outside the packet.
    #[error("partial checksum at {start}+{offset} outside a {len}-byte packet")]
    BadChecksumOffset {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// The packet length.
        len: usize,
    },
}

/// Turns one translated IPv6 packet and the virtio header [`Translator::ipv4_to_ipv6_offload`]
/// returned for it into complete packets that a raw IPv6 socket can send (it takes neither
/// GSO nor partial checksums), appended to `out`. A TCPv6 GSO packet is cut into segments
/// ([`segment_tcp_v6`]); a partial checksum is completed; anything else is copied as is.
/// Returns how many packets were appended.
pub fn to_wire_packets(
    hdr: &VnetHdr,
    pkt: &[u8],
    out: &mut PacketBatch,
) -> Result<usize, WireError> {
    match hdr.gso_type & !VnetHdr::GSO_ECN {
        VnetHdr::GSO_NONE => {
            let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
            let partial = hdr.flags & VnetHdr::F_NEEDS_CSUM != 0;
            if partial && start + offset + 2 > pkt.len() {
                return Err(WireError::BadChecksumOffset {
                    start,
                    offset,
                    len: pkt.len(),
                });
            }
            out.push_with(pkt.len(), |b| {
                b.copy_from_slice(pkt);
                if partial {
                    complete_partial_checksum(b, start, offset);
                }
                pkt.len()
            });
            Ok(1)
        }
        VnetHdr::GSO_TCPV6 => segment_tcp_v6(pkt, usize::from(hdr.gso_size), out),
        other => Err(WireError::UnsupportedGso(other)),
    }
}

/// Completes a partial (`NEEDS_CSUM`) checksum as a device would: the ones'-complement sum
/// from `start` to the end of the packet, the field at `start + offset` included (it holds the
/// pseudo-header sum), complemented and stored there. The caller checks the bounds.
fn complete_partial_checksum(pkt: &mut [u8], start: usize, offset: usize) {
    let c = checksum::finish(checksum::add(0, &pkt[start..]));
    // UDP would send 0 as "no checksum"; for TCP 0 and 0xffff are the same value.
    let c = checksum::udp_nonzero(c);
    pkt[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
}

/// Cuts an IPv6 TCP packet (no extension headers) whose payload is longer than `mss` into
/// segments of at most `mss` payload bytes, as the kernel's TCP segmentation offload would:
/// the sequence number advances by each segment's payload, CWR stays on the first segment
/// only, FIN and PSH on the last only, and every segment gets its payload length and a full
/// TCP checksum computed from scratch (whatever the input's checksum field held, partial or
/// not). Segments are appended to `out`; returns how many.
pub fn segment_tcp_v6(pkt: &[u8], mss: usize, out: &mut PacketBatch) -> Result<usize, WireError> {
    const IP6: usize = 40;
    if mss == 0 {
        return Err(WireError::ZeroGsoSize);
    }
    if pkt.len() < IP6 + 20 || pkt[0] >> 4 != 6 || pkt[6] != 6 {
        return Err(WireError::NotTcpV6);
    }
    let thl = usize::from(pkt[IP6 + 12] >> 4) * 4;
    let end = IP6 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if thl < 20 || IP6 + thl > end || end > pkt.len() {
        return Err(WireError::NotTcpV6);
    }
    let addr_sum = checksum::add(0, &pkt[8..40]);
    let count = cut_tcp(pkt, IP6, thl, end, addr_sum, mss, out, |b, _, l4_len| {
        b[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    });
    Ok(count)
}

/// Cuts the TCP payload of `pkt` (an IP header of `ip` bytes, a TCP header of `thl`, payload up
/// to `end`) into segments of at most `mss` bytes appended to `out`, as TCP segmentation
/// offload does: the sequence number advances by each segment's payload, CWR stays on the
/// first segment only, FIN and PSH on the last only, and each segment gets a full TCP checksum
/// (`addr_sum`: the sum of the pseudo-header's addresses). `fix_ip(segment, index, tcp
/// length)` sets the IP header's own fields. Returns how many segments.
#[allow(clippy::too_many_arguments)]
fn cut_tcp(
    pkt: &[u8],
    ip: usize,
    thl: usize,
    end: usize,
    addr_sum: u64,
    mss: usize,
    out: &mut PacketBatch,
    fix_ip: impl Fn(&mut [u8], usize, usize),
) -> usize {
    const CWR: u8 = 0x80;
    const PSH: u8 = 0x08;
    const FIN: u8 = 0x01;
    let headers = &pkt[..ip + thl];
    let payload = &pkt[ip + thl..end];
    let seq = u32::from_be_bytes([pkt[ip + 4], pkt[ip + 5], pkt[ip + 6], pkt[ip + 7]]);
    let flags = pkt[ip + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let from = (i * mss).min(payload.len());
        let chunk = &payload[from..(from + mss).min(payload.len())];
        let l4_len = thl + chunk.len();
        out.push_with(ip + l4_len, |b| {
            b[..headers.len()].copy_from_slice(headers);
            b[headers.len()..ip + l4_len].copy_from_slice(chunk);
            fix_ip(b, i, l4_len);
            let s = seq.wrapping_add(from as u32);
            b[ip + 4..ip + 8].copy_from_slice(&s.to_be_bytes());
            let mut f = flags;
            if i > 0 {
                f &= !CWR;
            }
            if i + 1 < count {
                f &= !(FIN | PSH);
            }
            b[ip + 13] = f;
            b[ip + 16..ip + 18].copy_from_slice(&[0, 0]);
            let sum = checksum::add(addr_sum + l4_len as u64 + 6, &b[ip..ip + l4_len]);
            b[ip + 16..ip + 18].copy_from_slice(&checksum::finish(sum).to_be_bytes());
            ip + l4_len
        });
    }
    count
}

/// The TCP/IPv4 headers of a complete packet: `(ip header length, tcp header length, end of
/// the IP packet)`, or `None` if it is not an unfragmented IPv4 TCP packet whose lengths agree.
fn tcp4_layout(pkt: &[u8]) -> Option<(usize, usize, usize)> {
    if pkt.len() < 40 || pkt[0] >> 4 != 4 || pkt[9] != 6 {
        return None;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let end = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    // More fragments, or a fragment offset: not a whole TCP segment.
    if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 || ihl < 20 {
        return None;
    }
    let thl = usize::from(*pkt.get(ihl + 12)? >> 4) * 4;
    if thl < 20 || ihl + thl > end || end > pkt.len() {
        return None;
    }
    Some((ihl, thl, end))
}

/// Prepares a translated TCP/IPv4 super-packet (a GRO-merged one, whose segments carried
/// `mss` payload bytes each) to be written whole into a tun with `IFF_VNET_HDR`, so that the
/// kernel cuts it into segments again wherever it must (forwarding to a link with a smaller
/// MTU) instead of refusing it as too big: the TCP checksum field is set to the pseudo-header
/// sum (`NEEDS_CSUM`, as the kernel's own TSO packets carry it) and the returned header says
/// `GSO_TCPV4` with `gso_size = mss`.
///
/// `None` (the packet is left as it is, a plain packet with its full checksum) when it is
/// not an IPv4 TCP packet, when `mss` is 0, or when its payload fits in one segment.
pub fn tcp4_gso_for_tun(pkt: &mut [u8], mss: u16) -> Option<VnetHdr> {
    let (ihl, thl, end) = tcp4_layout(pkt)?;
    let payload = end - ihl - thl;
    if mss == 0 || payload <= usize::from(mss) {
        return None;
    }
    let l4_len = (end - ihl) as u64;
    let pseudo = checksum::add(0, &pkt[12..20]) + 6 + l4_len;
    pkt[ihl + 16..ihl + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    Some(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: (ihl + thl) as u16,
        gso_size: mss,
        csum_start: ihl as u16,
        csum_offset: 16,
    })
}

/// The segment size to give a translated TCP/IPv4 packet that is bigger than an uplink of
/// IPv6 MTU `mtu6` can carry, so it was merged by GRO from several segments: the largest
/// payload one segment on that uplink could have had (`mtu6` − 40 − the TCP header). For a
/// cooked receive socket (`AF_PACKET`/`SOCK_DGRAM`, where the kernel refuses
/// `PACKET_VNET_HDR`), which does not tell the original segment size (with virtio headers,
/// [`received_segment_size`] has it): every original segment was at most this big, so the
/// segments cut at this size fit wherever the uplink's did, 20 bytes smaller.
/// `None` for a packet that fits (or is not TCP/IPv4).
pub fn gro_segment_size(pkt: &[u8], mtu6: u32) -> Option<u16> {
    let (ihl, thl, end) = tcp4_layout(pkt)?;
    let mtu6 = usize::try_from(mtu6).ok()?;
    if end + 20 <= mtu6 {
        return None;
    }
    let mss = mtu6.checked_sub(40 + thl).filter(|&m| m > 0)?;
    (end - ihl - thl > mss)
        .then(|| u16::try_from(mss).ok())
        .flatten()
}

/// A frame from a receive packet socket with `PACKET_VNET_HDR`: `[virtio_net_hdr][link-layer
/// header of `net_off` octets][IPv6 packet]` (the kernel writes the header in the host's
/// virtio order, little-endian on the hosts we build for). Returns the header and the offset of
/// the IPv6 packet; `None` if the frame is shorter than both headers.
pub fn split_rx_frame(frame: &[u8], net_off: usize) -> Option<(VnetHdr, usize)> {
    let vh = VnetHdr::from_le_bytes(frame)?;
    let start = VnetHdr::LEN.checked_add(net_off)?;
    (start <= frame.len()).then_some((vh, start))
}

/// The segment size to give the translated TCP/IPv4 packet `pkt`, when the TCP/IPv6 packet it
/// came from arrived GRO-merged with virtio header `vh`: the original `gso_size` (the payload
/// is the same on both sides, so segments of that size fit wherever the uplink's did, 20
/// octets smaller). `None` if `vh` is not TCP/IPv6 GSO or `pkt` is not bigger than one segment.
pub fn received_segment_size(vh: &VnetHdr, pkt: &[u8]) -> Option<u16> {
    if vh.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_TCPV6 || vh.gso_size == 0 {
        return None;
    }
    let (ihl, thl, end) = tcp4_layout(pkt)?;
    (end - ihl - thl > usize::from(vh.gso_size)).then_some(vh.gso_size)
}

/// [`segment_tcp_v6`] for IPv4: cuts a TCP/IPv4 packet (a translated GRO super-packet, for
/// a tun without a virtio header) into segments of at most `mss` payload bytes. Each segment
/// gets its total length, the identification of the packet plus its index, a new header
/// checksum and a full TCP checksum. Returns how many were appended to `out`.
pub fn segment_tcp_v4(pkt: &[u8], mss: usize, out: &mut PacketBatch) -> Result<usize, WireError> {
    if mss == 0 {
        return Err(WireError::ZeroGsoSize);
    }
    let (ihl, thl, end) = tcp4_layout(pkt).ok_or(WireError::NotTcpV4)?;
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let addr_sum = checksum::add(0, &pkt[12..20]);
    let count = cut_tcp(pkt, ihl, thl, end, addr_sum, mss, out, |b, i, l4_len| {
        b[2..4].copy_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
        b[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        b[10..12].copy_from_slice(&[0, 0]);
        let h = checksum::finish(checksum::add(0, &b[..ihl]));
        b[10..12].copy_from_slice(&h.to_be_bytes());
    });
    Ok(count)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use etherparse::{Ipv6Header, PacketBuilder, TcpHeader};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xc1, 0xa7];
    const DST6: [u8; 16] = [
        0x20, 1, 0xd, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 198, 51, 100, 10,
    ];

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// An IPv6 TCP packet with timestamps, sequence `seq`, the given flags set.
    fn tcp6(payload: &[u8], seq: u32, fin: bool, psh: bool, cwr: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv6(SRC6, DST6, 64)
            .tcp(40000, 5201, seq, 512)
            .ack(77)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap();
        if fin {
            b = b.fin();
        }
        if psh {
            b = b.psh();
        }
        if cwr {
            b = b.cwr();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    /// Parses every segment, checks addresses, length and checksum, and returns (seq, header,
    /// payload) per segment.
    fn parse_all(out: &PacketBatch) -> Vec<(u32, TcpHeader, Vec<u8>)> {
        out.iter()
            .map(|p| {
                let (ip, rest) = Ipv6Header::from_slice(p).unwrap();
                assert_eq!(ip.source, SRC6);
                assert_eq!(ip.destination, DST6);
                assert_eq!(usize::from(ip.payload_length), rest.len());
                let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
                let want = tcp.calc_checksum_ipv6(&ip, payload).unwrap();
                assert_eq!(
                    tcp.checksum, want,
                    "checksum of segment seq {}",
                    tcp.sequence_number
                );
                (tcp.sequence_number, tcp.clone(), payload.to_vec())
            })
            .collect()
    }

    #[test]
    fn segments_carry_the_payload_in_order_with_valid_checksums() {
        let d = data(3500);
        let pkt = tcp6(&d, 0xffff_fe00, true, true, true);
        let mut out = PacketBatch::default();
        assert_eq!(segment_tcp_v6(&pkt, 1000, &mut out), Ok(4));
        let segs = parse_all(&out);
        assert_eq!(segs.len(), 4);
        let mut joined = Vec::new();
        for (i, (seq, h, p)) in segs.iter().enumerate() {
            // The sequence number wraps past 2^32 on the way.
            assert_eq!(*seq, 0xffff_fe00u32.wrapping_add(1000 * i as u32));
            assert_eq!(h.cwr, i == 0, "CWR on the first segment only");
            assert_eq!(h.fin, i == 3, "FIN on the last segment only");
            assert_eq!(h.psh, i == 3, "PSH on the last segment only");
            assert!(h.ack);
            assert_eq!(h.acknowledgment_number, 77);
            assert_eq!(
                h.options.as_slice().len(),
                12,
                "options kept on every segment"
            );
            assert_eq!(p.len(), if i == 3 { 500 } else { 1000 });
            joined.extend_from_slice(p);
        }
        assert_eq!(joined, d);
    }

    #[test]
    fn a_payload_of_exactly_one_mss_and_an_empty_one_give_one_segment() {
        for len in [0, 1000] {
            let pkt = tcp6(&data(len), 5, false, true, false);
            let mut out = PacketBatch::default();
            assert_eq!(segment_tcp_v6(&pkt, 1000, &mut out), Ok(1));
            let segs = parse_all(&out);
            assert!(segs[0].1.psh);
            assert_eq!(segs[0].2, data(len));
        }
    }

    #[test]
    fn the_input_checksum_field_does_not_matter() {
        let d = data(2000);
        let mut pkt = tcp6(&d, 1, false, false, false);
        pkt[56..58].copy_from_slice(&[0x12, 0x34]);
        let mut out = PacketBatch::default();
        assert_eq!(segment_tcp_v6(&pkt, 1448, &mut out), Ok(2));
        parse_all(&out);
    }

    #[test]
    fn malformed_gso_packets_are_refused() {
        let pkt = tcp6(&data(100), 1, false, false, false);
        let mut out = PacketBatch::default();
        assert_eq!(
            segment_tcp_v6(&pkt, 0, &mut out),
            Err(WireError::ZeroGsoSize)
        );
        assert_eq!(
            segment_tcp_v6(&pkt[..50], 10, &mut out),
            Err(WireError::NotTcpV6)
        );
        let mut short = pkt.clone();
        short.truncate(pkt.len() - 1); // payload length says one byte more
        assert_eq!(
            segment_tcp_v6(&short, 10, &mut out),
            Err(WireError::NotTcpV6)
        );
        let mut udp = pkt.clone();
        udp[6] = 17;
        assert_eq!(segment_tcp_v6(&udp, 10, &mut out), Err(WireError::NotTcpV6));
        assert!(out.is_empty());
        let h = VnetHdr {
            gso_type: VnetHdr::GSO_UDP_L4,
            gso_size: 100,
            ..VnetHdr::default()
        };
        assert_eq!(
            to_wire_packets(&h, &pkt, &mut out),
            Err(WireError::UnsupportedGso(VnetHdr::GSO_UDP_L4))
        );
    }

    /// A TSO4 super-packet as a tun with IFF_VNET_HDR hands it over (partial checksum holding
    /// the pseudo-header sum over the whole length), translated and cut for the wire.
    #[test]
    fn a_tso4_super_packet_from_the_tun_becomes_valid_ipv6_segments() {
        let src4 = Ipv4Addr::new(192, 0, 0, 4);
        let dst4 = Ipv4Addr::new(198, 51, 100, 10);
        let d = data(10_000);
        let mut pkt = Vec::new();
        PacketBuilder::ipv4(src4.octets(), dst4.octets(), 64)
            .tcp(40000, 5201, 1000, 512)
            .ack(9)
            .psh()
            .write(&mut pkt, &d)
            .unwrap();
        let l4_len = (pkt.len() - 20) as u64;
        let pseudo = checksum::add(0, &pkt[12..20]) + 6 + l4_len;
        pkt[36..38].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut t = Translator::new(super::super::XlatConfig {
            v4: src4,
            v6: Ipv6Addr::from(SRC6),
            prefix: "2001:db8:64::/96".parse().unwrap(),
            mtu6: 1500,
            clat_prefix: None,
        });
        let (mut v6, mut v4) = (PacketBatch::default(), PacketBatch::default());
        let (v, oh) = t.ipv4_to_ipv6_offload(&hdr, &pkt, &mut v6, &mut v4);
        assert_eq!(v, Verdict::Translated);
        assert_eq!(oh.gso_type, VnetHdr::GSO_TCPV6);
        assert_eq!(v6.len(), 1);
        let mut out = PacketBatch::default();
        assert_eq!(to_wire_packets(&oh, v6.get(0).unwrap(), &mut out), Ok(8));
        let segs = parse_all(&out);
        let joined: Vec<u8> = segs.iter().flat_map(|s| s.2.clone()).collect();
        assert_eq!(joined, d);
        assert!(segs.iter().all(|s| s.1.psh == (s.0 == 1000 + 7 * 1400)));
        assert!(out.iter().all(|p| p.len() <= 1500));
    }

    /// A non-GSO packet with a partial checksum is completed, so a raw socket can send it.
    #[test]
    fn a_partial_checksum_is_completed() {
        let d = data(300);
        let mut pkt = tcp6(&d, 1, false, true, false);
        let l4_len = (pkt.len() - 40) as u64;
        let pseudo = checksum::add(0, &pkt[8..40]) + 6 + l4_len;
        pkt[56..58].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut out = PacketBatch::default();
        assert_eq!(to_wire_packets(&hdr, &pkt, &mut out), Ok(1));
        assert_eq!(parse_all(&out)[0].2, d);
        let bad = VnetHdr {
            csum_start: 40,
            csum_offset: 400,
            ..hdr
        };
        assert!(matches!(
            to_wire_packets(&bad, &pkt, &mut out),
            Err(WireError::BadChecksumOffset { .. })
        ));
    }

    /// An IPv4 TCP packet (DF, identification 0x1234) with timestamps and the given flags.
    fn tcp4(payload: &[u8], seq: u32, fin: bool, psh: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4([192, 0, 0, 1], [198, 51, 100, 10], 64)
            .tcp(40000, 5201, seq, 512)
            .ack(77)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap();
        if fin {
            b = b.fin();
        }
        if psh {
            b = b.psh();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        out[6] |= 0x40;
        out[10..12].copy_from_slice(&[0, 0]);
        let h = checksum::finish(checksum::add(0, &out[..20]));
        out[10..12].copy_from_slice(&h.to_be_bytes());
        out
    }

    #[test]
    fn a_tcp4_super_packet_is_cut_into_valid_segments() {
        let d = data(5000);
        let pkt = tcp4(&d, 0xffff_ff00, true, true);
        let mut out = PacketBatch::default();
        assert_eq!(segment_tcp_v4(&pkt, 1448, &mut out), Ok(4));
        let mut joined = Vec::new();
        for (i, p) in out.iter().enumerate() {
            let (ip, rest) = etherparse::Ipv4Header::from_slice(p).unwrap();
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(usize::from(ip.total_len), p.len());
            assert_eq!(ip.identification, 0x1234 + i as u16);
            assert!(ip.dont_fragment);
            let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
            assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(&ip, payload).unwrap());
            assert_eq!(
                tcp.sequence_number,
                0xffff_ff00u32.wrapping_add(1448 * i as u32)
            );
            let last = i == 3;
            assert_eq!((tcp.fin, tcp.psh), (last, last), "segment {i}");
            assert!(payload.len() <= 1448);
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, d);
        // Not TCP over IPv4: refused, nothing appended.
        let mut v6 = PacketBatch::default();
        let p6 = tcp6(&d, 1, false, false, false);
        assert_eq!(segment_tcp_v4(&p6, 1448, &mut v6), Err(WireError::NotTcpV4));
        assert!(v6.is_empty());
        assert_eq!(
            segment_tcp_v4(&pkt, 0, &mut v6),
            Err(WireError::ZeroGsoSize)
        );
    }

    #[test]
    fn a_tcp4_super_packet_gets_gso_metadata_and_a_partial_checksum() {
        let d = data(4000);
        let pkt = tcp4(&d, 7, false, true);
        let mut p = pkt.clone();
        let h = tcp4_gso_for_tun(&mut p, 1448).unwrap();
        assert_eq!(h.gso_type, VnetHdr::GSO_TCPV4);
        assert_eq!(h.flags, VnetHdr::F_NEEDS_CSUM);
        assert_eq!((h.gso_size, h.hdr_len), (1448, 20 + 32));
        assert_eq!((h.csum_start, h.csum_offset), (20, 16));
        // Completing the partial checksum as a device would gives the original one back.
        complete_partial_checksum(&mut p, 20, 16);
        assert_eq!(p, pkt);
        // A packet that fits in one segment, a zero MSS, or not TCP: left alone.
        let mut small = tcp4(&d[..1000], 7, false, false);
        let before = small.clone();
        assert_eq!(tcp4_gso_for_tun(&mut small, 1448), None);
        assert_eq!(tcp4_gso_for_tun(&mut p, 0), None);
        let mut v6 = tcp6(&d, 1, false, false, false);
        assert_eq!(tcp4_gso_for_tun(&mut v6, 1448), None);
        assert_eq!(small, before);
    }

    #[test]
    fn a_gro_merged_packet_gets_the_uplinks_largest_segment_size() {
        let d = data(4000);
        // 20 + 32 + 4000 bytes: more than an uplink of MTU 1500 carries (1480 after
        // translation); segments of 1500 - 40 - 32 payload bytes.
        let pkt = tcp4(&d, 7, false, false);
        assert_eq!(gro_segment_size(&pkt, 1500), Some(1428));
        // One segment's worth: exactly what the uplink carries, not merged.
        let one = tcp4(&d[..1428], 7, false, false);
        assert_eq!(gro_segment_size(&one, 1500), None);
        let over = tcp4(&d[..1429], 7, false, false);
        assert_eq!(gro_segment_size(&over, 1500), Some(1428));
        assert_eq!(gro_segment_size(&pkt, 9000), None);
        assert_eq!(
            gro_segment_size(&tcp6(&d, 1, false, false, false), 1500),
            None
        );
    }

    #[test]
    fn a_received_frame_splits_into_virtio_header_and_packet() {
        let h = VnetHdr {
            gso_type: VnetHdr::GSO_TCPV6,
            gso_size: 1348,
            hdr_len: 72,
            ..VnetHdr::default()
        };
        let mut frame = h.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0xaa; 14]);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(split_rx_frame(&frame, 14), Some((h, 24)));
        assert_eq!(&frame[24..], &[0x60, 0, 0, 0]);
        // No link-layer header (a tun or WireGuard uplink).
        assert_eq!(split_rx_frame(&frame[..14], 0), Some((h, 10)));
        // Shorter than the headers it claims.
        assert_eq!(split_rx_frame(&frame[..20], 14), None);
        assert_eq!(split_rx_frame(&frame[..9], 0), None);
        assert_eq!(split_rx_frame(&frame, usize::MAX), None);
    }

    #[test]
    fn a_received_gso_packet_keeps_its_own_segment_size() {
        let d = data(4000);
        let pkt = tcp4(&d, 7, false, false);
        let gso = |t: u8, size: u16| VnetHdr {
            gso_type: t,
            gso_size: size,
            ..VnetHdr::default()
        };
        // Segments of 1348 (a downstream MTU of 1400 clamped the MSS): that, not the
        // uplink's 1428.
        assert_eq!(
            received_segment_size(&gso(VnetHdr::GSO_TCPV6, 1348), &pkt),
            Some(1348)
        );
        assert_eq!(
            received_segment_size(&gso(VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN, 1348), &pkt),
            Some(1348)
        );
        // Not TCP/IPv6 GSO, no size, or a packet of one segment: nothing to mark.
        assert_eq!(
            received_segment_size(&gso(VnetHdr::GSO_NONE, 1348), &pkt),
            None
        );
        assert_eq!(
            received_segment_size(&gso(VnetHdr::GSO_UDP_L4, 1348), &pkt),
            None
        );
        assert_eq!(
            received_segment_size(&gso(VnetHdr::GSO_TCPV6, 0), &pkt),
            None
        );
        assert_eq!(
            received_segment_size(&gso(VnetHdr::GSO_TCPV6, 4000), &pkt),
            None
        );
        assert_eq!(
            received_segment_size(
                &gso(VnetHdr::GSO_TCPV6, 1348),
                &tcp6(&d, 1, false, false, false)
            ),
            None
        );
    }
}
