//! ICMP ↔ ICMPv6 type, code, pointer and MTU mappings (RFC 7915 §4.2 and §5.2), and the ICMP
//! errors the translator generates itself.

use super::checksum as cs;
use super::{
    be16, be32, v4_at, v6_at, write_ipv4_header, write_ipv6_header, PacketBatch, Translator,
    V4Fields, IPV4_DUMMY, IPV4_MIN_PTB_MTU, IPV6_MIN_MTU,
};

/// ICMPv4 errors carry at most this much (RFC 1812 §4.3.2.3: the error fits in 576 bytes).
const ICMP4_ERROR_MAX: usize = 576;
/// ICMPv6 errors carry at most this much (RFC 4443 §2.4 (c): the error fits in 1280 bytes).
pub(super) const ICMP6_ERROR_MAX: usize = 1280;

/// The RFC 1191 §7 plateau table, for Fragmentation Needed messages with an MTU of zero.
const PLATEAUS: [u32; 11] = [
    65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68,
];

/// Whether an ICMPv4 type is an error message.
pub(super) fn is_icmp4_error(typ: u8) -> bool {
    matches!(typ, 3 | 4 | 5 | 11 | 12)
}

/// RFC 7915 §4.2: the ICMPv6 type, code and the four "rest of header" bytes for an ICMPv4 error,
/// or `None` when the message is to be dropped silently. `inner_total` is the Total Length of
/// the IPv4 packet inside; `mtu6` the uplink MTU.
pub(super) fn icmp4_error_to_icmp6(
    typ: u8,
    code: u8,
    rest: [u8; 4],
    inner_total: u16,
    mtu6: usize,
) -> Option<(u8, u8, [u8; 4])> {
    match typ {
        // Destination Unreachable.
        3 => match code {
            0 | 1 | 5 | 6 | 7 | 8 | 11 | 12 => Some((1, 0, [0; 4])),
            // Protocol Unreachable: Parameter Problem, unrecognised Next Header, pointing at it.
            2 => Some((4, 1, 6u32.to_be_bytes())),
            3 => Some((1, 4, [0; 4])),
            4 => {
                let mut mtu4 = u32::from(u16::from_be_bytes([rest[2], rest[3]]));
                if mtu4 == 0 {
                    // RFC 7915 §4.2: the greatest plateau below the returned Total Length that
                    // is at least 1280.
                    mtu4 = PLATEAUS
                        .iter()
                        .copied()
                        .find(|&p| p < u32::from(inner_total) && p >= IPV6_MIN_MTU)
                        .unwrap_or(IPV6_MIN_MTU);
                }
                let mtu = (mtu4 + 20).min(mtu6 as u32).max(IPV6_MIN_MTU);
                Some((2, 0, mtu.to_be_bytes()))
            }
            9 | 10 | 13 | 15 => Some((1, 1, [0; 4])),
            _ => None,
        },
        // Time Exceeded: the code is kept.
        11 if code <= 1 => Some((3, code, [0; 4])),
        // Parameter Problem: pointer or bad length; the pointer is translated (Figure 3).
        12 if code == 0 || code == 2 => {
            let ptr = match rest[0] {
                0 => 0u32,
                1 => 1,
                2 | 3 => 4,
                8 => 7,
                9 => 6,
                12..=15 => 8,
                16..=19 => 24,
                _ => return None,
            };
            Some((4, 0, ptr.to_be_bytes()))
        }
        _ => None,
    }
}

/// RFC 7915 §5.2: the ICMPv4 type, code and "rest of header" for an ICMPv6 error, or `None`
/// when it is dropped silently. `inner_frag` says whether the packet inside has a Fragment
/// header (it changes the header size difference for Packet Too Big).
pub(super) fn icmp6_error_to_icmp4(
    typ: u8,
    code: u8,
    rest: [u8; 4],
    inner_frag: bool,
    mtu6: usize,
) -> Option<(u8, u8, [u8; 4])> {
    match typ {
        1 => match code {
            0 | 2 | 3 => Some((3, 1, [0; 4])),
            1 => Some((3, 10, [0; 4])),
            4 => Some((3, 3, [0; 4])),
            _ => None,
        },
        2 => {
            let diff = if inner_frag { 28 } else { 20 };
            let adv = u32::from_be_bytes(rest).saturating_sub(diff);
            let mtu = adv
                .min((mtu6 as u32).saturating_sub(20))
                .clamp(IPV4_MIN_PTB_MTU, 65535) as u16;
            let m = mtu.to_be_bytes();
            Some((3, 4, [0, 0, m[0], m[1]]))
        }
        3 if code <= 1 => Some((11, code, [0; 4])),
        4 => match code {
            0 => {
                let ptr = match u32::from_be_bytes(rest) {
                    0 => 0u8,
                    1 => 1,
                    4 | 5 => 2,
                    6 => 9,
                    7 => 8,
                    8..=23 => 12,
                    24..=39 => 16,
                    _ => return None,
                };
                Some((12, 0, [ptr, 0, 0, 0]))
            }
            1 => Some((3, 2, [0; 4])),
            _ => None,
        },
        _ => None,
    }
}

impl Translator {
    /// Sends an ICMPv4 error about `offending` (a whole IPv4 packet from the host) back to the
    /// host, from the RFC 7600 dummy address. Nothing is sent about ICMP errors, non-first
    /// fragments or packets from a non-unicast source (RFC 1812 §4.3.2.7).
    pub(super) fn send_icmp4_error(
        &mut self,
        to_v4: &mut PacketBatch,
        typ: u8,
        code: u8,
        rest: [u8; 4],
        offending: &[u8],
    ) {
        if offending.len() < 20 {
            return;
        }
        let ihl = usize::from(offending[0] & 0xf) * 4;
        let offset = be16(offending, 6) & 0x1fff;
        if offset != 0 {
            return;
        }
        if offending[9] == 1 && offending.get(ihl).is_some_and(|&t| is_icmp4_error(t)) {
            return;
        }
        let dst = v4_at(offending, 12);
        if dst.is_multicast() || dst.is_broadcast() || dst.is_unspecified() {
            return;
        }
        let body = offending.len().min(ICMP4_ERROR_MAX - 28);
        let total = 28 + body;
        let f = V4Fields {
            tos: 0,
            total_len: total as u16,
            id: 0,
            df: false,
            mf: false,
            offset: 0,
            ttl: 64,
            proto: 1,
            src: IPV4_DUMMY,
            dst,
        };
        to_v4.push_with(total, |o| {
            write_ipv4_header(o, &f);
            let m = &mut o[20..total];
            m[0] = typ;
            m[1] = code;
            m[2] = 0;
            m[3] = 0;
            m[4..8].copy_from_slice(&rest);
            m[8..].copy_from_slice(&offending[..body]);
            let c = cs::finish(cs::add(0, m));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            total
        });
        self.counters.icmp_errors_sent += 1;
    }

    /// Sends an ICMPv6 error about `offending` (a whole IPv6 packet addressed to us) back to its
    /// source, from our IPv6 address. `offending_is_error` says whether it is itself an ICMPv6
    /// error (RFC 4443 §2.4 (e): then nothing is sent).
    pub(super) fn send_icmp6_error(
        &mut self,
        to_v6: &mut PacketBatch,
        typ: u8,
        code: u8,
        rest: [u8; 4],
        offending: &[u8],
        offending_is_error: bool,
    ) {
        if offending_is_error || offending.len() < 40 {
            return;
        }
        let dst = v6_at(offending, 8);
        if dst.is_multicast() || dst.is_unspecified() {
            return;
        }
        // From the address the offending packet was sent to: ours, or in stateless mode the
        // downstream host's address inside the CLAT prefix.
        let src = v6_at(offending, 24);
        let body = offending.len().min(ICMP6_ERROR_MAX - 48);
        let mlen = 8 + body;
        to_v6.push_with(40 + mlen, |o| {
            write_ipv6_header(o, 0, mlen as u16, 58, 64, src, dst);
            let m = &mut o[40..40 + mlen];
            m[0] = typ;
            m[1] = code;
            m[2] = 0;
            m[3] = 0;
            m[4..8].copy_from_slice(&rest);
            m[8..].copy_from_slice(&offending[..body]);
            let c = cs::finish(cs::pseudo_v6(src, dst, 58, mlen as u32) + cs::add(0, m));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            40 + mlen
        });
        self.counters.icmp_errors_sent += 1;
    }
}

/// Reads the four "rest of header" bytes of an ICMP message (the caller checked the length).
pub(super) fn rest_of(msg: &[u8]) -> [u8; 4] {
    be32(msg, 4).to_be_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frag_needed_mtu_is_raised_by_20_and_floored() {
        let (t, c, r) = icmp4_error_to_icmp6(3, 4, [0, 0, 0x05, 0xc8], 1500, 1500).unwrap();
        assert_eq!((t, c, u32::from_be_bytes(r)), (2, 0, 1500)); // 1480 + 20
        let (_, _, r) = icmp4_error_to_icmp6(3, 4, [0, 0, 0x02, 0x40], 1500, 1500).unwrap();
        assert_eq!(u32::from_be_bytes(r), 1280); // 576 + 20 floored
        let (_, _, r) = icmp4_error_to_icmp6(3, 4, [0, 0, 0x23, 0x28], 9000, 1500).unwrap();
        assert_eq!(u32::from_be_bytes(r), 1500); // capped at the uplink MTU
        let (_, _, r) = icmp4_error_to_icmp6(3, 4, [0, 0, 0, 0], 4000, 9000).unwrap();
        assert_eq!(u32::from_be_bytes(r), 2022); // plateau 2002 + 20
    }

    #[test]
    fn packet_too_big_mtu_is_lowered_and_floored() {
        let (t, c, r) = icmp6_error_to_icmp4(2, 0, 1400u32.to_be_bytes(), false, 1500).unwrap();
        assert_eq!((t, c, u16::from_be_bytes([r[2], r[3]])), (3, 4, 1380));
        let (_, _, r) = icmp6_error_to_icmp4(2, 0, 1400u32.to_be_bytes(), true, 1500).unwrap();
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 1372);
        let (_, _, r) = icmp6_error_to_icmp4(2, 0, 1280u32.to_be_bytes(), false, 1500).unwrap();
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 1260);
        let (_, _, r) = icmp6_error_to_icmp4(2, 0, 500u32.to_be_bytes(), false, 1500).unwrap();
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 1260);
        let (_, _, r) = icmp6_error_to_icmp4(2, 0, 9000u32.to_be_bytes(), false, 1500).unwrap();
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 1480);
    }

    #[test]
    fn pointer_tables() {
        // RFC 7915 Figure 3 (IPv4 → IPv6) and Figure 6 (IPv6 → IPv4).
        for (p4, p6) in [
            (0u8, 0u32),
            (1, 1),
            (2, 4),
            (3, 4),
            (8, 7),
            (9, 6),
            (12, 8),
            (19, 24),
        ] {
            let (t, c, r) = icmp4_error_to_icmp6(12, 0, [p4, 0, 0, 0], 0, 1500).unwrap();
            assert_eq!((t, c, u32::from_be_bytes(r)), (4, 0, p6), "v4 pointer {p4}");
        }
        for p4 in [4u8, 5, 6, 7, 10, 11, 20] {
            assert_eq!(icmp4_error_to_icmp6(12, 0, [p4, 0, 0, 0], 0, 1500), None);
        }
        for (p6, p4) in [
            (0u32, 0u8),
            (1, 1),
            (4, 2),
            (5, 2),
            (6, 9),
            (7, 8),
            (8, 12),
            (23, 12),
            (24, 16),
            (39, 16),
        ] {
            let (t, c, r) = icmp6_error_to_icmp4(4, 0, p6.to_be_bytes(), false, 1500).unwrap();
            assert_eq!((t, c, r[0]), (12, 0, p4), "v6 pointer {p6}");
        }
        for p6 in [2u32, 3, 40, 1000] {
            assert_eq!(
                icmp6_error_to_icmp4(4, 0, p6.to_be_bytes(), false, 1500),
                None
            );
        }
    }

    #[test]
    fn unreachable_codes() {
        let m = |c| icmp4_error_to_icmp6(3, c, [0; 4], 0, 1500).map(|(t, c, _)| (t, c));
        assert_eq!(m(0), Some((1, 0)));
        assert_eq!(m(1), Some((1, 0)));
        assert_eq!(m(2), Some((4, 1)));
        assert_eq!(m(3), Some((1, 4)));
        assert_eq!(m(9), Some((1, 1)));
        assert_eq!(m(13), Some((1, 1)));
        assert_eq!(m(14), None);
        let n = |c| icmp6_error_to_icmp4(1, c, [0; 4], false, 1500).map(|(t, c, _)| (t, c));
        assert_eq!(n(0), Some((3, 1)));
        assert_eq!(n(1), Some((3, 10)));
        assert_eq!(n(3), Some((3, 1)));
        assert_eq!(n(4), Some((3, 3)));
        assert_eq!(n(5), None);
        assert_eq!(
            icmp6_error_to_icmp4(4, 1, [0; 4], false, 1500).map(|(t, c, _)| (t, c)),
            Some((3, 2))
        );
        assert_eq!(icmp6_error_to_icmp4(4, 2, [0; 4], false, 1500), None);
    }
}
