//! Internet checksum arithmetic (RFC 1071) and incremental updates (RFC 1624).
//!
//! Sums are kept unfolded in a `u64` so that long runs of data can be added without a carry
//! test per word; [`fold`] reduces them to 16 bits at the end. Every sum here is of big-endian
//! 16-bit words, so the results can be written with `to_be_bytes`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to the running sum `acc`, as big-endian 16-bit words (an odd last byte is padded
/// with zero, as RFC 1071 says).
#[inline]
pub fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_be_bytes(w);
        // Split into two 32-bit halves so the 64-bit accumulator never overflows: a packet
        // has at most 2^16 bytes, i.e. 2^13 chunks of at most 2^33 each.
        acc += (v >> 32) + (v & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum to its 16-bit ones'-complement value (end-around carry).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for data whose running sum is `acc`.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// RFC 1624 equation 3: the new checksum after words summing to `old` were replaced by words
/// summing to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update(hc: u16, old: u64, new: u64) -> u16 {
    let acc = u64::from(!hc) + u64::from(!fold(old)) + u64::from(fold(new));
    !fold(acc)
}

/// [`update`] for a checksum field that is either final or, with `partial`, holds only the
/// (uncomplemented) pseudo-header sum that checksum offload completes later
/// (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, Linux `CHECKSUM_PARTIAL`).
#[inline]
pub fn update_maybe_partial(field: u16, old: u64, new: u64, partial: bool) -> u16 {
    if partial {
        !update(!field, old, new)
    } else {
        update(field, old, new)
    }
}

/// The checksum field of a message summed without a pseudo-header (ICMPv4) after an
/// incremental [`update`] produced `c`, where `all_zero` tells whether every other octet of the
/// message is zero.
///
/// One's complement has two zeros, and [`update`] returns 0x0000 whenever the message sums to
/// zero. That is right when the sum is −0 (0xffff: the receiver adds 0x0000 and gets all ones)
/// but wrong when every word is zero (+0): the receiver would get 0x0000, so the only valid
/// field is 0xffff. Only an ICMPv4 echo reply with code, identifier, sequence number and data
/// all zero can be such a message; TCP, UDP and ICMPv6 sums include a pseudo-header that is
/// never zero, and an IPv4 header never is.
#[inline]
pub fn all_zero_fix(c: u16, all_zero: impl FnOnce() -> bool) -> u16 {
    if c == 0 && all_zero() {
        0xffff
    } else {
        c
    }
}

/// The running sum of an IPv4 address.
#[inline]
pub fn sum_v4(a: Ipv4Addr) -> u64 {
    let v = u32::from(a);
    u64::from(v >> 16) + u64::from(v & 0xffff)
}

/// The running sum of an IPv6 address.
#[inline]
pub fn sum_v6(a: Ipv6Addr) -> u64 {
    add(0, &a.octets())
}

/// The running sum of an IPv6 pseudo-header (RFC 8200 §8.1) without the data.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: u32) -> u64 {
    sum_v6(src) + sum_v6(dst) + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(next)
}

/// The UDP checksum field for a computed value: zero means "no checksum", so send 0xffff.
#[inline]
pub fn udp_nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The plain RFC 1071 reference: one 16-bit word at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn matches_reference_for_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 13) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(finish(add(0, &data[..n])), reference(&data[..n]), "len {n}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &d)), 0xddf2);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut data: Vec<u8> = (0..64u32).map(|i| (i * 31 + 5) as u8).collect();
        let c0 = finish(add(0, &data));
        let old = add(0, &data[10..14]);
        data[10..14].copy_from_slice(&[0xff, 0xff, 0x00, 0x01]);
        let new = add(0, &data[10..14]);
        assert_eq!(update(c0, old, new), finish(add(0, &data)));
    }

    #[test]
    fn all_zero_message_gets_ffff() {
        // An ICMPv6 echo reply (129) with id, seq and data zero becomes an ICMPv4 echo reply
        // (0) that is all zero but for its checksum.
        let v6 = [129u8, 0, 0, 0, 0, 0, 0, 0];
        let pseudo = 0x1234_u64;
        let hc = finish(pseudo + add(0, &v6));
        let c = update(hc, pseudo + add(0, &v6[..2]), 0);
        assert_eq!(c, 0, "equation 3 yields the wrong zero");
        let fixed = all_zero_fix(c, || true);
        assert_eq!(fixed, 0xffff);
        let mut v4 = [0u8; 8];
        v4[2..4].copy_from_slice(&fixed.to_be_bytes());
        assert_eq!(fold(add(0, &v4)), 0xffff, "the receiver's check passes");
        assert_eq!(
            reference(&[0u8; 8]),
            0xffff,
            "and it is what a full computation gives"
        );
        // A message summing to -0 keeps 0x0000, which is valid for it.
        assert_eq!(all_zero_fix(0, || false), 0);
        assert_eq!(all_zero_fix(7, || true), 7);
    }

    #[test]
    fn udp_zero_becomes_ffff() {
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(5), 5);
    }
}
