//! Translation with checksum and segmentation offload metadata: `struct virtio_net_hdr`, as a
//! tun device opened with `IFF_VNET_HDR` (and a packet socket with `PACKET_VNET_HDR`) puts
//! before every packet.
//!
//! With `NEEDS_CSUM` the L4 checksum field holds only the pseudo-header sum; it is updated
//! for the new pseudo-header and left for the device (or the kernel) to complete. A GSO
//! packet (TCPv4 ↔ TCPv6, UDP L4) is translated whole and keeps its `gso_size`: it is cut
//! into segments after translation, so it is never fragmented here.

use super::{DropReason, Offload, PacketBatch, Translator, Verdict};

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
