//! IPv6 → IPv4 (RFC 7915 §5).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum as cs;
use super::icmp;
use super::{
    be16, be32, v6_at, write_ipv4_header, DropReason, Offload, PacketBatch, Patch, Translator,
    V4Fields, Verdict, IPV4_DUMMY,
};

/// An IPv6 Fragment header's fields.
#[derive(Debug, Clone, Copy)]
pub(super) struct FragInfo {
    /// In bytes.
    pub offset: usize,
    pub more: bool,
    pub id: u32,
}

/// Where the upper layer starts after the extension headers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exts {
    /// The upper-layer protocol.
    pub proto: u8,
    /// Offset of the upper-layer header (or of the fragment data).
    pub start: usize,
    pub frag: Option<FragInfo>,
    /// Offset of the Segments Left octet of a routing header that still has segments left.
    pub routing_left_at: Option<usize>,
}

/// RFC 7915 §5.1: walks the extension headers of the IPv6 packet `b` (header included). Hop-by-
/// hop, destination options and routing headers are skipped, a Fragment header is recorded;
/// other extension headers (ESP, AH, mobility, HIP, shim6, experimental, No Next Header) are not
/// translatable. An extension header after a Fragment header is not supported.
pub(super) fn walk_exts(b: &[u8]) -> Result<Exts, DropReason> {
    let mut next = b[6];
    let mut at = 40;
    let mut frag = None;
    let mut routing_left_at = None;
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                if frag.is_some() {
                    return Err(DropReason::Unsupported);
                }
                if at + 8 > b.len() {
                    return Err(DropReason::Malformed);
                }
                let len = (usize::from(b[at + 1]) + 1) * 8;
                if at + len > b.len() {
                    return Err(DropReason::Malformed);
                }
                if next == 43 && b[at + 3] != 0 && routing_left_at.is_none() {
                    routing_left_at = Some(at + 3);
                }
                next = b[at];
                at += len;
            }
            44 => {
                if frag.is_some() {
                    return Err(DropReason::Unsupported);
                }
                if at + 8 > b.len() {
                    return Err(DropReason::Malformed);
                }
                let f = be16(b, at + 2);
                frag = Some(FragInfo {
                    offset: usize::from(f & 0xfff8),
                    more: f & 1 != 0,
                    id: be32(b, at + 4),
                });
                next = b[at];
                at += 8;
            }
            50 | 51 | 59 | 135 | 139 | 140 | 253 | 254 => return Err(DropReason::Unsupported),
            proto => {
                return Ok(Exts {
                    proto,
                    start: at,
                    frag,
                    routing_left_at,
                })
            }
        }
    }
    Err(DropReason::Unsupported)
}

/// Whether the ICMPv4 echo message made from the ICMPv6 echo `msg` (type `t4`) is all zero but
/// for its checksum (see [`cs::all_zero_fix`]).
fn echo4_all_zero(t4: u8, msg: &[u8]) -> bool {
    t4 == 0 && msg.get(1) == Some(&0) && msg.get(4..).is_some_and(|r| r.iter().all(|&b| b == 0))
}

impl Translator {
    pub(super) fn v6_to_v4(
        &mut self,
        pkt: &[u8],
        to_v4: &mut PacketBatch,
        to_v6: &mut PacketBatch,
        off: Option<&mut Offload>,
    ) -> Verdict {
        use DropReason::*;
        if pkt.len() < 40 || pkt[0] >> 4 != 6 {
            return Verdict::Dropped(Malformed);
        }
        let plen = usize::from(be16(pkt, 4));
        if plen == 0 {
            // A jumbogram (RFC 2675), or nothing to translate.
            return Verdict::Dropped(Unsupported);
        }
        if 40 + plen > pkt.len() {
            return Verdict::Dropped(Malformed);
        }
        let pkt = &pkt[..40 + plen];
        let src = v6_at(pkt, 8);
        let dst = v6_at(pkt, 24);
        let dst4 = match self.local4(dst) {
            Ok(a) => a,
            Err(r) => return Verdict::Dropped(r),
        };
        let ext = match walk_exts(pkt) {
            Ok(e) => e,
            Err(r) => {
                return Verdict::Dropped(if r == Unsupported && self.remote4(src).is_none() {
                    NotOurs
                } else {
                    r
                })
            }
        };
        let payload = &pkt[ext.start..];
        let first = ext.frag.is_none_or(|f| f.offset == 0);
        let is_icmp6_error = ext.proto == 58 && first && payload.first().is_some_and(|&t| t < 128);
        let src4 = match self.remote4(src) {
            Some(a) => a,
            // RFC 7915 §5.1 / RFC 7600: an ICMPv6 error from an IPv6 router on the path (not
            // inside the prefix) is still translated, from 192.0.0.8, when the packet inside is
            // one we sent; anything else from outside the prefix is not ours.
            None if is_icmp6_error && ext.frag.is_none() => IPV4_DUMMY,
            None => return Verdict::Dropped(NotOurs),
        };
        if let Some(f) = ext.frag {
            // The datagram this fragment belongs to would be longer than an IPv4 datagram can
            // be (or even than IPv6 allows, RFC 8200 §4.5): its IPv4 reassembly must fail.
            let end = f.offset + payload.len();
            if end > 65535 {
                return Verdict::Dropped(Malformed);
            }
            if end > super::MAX_FRAGMENT_END {
                return Verdict::Dropped(Unsupported);
            }
        }
        if let Some(at) = ext.routing_left_at {
            self.send_icmp6_error(to_v6, 4, 0, (at as u32).to_be_bytes(), pkt, is_icmp6_error);
            return Verdict::Dropped(RoutingHeader);
        }
        let hop = pkt[7];
        if hop == 0 {
            self.send_icmp6_error(to_v6, 3, 0, [0; 4], pkt, is_icmp6_error);
            return Verdict::Dropped(TtlExceeded);
        }
        let tc = (pkt[0] << 4) | (pkt[1] >> 4);
        let is_frag = ext.frag.is_some();
        let (dst_old, dst_new) = if dst == self.cfg.v6 {
            (self.sum_v6, self.sum_v4)
        } else {
            (cs::sum_v6(dst), cs::sum_v4(dst4))
        };
        let addr_old = cs::sum_v6(src) + dst_old;
        let addr_new = cs::sum_v4(src4) + dst_new;
        let partial = match off.as_deref() {
            Some(o) => {
                if (o.want_proto != 0 && ext.proto != o.want_proto)
                    || ((o.partial || o.gso) && (is_frag || !matches!(ext.proto, 6 | 17)))
                {
                    return Verdict::Dropped(Unsupported);
                }
                let at = if ext.proto == 6 { 16 } else { 6 };
                if o.partial && (o.csum_start != ext.start || o.csum_offset != at) {
                    return Verdict::Dropped(Unsupported);
                }
                o.partial
            }
            None => false,
        };

        let (proto4, patch) = match ext.proto {
            6 if first => {
                if payload.len() < 20 {
                    return Verdict::Dropped(Malformed);
                }
                let c = cs::update_maybe_partial(be16(payload, 16), addr_old, addr_new, partial);
                (6, Patch::csum(16, c))
            }
            17 if first && partial => {
                if payload.len() < 8 {
                    return Verdict::Dropped(Malformed);
                }
                let c = cs::update_maybe_partial(be16(payload, 6), addr_old, addr_new, true);
                (17, Patch::csum(6, c))
            }
            17 if first => {
                if payload.len() < 8 {
                    return Verdict::Dropped(Malformed);
                }
                let old = be16(payload, 6);
                if old == 0 {
                    // Zero-checksum UDP is not allowed in IPv6 (RFC 8200 §8.1).
                    return Verdict::Dropped(Malformed);
                }
                (
                    17,
                    Patch::csum(6, cs::udp_nonzero(cs::update(old, addr_old, addr_new))),
                )
            }
            58 => {
                if is_frag {
                    return Verdict::Dropped(Unsupported);
                }
                if payload.len() < 8 {
                    return Verdict::Dropped(Malformed);
                }
                let new_type = match payload[0] {
                    128 => 8,
                    129 => 0,
                    t if t < 128 => {
                        return self.icmp6_error_to_v4(pkt, &ext, (src, dst), (src4, dst4), to_v4)
                    }
                    _ => return Verdict::Dropped(Unsupported),
                };
                let code = payload[1];
                let old =
                    u64::from(be16(payload, 0)) + cs::pseudo_v6(src, dst, 58, payload.len() as u32);
                let new = (u64::from(new_type) << 8) + u64::from(code);
                let c = cs::update(be16(payload, 2), old, new);
                let c = cs::all_zero_fix(c, || echo4_all_zero(new_type, payload));
                (1, Patch::icmp(new_type, code, c))
            }
            1 => return Verdict::Dropped(Unsupported),
            p => (p, Patch::none()),
        };
        let total = 20 + payload.len();
        if total > 65535 {
            return Verdict::Dropped(Unsupported);
        }
        if let Some(o) = off {
            o.l4_start_in = ext.start;
            o.l4_start_out = 20;
            o.partial_kept = partial;
        }
        let f = self.v4_fields(tc, total, ext.frag, hop, proto4, src4, dst4);
        to_v4.push_with(total, |o| {
            write_ipv4_header(o, &f);
            patch.copy(&mut o[20..], payload, 0);
            total
        });
        Verdict::Translated
    }

    /// The IPv4 address of a far-side IPv6 address: inside the prefix and a plausible unicast.
    fn remote4(&self, a: Ipv6Addr) -> Option<std::net::Ipv4Addr> {
        self.cfg
            .prefix
            .extract(a)
            .filter(|&v4| super::is_remote_unicast(v4, self.cfg.v4))
    }

    /// RFC 7915 §5.1: the IPv4 header fields. With a Fragment header: its Identification (low
    /// 16 bits), offset and M flag, DF clear. Without: DF set when the packet is larger than
    /// 1260 bytes (Identification 0), else DF clear and a fresh Identification (RFC 6864).
    #[allow(clippy::too_many_arguments)]
    fn v4_fields(
        &mut self,
        tos: u8,
        total: usize,
        frag: Option<FragInfo>,
        ttl: u8,
        proto: u8,
        src: std::net::Ipv4Addr,
        dst: std::net::Ipv4Addr,
    ) -> V4Fields {
        let (id, df, mf, offset) = match frag {
            Some(fr) => (fr.id as u16, false, fr.more, fr.offset),
            None if total > 1260 => (0, true, false, 0),
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                (id, false, false, 0)
            }
        };
        V4Fields {
            tos,
            total_len: total as u16,
            id,
            df,
            mf,
            offset,
            ttl,
            proto,
            src,
            dst,
        }
    }

    /// RFC 7915 §5.2: an ICMPv6 error, with the IPv6 packet inside translated too. `addrs6`
    /// are the outer source and destination, `addrs4` their IPv4 forms.
    fn icmp6_error_to_v4(
        &mut self,
        pkt: &[u8],
        ext: &Exts,
        (src, dst): (Ipv6Addr, Ipv6Addr),
        (src4, dst4): (Ipv4Addr, Ipv4Addr),
        to_v4: &mut PacketBatch,
    ) -> Verdict {
        use DropReason::*;
        let msg = &pkt[ext.start..];
        if cs::fold(cs::pseudo_v6(src, dst, 58, msg.len() as u32) + cs::add(0, msg)) != 0xffff {
            return Verdict::Dropped(Malformed);
        }
        let inner = &msg[8..];
        if inner.len() < 40 || inner[0] >> 4 != 6 {
            return Verdict::Dropped(Malformed);
        }
        let isrc = v6_at(inner, 8);
        let idst = v6_at(inner, 24);
        // The packet inside must be one we sent: from our address (or, in stateless mode, the
        // downstream host's the error is for) to one inside the prefix.
        let isrc4 = if isrc == dst {
            Some(dst4)
        } else {
            self.map6(isrc)
        };
        let (Some(isrc4), Some(idst4)) = (isrc4, self.map6(idst)) else {
            return Verdict::Dropped(NotOurs);
        };
        if src4 == IPV4_DUMMY && isrc != dst {
            return Verdict::Dropped(NotOurs);
        }
        let iext = match walk_exts(inner) {
            Ok(e) => e,
            Err(r) => return Verdict::Dropped(r),
        };
        let Some((t4, c4, rest4)) = icmp::icmp6_error_to_icmp4(
            msg[0],
            msg[1],
            icmp::rest_of(msg),
            iext.frag.is_some(),
            self.mtu6(),
        ) else {
            return Verdict::Dropped(Unsupported);
        };
        let ext_len = iext.start - 40;
        let iplen = usize::from(be16(inner, 4));
        if iplen < ext_len {
            return Verdict::Dropped(Malformed);
        }
        let ulen = iplen - ext_len;
        let ipay = &inner[iext.start..inner.len().min(40 + iplen).max(iext.start)];
        let ifirst = iext.frag.is_none_or(|f| f.offset == 0);
        let old = cs::sum_v6(isrc) + cs::sum_v6(idst);
        let new = cs::sum_v4(isrc4) + cs::sum_v4(idst4);
        let (iproto, patch) = match iext.proto {
            6 if ifirst && ipay.len() >= 18 => {
                (6, Patch::csum(16, cs::update(be16(ipay, 16), old, new)))
            }
            17 if ifirst && ipay.len() >= 8 && be16(ipay, 6) != 0 => (
                17,
                Patch::csum(6, cs::udp_nonzero(cs::update(be16(ipay, 6), old, new))),
            ),
            58 if !ifirst => (1, Patch::none()),
            58 => {
                let t = match ipay.first() {
                    Some(128) => 8,
                    Some(129) => 0,
                    _ => return Verdict::Dropped(Unsupported),
                };
                if ipay.len() >= 4 {
                    let o = u64::from(be16(ipay, 0)) + cs::pseudo_v6(isrc, idst, 58, ulen as u32);
                    let n = (u64::from(t) << 8) + u64::from(ipay[1]);
                    let c = cs::update(be16(ipay, 2), o, n);
                    // Only a complete inner message can be known to be all zero.
                    let c = cs::all_zero_fix(c, || ipay.len() == ulen && echo4_all_zero(t, ipay));
                    (1, Patch::icmp(t, ipay[1], c))
                } else {
                    (
                        1,
                        Patch {
                            at: 0,
                            bytes: [t, 0, 0, 0],
                            len: 1,
                        },
                    )
                }
            }
            1 => return Verdict::Dropped(Unsupported),
            p => (p, Patch::none()),
        };
        let inner_total = 20 + ulen;
        if inner_total > 65535 {
            return Verdict::Dropped(Malformed);
        }
        let itc = (inner[0] << 4) | (inner[1] >> 4);
        let (id, df, mf, offset) = match iext.frag {
            Some(fr) => (fr.id as u16, false, fr.more, fr.offset),
            None => (0, true, false, 0),
        };
        let fi = V4Fields {
            tos: itc,
            total_len: inner_total as u16,
            id,
            df,
            mf,
            offset,
            ttl: inner[7],
            proto: iproto,
            src: isrc4,
            dst: idst4,
        };
        let mlen = 8 + 20 + ipay.len();
        let total = 20 + mlen;
        let tc = (pkt[0] << 4) | (pkt[1] >> 4);
        let f = self.v4_fields(tc, total, None, pkt[7], 1, src4, dst4);
        let f = V4Fields { df: false, ..f };
        to_v4.push_with(total, |o| {
            write_ipv4_header(o, &f);
            let m = &mut o[20..total];
            m[0] = t4;
            m[1] = c4;
            m[2] = 0;
            m[3] = 0;
            m[4..8].copy_from_slice(&rest4);
            write_ipv4_header(&mut m[8..], &fi);
            patch.copy(&mut m[28..], ipay, 0);
            let c = cs::finish(cs::add(0, m));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            total
        });
        Verdict::Translated
    }
}
