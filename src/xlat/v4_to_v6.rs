//! IPv4 → IPv6 (RFC 7915 §4).

use std::net::Ipv6Addr;

use super::checksum as cs;
use super::icmp::{self, ICMP6_ERROR_MAX};
use super::{
    be16, v4_at, write_fragment_header, write_ipv6_header, DropReason, Offload, PacketBatch, Patch,
    Translator, V4Fields, Verdict, MAX_FRAGMENT_END,
};

/// The header fields of an IPv4 packet and its header length. Only the header itself is
/// checked against the bytes present (the packet inside an ICMP error may be truncated).
pub(super) fn parse_v4_header(b: &[u8]) -> Result<(V4Fields, usize), DropReason> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(b[0] & 0xf) * 4;
    let total = be16(b, 2);
    if ihl < 20 || b.len() < ihl || usize::from(total) < ihl {
        return Err(DropReason::Malformed);
    }
    let flags = be16(b, 6);
    Ok((
        V4Fields {
            tos: b[1],
            total_len: total,
            id: be16(b, 4),
            df: flags & 0x4000 != 0,
            mf: flags & 0x2000 != 0,
            offset: usize::from(flags & 0x1fff) * 8,
            ttl: b[8],
            proto: b[9],
            src: v4_at(b, 12),
            dst: v4_at(b, 16),
        },
        ihl,
    ))
}

/// RFC 7915 §4.1: whether the IPv4 options hold an unexpired loose or strict source route.
fn unexpired_source_route(opts: &[u8]) -> bool {
    source_route_at(opts).is_some()
}

/// The position of the pointer octet of an unexpired source route option.
fn source_route_at(opts: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            t => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if (t == 131 || t == 137) && len >= 3 && usize::from(opts[i + 2]) <= len {
                    return Some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// Protocol numbers that are IPv6 extension headers (or ICMPv6) and so cannot be carried
/// unchanged as an IPv6 Next Header.
fn ambiguous_in_ipv6(proto: u8) -> bool {
    matches!(
        proto,
        0 | 43 | 44 | 58 | 59 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

impl Translator {
    pub(super) fn v4_to_v6(
        &mut self,
        pkt: &[u8],
        to_v6: &mut PacketBatch,
        to_v4: &mut PacketBatch,
        mut off: Option<&mut Offload>,
    ) -> Verdict {
        use DropReason::*;
        let (h, ihl) = match parse_v4_header(pkt) {
            Ok(x) => x,
            Err(r) => return Verdict::Dropped(r),
        };
        let total = usize::from(h.total_len);
        if total > pkt.len() || cs::fold(cs::add(0, &pkt[..ihl])) != 0xffff {
            return Verdict::Dropped(Malformed);
        }
        let Some(src6) = self.local6(h.src) else {
            return Verdict::Dropped(NotOurs);
        };
        if !super::is_remote_unicast(h.dst, self.cfg.v4) {
            return Verdict::Dropped(NotOurs);
        }
        let pkt = &pkt[..total];
        // No IPv4 datagram is longer than 65535 octets (RFC 791), and no reassembled IPv6
        // payload either (RFC 8200 §4.5). A fragment whose data ends beyond 65535 − 20 belongs
        // to no valid datagram; translated, its pieces would end past what IPv6 can reassemble
        // and their offsets past the 13-bit field (they would wrap to small offsets and corrupt
        // the reassembly of another datagram). Drop it, as Linux's reassembly does.
        if h.offset + (total - ihl) > MAX_FRAGMENT_END {
            return Verdict::Dropped(Malformed);
        }
        if unexpired_source_route(&pkt[20..ihl]) {
            self.send_icmp4_error(to_v4, 3, 5, [0; 4], pkt);
            return Verdict::Dropped(SourceRoute);
        }
        if h.ttl == 0 {
            self.send_icmp4_error(to_v4, 11, 0, [0; 4], pkt);
            return Verdict::Dropped(TtlExceeded);
        }
        let payload = &pkt[ihl..];
        let is_frag = h.mf || h.offset != 0;
        let first = h.offset == 0;
        let dst6 = self.cfg.prefix.embed(h.dst);
        let (src_old, src_new) = if h.src == self.cfg.v4 {
            (self.sum_v4, self.sum_v6)
        } else {
            (cs::sum_v4(h.src), cs::sum_v6(src6))
        };
        let addr_old = src_old + cs::sum_v4(h.dst);
        let addr_new = src_new + cs::sum_v6(dst6);
        // Offload: the L4 checksum field may hold only the pseudo-header sum (NEEDS_CSUM), and
        // a GSO packet is cut to size later, so it is never fragmented here.
        let (partial, gso) = match off.as_deref() {
            Some(o) => {
                if (o.want_proto != 0 && h.proto != o.want_proto)
                    || ((o.partial || o.gso) && (is_frag || !matches!(h.proto, 6 | 17)))
                {
                    return Verdict::Dropped(Unsupported);
                }
                let at = if h.proto == 6 { 16 } else { 6 };
                if o.partial && (o.csum_start != ihl || o.csum_offset != at) {
                    return Verdict::Dropped(Unsupported);
                }
                (o.partial, o.gso)
            }
            None => (false, false),
        };

        let (next, mut patch) = match h.proto {
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
                let c = if old == 0 {
                    // RFC 7915 §4.5: compute the checksum IPv6 requires; impossible for a
                    // fragment without reassembly, so those are dropped.
                    if is_frag {
                        return Verdict::Dropped(Unsupported);
                    }
                    let ulen = usize::from(be16(payload, 4));
                    if ulen < 8 || ulen > payload.len() {
                        return Verdict::Dropped(Malformed);
                    }
                    cs::finish(
                        cs::pseudo_v6(src6, dst6, 17, ulen as u32) + cs::add(0, &payload[..ulen]),
                    )
                } else {
                    cs::update(old, addr_old, addr_new)
                };
                (17, Patch::csum(6, cs::udp_nonzero(c)))
            }
            1 => {
                if is_frag {
                    // The ICMPv6 checksum covers a pseudo-header with the whole message
                    // length, unknown without reassembly (RFC 7915 §4.2).
                    return Verdict::Dropped(Unsupported);
                }
                if payload.len() < 8 {
                    return Verdict::Dropped(Malformed);
                }
                let new_type = match payload[0] {
                    8 => 128,
                    0 => 129,
                    3 | 11 | 12 => return self.icmp4_error_to_v6(&h, src6, payload, to_v6),
                    _ => return Verdict::Dropped(Unsupported),
                };
                let code = payload[1];
                let old = u64::from(be16(payload, 0));
                let new = (u64::from(new_type) << 8)
                    + u64::from(code)
                    + cs::pseudo_v6(src6, dst6, 58, payload.len() as u32);
                let c = cs::update(be16(payload, 2), old, new);
                (58, Patch::icmp(new_type, code, c))
            }
            p if ambiguous_in_ipv6(p) => return Verdict::Dropped(Unsupported),
            p => (p, Patch::none()),
        };

        let frag_len = if is_frag { 8 } else { 0 };
        let out_len = 40 + frag_len + payload.len();
        let mtu = self.mtu6();
        let id = u32::from(h.id);
        if let Some(o) = off.as_deref_mut() {
            o.l4_start_in = ihl;
            o.l4_start_out = 40 + frag_len;
            o.partial_kept = partial;
        }
        if out_len <= mtu || gso {
            to_v6.push_with(out_len, |o| {
                if is_frag {
                    write_ipv6_header(o, h.tos, (out_len - 40) as u16, 44, h.ttl, src6, dst6);
                    write_fragment_header(&mut o[40..48], next, h.offset, h.mf, id);
                } else {
                    write_ipv6_header(o, h.tos, (out_len - 40) as u16, next, h.ttl, src6, dst6);
                }
                patch.copy(&mut o[40 + frag_len..], payload, 0);
                out_len
            });
            return Verdict::Translated;
        }
        if h.df {
            // RFC 7915 §4 / RFC 1191: tell the host the largest IPv4 packet that fits.
            let mtu4 = (mtu - 20 - frag_len).min(65535) as u16;
            let m = mtu4.to_be_bytes();
            self.send_icmp4_error(to_v4, 3, 4, [0, 0, m[0], m[1]], pkt);
            return Verdict::Dropped(TooBig);
        }
        if partial {
            // Fragments cannot leave the checksum to the device: finish it here.
            let at = if h.proto == 6 { 16 } else { 6 };
            let c = cs::update(cs::finish(cs::add(0, payload)), addr_old, addr_new);
            let c = if h.proto == 17 { cs::udp_nonzero(c) } else { c };
            patch = Patch::csum(at, c);
        }
        if let Some(o) = off {
            o.partial_kept = false;
            o.l4_start_out = 48;
        }
        // DF clear: fragment into IPv6 fragments that fit the uplink MTU, each a multiple of
        // eight bytes but the last, keeping the IPv4 Identification.
        let chunk_max = (mtu - 48) & !7;
        let mut p = 0;
        while p < payload.len() {
            let n = chunk_max.min(payload.len() - p);
            let more = p + n < payload.len() || h.mf;
            let chunk = &payload[p..p + n];
            let offset = h.offset + p;
            to_v6.push_with(48 + n, |o| {
                write_ipv6_header(o, h.tos, (8 + n) as u16, 44, h.ttl, src6, dst6);
                write_fragment_header(&mut o[40..48], next, offset, more, id);
                patch.copy(&mut o[48..], chunk, p);
                48 + n
            });
            self.counters.fragments_made += 1;
            p += n;
        }
        Verdict::Translated
    }

    /// RFC 7915 §4.2: an ICMPv4 error from the host, with the IPv4 packet inside translated
    /// too. `msg` is the whole ICMP message (not a fragment); `src6` is the IPv6 form of the
    /// host's address, `h.src`.
    fn icmp4_error_to_v6(
        &mut self,
        h: &V4Fields,
        src6: Ipv6Addr,
        msg: &[u8],
        to_v6: &mut PacketBatch,
    ) -> Verdict {
        use DropReason::*;
        // The message is rewritten and its checksum recomputed: check it first, so that a
        // corrupt message does not leave here with a valid checksum.
        if cs::fold(cs::add(0, msg)) != 0xffff {
            return Verdict::Dropped(Malformed);
        }
        let inner = &msg[8..];
        let (fi, ihl) = match parse_v4_header(inner) {
            Ok(x) => x,
            Err(r) => return Verdict::Dropped(r),
        };
        let Some((t6, c6, rest6)) = icmp::icmp4_error_to_icmp6(
            msg[0],
            msg[1],
            icmp::rest_of(msg),
            fi.total_len,
            self.mtu6(),
        ) else {
            return Verdict::Dropped(Unsupported);
        };
        let claimed = usize::from(fi.total_len);
        let ipay = &inner[ihl..inner.len().min(claimed.max(ihl))];
        let ifrag = fi.mf || fi.offset != 0;
        let ifirst = fi.offset == 0;
        // The packet inside was sent to the host that reports the error: its destination has
        // the host's (local) form, its source the far side's.
        let isrc6 = self.map4(fi.src);
        let idst6 = if fi.dst == h.src {
            src6
        } else {
            self.map4(fi.dst)
        };
        let old = cs::sum_v4(fi.src) + cs::sum_v4(fi.dst);
        let new = cs::sum_v6(isrc6) + cs::sum_v6(idst6);
        let (inext, patch) = match fi.proto {
            6 if ifirst && ipay.len() >= 18 => {
                (6, Patch::csum(16, cs::update(be16(ipay, 16), old, new)))
            }
            17 if ifirst && ipay.len() >= 8 && be16(ipay, 6) != 0 => (
                17,
                Patch::csum(6, cs::udp_nonzero(cs::update(be16(ipay, 6), old, new))),
            ),
            1 if !ifirst => (58, Patch::none()),
            1 => {
                let t = match ipay.first() {
                    Some(8) => 128,
                    Some(0) => 129,
                    // An error about an error, or about something without a counterpart.
                    _ => return Verdict::Dropped(Unsupported),
                };
                if ipay.len() >= 4 {
                    let ulen = (claimed - ihl) as u32;
                    let o = u64::from(be16(ipay, 0));
                    let n = (u64::from(t) << 8)
                        + u64::from(ipay[1])
                        + cs::pseudo_v6(isrc6, idst6, 58, ulen);
                    (58, Patch::icmp(t, ipay[1], cs::update(be16(ipay, 2), o, n)))
                } else {
                    (
                        58,
                        Patch {
                            at: 0,
                            bytes: [t, 0, 0, 0],
                            len: 1,
                        },
                    )
                }
            }
            p if ambiguous_in_ipv6(p) => return Verdict::Dropped(Unsupported),
            p => (p, Patch::none()),
        };
        let ifrag_len = if ifrag { 8 } else { 0 };
        let inner_hdr = 40 + ifrag_len;
        let inner_plen = (claimed - ihl + ifrag_len).min(65535) as u16;
        let body = ipay.len().min(ICMP6_ERROR_MAX - 40 - 8 - inner_hdr);
        let mlen = 8 + inner_hdr + body;
        let dst6 = self.cfg.prefix.embed(h.dst);
        to_v6.push_with(40 + mlen, |o| {
            write_ipv6_header(o, h.tos, mlen as u16, 58, h.ttl, src6, dst6);
            let m = &mut o[40..40 + mlen];
            m[0] = t6;
            m[1] = c6;
            m[2] = 0;
            m[3] = 0;
            m[4..8].copy_from_slice(&rest6);
            if ifrag {
                write_ipv6_header(&mut m[8..], fi.tos, inner_plen, 44, fi.ttl, isrc6, idst6);
                write_fragment_header(&mut m[48..56], inext, fi.offset, fi.mf, u32::from(fi.id));
            } else {
                write_ipv6_header(&mut m[8..], fi.tos, inner_plen, inext, fi.ttl, isrc6, idst6);
            }
            patch.copy(&mut m[8 + inner_hdr..], &ipay[..body], 0);
            let c = cs::finish(cs::pseudo_v6(src6, dst6, 58, mlen as u32) + cs::add(0, m));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            40 + mlen
        });
        Verdict::Translated
    }
}
