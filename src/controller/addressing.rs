//! The CLAT's addresses and interface name, chosen without I/O: the IPv4 address from the
//! IPv4 Service Continuity Prefix, a checksum-neutral IPv6 address inside the uplink's /64, and
//! the `v4-<uplink>` tun name shortened to fit IFNAMSIZ.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::nat64::Nat64Prefix;
use crate::xlat::checksum;

/// The order in which CLAT IPv4 addresses are taken from 192.0.0.0/29 (RFC 7335, the "IPv4
/// Service Continuity Prefix").
///
/// RFC 7335 generalises the whole /29 to any IPv4-IPv6 transition technology's non-routed IPv4
/// interface and assigns no individual addresses. DS-Lite (RFC 6333 §5.7), for which the block
/// was first reserved, gives 192.0.0.1 to the AFTR and 192.0.0.2 to the B4. So:
/// - 192.0.0.4 first, then .5, .6, .7, as Android's clatd does: clear of DS-Lite's addresses.
///   Our address sits alone (/32) on a point-to-point tun, so .7 has no broadcast role there.
/// - then .3, then .2: .2 is only taken when no DS-Lite B4 on this host holds it (an address in
///   use is skipped anyway), so it comes last.
/// - never .0 (the block's network address, which some software treats as "this network") nor
///   .1 (DS-Lite's AFTR address, and the default-gateway placeholder other CLATs such as
///   macOS's use: a host holding it locally could not reach it as a peer).
///
/// Six addresses, so at most six CLATs at a time with distinct IPv4 addresses.
pub const V4_CANDIDATES: [Ipv4Addr; 6] = [
    Ipv4Addr::new(192, 0, 0, 4),
    Ipv4Addr::new(192, 0, 0, 5),
    Ipv4Addr::new(192, 0, 0, 6),
    Ipv4Addr::new(192, 0, 0, 7),
    Ipv4Addr::new(192, 0, 0, 3),
    Ipv4Addr::new(192, 0, 0, 2),
];

/// The first of [`V4_CANDIDATES`] that is neither on the host (`in_use`, e.g.
/// `Inventory::v4_addresses_in_use()`) nor `also_taken` (addresses handed to CLATs being set up
/// but not yet visible in the inventory). None when all six are taken.
pub fn choose_v4(
    in_use: impl IntoIterator<Item = Ipv4Addr>,
    also_taken: &[Ipv4Addr],
) -> Option<Ipv4Addr> {
    let in_use: Vec<Ipv4Addr> = in_use.into_iter().collect();
    V4_CANDIDATES
        .into_iter()
        .find(|a| !in_use.contains(a) && !also_taken.contains(a))
}

// ---------------------------------------------------------------------------------------------
// Checksum neutrality

/// The 16-bit one's-complement sum of `bytes` (big-endian words; an odd last byte is the high
/// half of a word), folded to 16 bits. 0x0000 and 0xffff both stand for zero.
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    checksum::fold(checksum::add(0, bytes))
}

fn fold(sum: u32) -> u16 {
    checksum::fold(u64::from(sum))
}

/// One's-complement `a + b`.
fn add(a: u16, b: u16) -> u16 {
    fold(u32::from(a) + u32::from(b))
}

/// One's-complement `a - b`.
fn sub(a: u16, b: u16) -> u16 {
    add(a, !b)
}

/// Whether two one's-complement sums are equal (0x0000 and 0xffff are both zero).
pub fn ones_complement_eq(a: u16, b: u16) -> bool {
    let norm = |x: u16| if x == 0xffff { 0 } else { x };
    norm(a) == norm(b)
}

/// IIDs that must not be used for a unicast address (RFC 5453 and the IANA "Reserved IPv6
/// Interface Identifiers" registry): the subnet-router anycast IID (all zeros, RFC 4291), the
/// reserved subnet anycast IIDs fdff:ffff:ffff:ff80..ffff (RFC 2526), and
/// 0200:5eff:fe00:0000..0200:5eff:feff:ffff (derived from the IANA Ethernet block, including
/// Proxy Mobile IPv6's 0200:5eff:fe00:5213).
pub fn is_reserved_iid(iid: u64) -> bool {
    iid == 0
        || (0xfdff_ffff_ffff_ff80..=0xfdff_ffff_ffff_ffff).contains(&iid)
        || (0x0200_5eff_fe00_0000..=0x0200_5eff_feff_ffff).contains(&iid)
}

/// The CLAT's IPv6 address: the /64 of `v6_net` with a fresh interface identifier taken from
/// `random_iid`, its last 16 bits then set so that the address is checksum-neutral, i.e.
///
/// ```text
/// sum(v6) = sum(v4) - sum(prefix)            (16-bit one's-complement sums)
/// ```
///
/// so that for a remote IPv4 address `r` the TCP/UDP pseudo-header sum over (v4, r) equals the
/// one over (v6, prefix.embed(r)) whenever `sum(prefix.embed(r)) = sum(prefix) + sum(r)`, and a
/// translator can then copy L4 checksums unchanged (as Android's `makeChecksumNeutral`; it
/// adjusts bytes 11-12, this function the last word).
///
/// That condition holds for every `r` only for /32 and /96 prefixes. For the other lengths
/// RFC 6052 moves octets of `r` between even and odd byte offsets (the u-octet at byte 8 shifts
/// the later ones by one), which changes their weight in the 16-bit sum (an octet at an even
/// offset counts 256 times, at an odd offset once), so `sum(embed(r)) - sum(prefix) - sum(r)`
/// — see [`embedding_checksum_residual`] — depends on `r` and no single IPv6 address can be
/// neutral for all remotes. For `r = a.b.c.d` it is zero exactly when:
///
/// | length | neutral for `r` exactly when      |
/// |--------|-----------------------------------|
/// | /32    | always                            |
/// | /40    | b ≡ a + c (mod 257)               |
/// | /48    | c = d                             |
/// | /56    | a = 0                             |
/// | /64    | a + c ≡ b + d (mod 257)           |
/// | /96    | always                            |
///
/// (The residual is 255·(b−a−c), 255·(d−c), −255·a and 255·(b+d−a−c) respectively, and
/// 0xffff = 255·257.) With those prefixes the address is still neutral for the fixed part (v4
/// against the prefix), and a translator must add the residual for the remote address to the
/// L4 checksum (RFC 1624 incremental update) — see [`embedding_is_checksum_neutral`].
///
/// The result never has a reserved IID ([`is_reserved_iid`]); if the adjusted IID would be
/// one, bit 40 of the IID is flipped and the last word recomputed, which always leaves the
/// reserved ranges. The caller should check the result is not already an address on the link
/// and call again with another random value if it is (a 1 in 2^48 event).
pub fn checksum_neutral_v6(
    v6_net: Ipv6Addr,
    v4: Ipv4Addr,
    prefix: &Nat64Prefix,
    random_iid: u64,
) -> Ipv6Addr {
    let net = u128::from(v6_net) & (u128::MAX << 64);
    let target = sub(
        ones_complement_sum(&v4.octets()),
        ones_complement_sum(&prefix.addr().octets()),
    );
    let neutral = |iid: u64| -> u64 {
        let without_last = Ipv6Addr::from(net | u128::from(iid & !0xffff));
        let last = sub(target, ones_complement_sum(&without_last.octets()));
        (iid & !0xffff) | u64::from(last)
    };
    let mut iid = neutral(random_iid);
    if is_reserved_iid(iid) {
        // Each reserved range fixes bits 40..48 of the IID (all zero, 0xff, or 0xff of
        // 0x5eff), so flipping bit 40 leaves all of them whatever the last word becomes.
        iid = neutral(iid ^ (1 << 40));
    }
    Ipv6Addr::from(net | u128::from(iid))
}

/// `sum(prefix.embed(remote)) - sum(prefix) - sum(remote)` in one's-complement arithmetic: what
/// the L4 checksum must be adjusted by, on top of the checksum-neutral local address, for a
/// packet to or from `remote` (zero — 0x0000 or 0xffff — means no adjustment). Always zero for
/// /32 and /96 prefixes.
pub fn embedding_checksum_residual(prefix: &Nat64Prefix, remote: Ipv4Addr) -> u16 {
    sub(
        sub(
            ones_complement_sum(&prefix.embed(remote).octets()),
            ones_complement_sum(&prefix.addr().octets()),
        ),
        ones_complement_sum(&remote.octets()),
    )
}

/// Whether a checksum-neutral CLAT address makes every packet's L4 checksum translation-free
/// under this prefix (true for /32 and /96; see [`checksum_neutral_v6`]).
pub fn embedding_is_checksum_neutral(prefix: &Nat64Prefix) -> bool {
    matches!(prefix.len(), 32 | 96)
}

// ---------------------------------------------------------------------------------------------
// Interface names

/// The CLAT interface name for an uplink: `v4-<uplink>` when that fits in 15 bytes (uplink
/// names up to 12 bytes) and is a valid name; otherwise the first 5 bytes of the uplink name
/// (invalid characters replaced by `_`), a `-`, and 6 base-32 characters (`a-z2-7`) of a hash
/// of the full uplink name: `enx00e04c680001` → `v4-enx00-` + 6 characters. Deterministic
/// across runs and builds (FNV-1a, not the std hasher), always 4..=15 bytes, and distinct
/// uplink names collide only if their hashes agree on 30 bits (and they share the first 5
/// bytes): for 64 such names, a chance of about 2 in a million. Leftovers are recognised
/// by the interface alias, not by this name, so a collision would cost a failed start, never a
/// wrong clean-up.
pub fn tun_name(uplink: &str) -> String {
    let direct = format!("v4-{uplink}");
    if super::tun::valid_name(&direct) {
        return direct;
    }
    let mut name = String::from("v4-");
    for c in uplink.chars() {
        let c = if super::tun::valid_name_char(c) {
            c
        } else {
            '_'
        };
        if name.len() + c.len_utf8() > 3 + 5 {
            break;
        }
        name.push(c);
    }
    name.push('-');
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut h = name_hash(uplink);
    for _ in 0..6 {
        name.push(char::from(ALPHABET[(h & 31) as usize]));
        h >>= 5;
    }
    name
}

/// FNV-1a (64-bit) followed by a murmur3-style finaliser so that the low bits, which the name
/// uses, depend on every input byte.
fn name_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn p(s: &str) -> Nat64Prefix {
        s.parse().unwrap()
    }

    /// A small deterministic generator (splitmix64) so the tests need no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn v4(&mut self) -> Ipv4Addr {
            Ipv4Addr::from(self.next() as u32)
        }
        /// A random valid NAT64 prefix of length `len` (u-octet zero).
        fn prefix(&mut self, len: u8) -> Nat64Prefix {
            let bits = (u128::from(self.next()) << 64 | u128::from(self.next()))
                & (u128::MAX << (128 - u32::from(len)))
                & !(0xffu128 << 56);
            Nat64Prefix::new(Ipv6Addr::from(bits), len).unwrap()
        }
    }

    fn pseudo_sum(src: &[u8], dst: &[u8]) -> u16 {
        // Protocol and length are the same on both sides; leaving them out changes nothing.
        add(ones_complement_sum(src), ones_complement_sum(dst))
    }

    #[test]
    fn v4_order_and_skipping() {
        let none: [Ipv4Addr; 0] = [];
        assert_eq!(choose_v4(none, &[]), Some(Ipv4Addr::new(192, 0, 0, 4)));
        let host = [Ipv4Addr::new(192, 0, 0, 4), Ipv4Addr::new(198, 51, 100, 2)];
        assert_eq!(choose_v4(host, &[]), Some(Ipv4Addr::new(192, 0, 0, 5)));
        assert_eq!(
            choose_v4(host, &[Ipv4Addr::new(192, 0, 0, 5)]),
            Some(Ipv4Addr::new(192, 0, 0, 6))
        );
        // Taking them one by one gives the documented order, then nothing.
        let mut taken = Vec::new();
        while let Some(a) = choose_v4(none, &taken) {
            taken.push(a);
        }
        assert_eq!(taken, V4_CANDIDATES);
        let last: Vec<u8> = taken.iter().map(|a| a.octets()[3]).collect();
        assert_eq!(last, [4, 5, 6, 7, 3, 2]);
        assert!(!taken.contains(&Ipv4Addr::new(192, 0, 0, 0)));
        assert!(!taken.contains(&Ipv4Addr::new(192, 0, 0, 1)));
        // All of them on the host.
        assert_eq!(choose_v4(V4_CANDIDATES, &[]), None);
    }

    #[test]
    fn ones_complement_sum_basics() {
        assert_eq!(ones_complement_sum(&[]), 0);
        assert_eq!(ones_complement_sum(&[0x12, 0x34]), 0x1234);
        assert_eq!(ones_complement_sum(&[0x12]), 0x1200);
        assert_eq!(ones_complement_sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(ones_complement_sum(&[0x80, 0x00, 0x80, 0x00]), 0x0001);
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert!(ones_complement_eq(0xffff, 0));
        assert!(!ones_complement_eq(1, 0));
    }

    /// The address is inside the /64, keeps the random bits outside the adjusted word, and
    /// satisfies sum(v6) = sum(v4) - sum(prefix) for every prefix length.
    #[test]
    fn neutral_address_shape_and_equation() {
        let mut rng = Rng(1);
        for len in crate::nat64::LENGTHS {
            for _ in 0..500 {
                let net: Ipv6Addr = Ipv6Addr::from(u128::from(rng.next()) << 64);
                let v4 = V4_CANDIDATES[(rng.next() % 6) as usize];
                let prefix = rng.prefix(len);
                let iid = rng.next();
                let v6 = checksum_neutral_v6(net, v4, &prefix, iid);
                let got = u128::from(v6);
                assert_eq!(got >> 64, u128::from(net) >> 64, "outside the /64");
                let got_iid = got as u64;
                assert!(!is_reserved_iid(got_iid));
                if !is_reserved_iid(iid & !0xffff) && got_iid & !0xffff == iid & !0xffff {
                    // The usual case: only the last word changed.
                } else {
                    assert_eq!(got_iid & !0xffff, (iid ^ (1 << 40)) & !0xffff);
                }
                let lhs = ones_complement_sum(&v6.octets());
                let rhs = sub(
                    ones_complement_sum(&v4.octets()),
                    ones_complement_sum(&prefix.addr().octets()),
                );
                assert!(ones_complement_eq(lhs, rhs), "{v6} {v4} {prefix}");
            }
        }
    }

    /// The brief's property: for any remote r, the pseudo-header sum over (v4, r) equals the one
    /// over (v6, embed(r)) — for /32 and /96 always; for the other lengths exactly when the
    /// residual is zero, and then exactly under the conditions documented on the function.
    #[test]
    fn pseudo_header_property_over_random_remotes() {
        let mut rng = Rng(2);
        for len in crate::nat64::LENGTHS {
            let mut held = 0;
            let mut failed = 0;
            for _ in 0..20 {
                let prefix = rng.prefix(len);
                let v4 = V4_CANDIDATES[(rng.next() % 6) as usize];
                let net = Ipv6Addr::from(u128::from(rng.next()) << 64);
                let v6 = checksum_neutral_v6(net, v4, &prefix, rng.next());
                for i in 0..2000 {
                    // Every tenth remote is built to meet the length's condition, so both
                    // outcomes are exercised for every length.
                    let r = if i % 10 == 0 {
                        meeting_condition(len, &mut rng)
                    } else {
                        rng.v4()
                    };
                    let s4 = pseudo_sum(&v4.octets(), &r.octets());
                    let s6 = pseudo_sum(&v6.octets(), &prefix.embed(r).octets());
                    let residual = embedding_checksum_residual(&prefix, r);
                    // With the residual added, it always holds.
                    assert!(ones_complement_eq(add(s4, residual), s6), "{prefix} {r}");
                    let holds = ones_complement_eq(s4, s6);
                    assert_eq!(holds, condition(len, r), "{prefix} {r}");
                    assert_eq!(holds, ones_complement_eq(residual, 0));
                    if holds {
                        held += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
            if embedding_is_checksum_neutral(&rng.prefix(len)) {
                assert_eq!(failed, 0, "/{len}");
            } else {
                assert!(
                    held > 0 && failed > 0,
                    "/{len}: held {held} failed {failed}"
                );
            }
        }
    }

    /// The documented conditions, for r = a.b.c.d.
    fn condition(len: u8, r: Ipv4Addr) -> bool {
        let [a, b, c, d] = r.octets().map(i32::from);
        match len {
            32 | 96 => true,
            40 => (b - a - c).rem_euclid(257) == 0,
            48 => c == d,
            56 => a == 0,
            64 => (a + c - b - d).rem_euclid(257) == 0,
            _ => unreachable!(),
        }
    }

    fn meeting_condition(len: u8, rng: &mut Rng) -> Ipv4Addr {
        loop {
            let [a, b, c, d] = rng.v4().octets();
            let r = match len {
                40 => Ipv4Addr::new(
                    a / 2,
                    ((u16::from(a / 2) + u16::from(c / 2)) % 257) as u8,
                    c / 2,
                    d,
                ),
                48 => Ipv4Addr::new(a, b, c, c),
                56 => Ipv4Addr::new(0, b, c, d),
                64 => Ipv4Addr::new(a, b, a, b),
                _ => Ipv4Addr::new(a, b, c, d),
            };
            if condition(len, r) {
                return r;
            }
        }
    }

    #[test]
    fn neutral_with_well_known_prefix_and_a_known_vector() {
        // 64:ff9b::/96, 192.0.0.4, IID 0x1122334455660000: the last word must make
        // sum(v6) = sum(192.0.0.4) - sum(64:ff9b::).
        let v6 = checksum_neutral_v6(
            "2001:db8:1::".parse().unwrap(),
            Ipv4Addr::new(192, 0, 0, 4),
            &p("64:ff9b::/96"),
            0x1122_3344_5566_0000,
        );
        // sum(v4) = c000 + 0004 = c004; sum(prefix) = 0064 + ff9b = ffff (zero), so
        // target = c004; sum(2001:0db8:0001:0000:1122:3344:5566) = 0x2001+0x0db8+0x0001+0x1122
        // +0x3344+0x5566 = 0xc786, so the last word is c004 - c786 = c004 + 3879 = f87d.
        assert_eq!(
            v6,
            "2001:db8:1:0:1122:3344:5566:f87d"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
    }

    /// Inputs that would give each kind of reserved IID without the avoidance step.
    #[test]
    fn reserved_iids_are_avoided() {
        let check = |net: Ipv6Addr, v4: Ipv4Addr, prefix: &Nat64Prefix, random: u64| {
            // What the address would be with only the last word adjusted.
            let target = sub(
                ones_complement_sum(&v4.octets()),
                ones_complement_sum(&prefix.addr().octets()),
            );
            let upper = Ipv6Addr::from(u128::from(net) | u128::from(random & !0xffff));
            let naive =
                (random & !0xffff) | u64::from(sub(target, ones_complement_sum(&upper.octets())));
            assert!(is_reserved_iid(naive), "setup: {naive:#x} is not reserved");
            let v6 = checksum_neutral_v6(net, v4, prefix, random);
            let iid = u128::from(v6) as u64;
            assert!(!is_reserved_iid(iid), "{v6}");
            assert_eq!(iid & !0xffff, (random ^ (1 << 40)) & !0xffff);
            assert!(ones_complement_eq(
                ones_complement_sum(&v6.octets()),
                target
            ));
        };
        // All-zero IID (subnet-router anycast): only reachable when the target is zero, e.g.
        // v4 0.0.0.0 under 64:ff9b::/96 (0x0064 + 0xff9b = 0xffff), and sum(net) = 0xffff.
        let wkp = p("64:ff9b::/96");
        check("ffff::".parse().unwrap(), Ipv4Addr::UNSPECIFIED, &wkp, 0);
        // fdff:ffff:ffff:ff80..ffff (RFC 2526): find a /64 whose last word lands there.
        let prefix = p("2001:db8:64::/96");
        let v4 = Ipv4Addr::new(192, 0, 0, 4);
        let target = sub(
            ones_complement_sum(&v4.octets()),
            ones_complement_sum(&prefix.addr().octets()),
        );
        let random = 0xfdff_ffff_ffff_1234;
        let upper_sum = ones_complement_sum(&(random & !0xffffu64).to_be_bytes());
        let mut found = 0;
        for x in 0..=0xffffu16 {
            let last = sub(target, add(x, upper_sum));
            if last >= 0xff80 {
                check(Ipv6Addr::new(x, 0, 0, 0, 0, 0, 0, 0), v4, &prefix, random);
                found += 1;
            }
        }
        assert!(found > 100, "{found}");
        // 0200:5eff:fe00:0000..0200:5eff:feff:ffff: any last word is reserved.
        check(
            "2001:db8:1::".parse().unwrap(),
            v4,
            &prefix,
            0x0200_5eff_fe42_0000,
        );
        check(
            "2001:db8:1::".parse().unwrap(),
            v4,
            &prefix,
            0x0200_5eff_feff_ffff,
        );

        assert!(is_reserved_iid(0));
        assert!(is_reserved_iid(0xfdff_ffff_ffff_ff80));
        assert!(is_reserved_iid(0xfdff_ffff_ffff_ffff));
        assert!(!is_reserved_iid(0xfdff_ffff_ffff_ff7f));
        assert!(is_reserved_iid(0x0200_5eff_fe00_5213));
        assert!(!is_reserved_iid(0x0200_5eff_ff00_0000));
        assert!(!is_reserved_iid(0x0200_5eff_fdff_ffff));
    }

    #[test]
    fn tun_names() {
        assert_eq!(tun_name("eth0"), "v4-eth0");
        assert_eq!(tun_name("wlp0s20f3"), "v4-wlp0s20f3");
        assert_eq!(tun_name("abcdefghijkl"), "v4-abcdefghijkl");
        let long = tun_name("enx00e04c680001");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("v4-enx00-"), "{long}");
        assert_eq!(long, tun_name("enx00e04c680001"), "deterministic");
        assert_ne!(long, tun_name("enx00e04c680002"));
        assert_ne!(tun_name("abcdefghijklm"), "v4-abcdefghijklm");
        // Unicode is cut at a character boundary; invalid characters are replaced.
        let u = tun_name("ééééééééé");
        assert!(u.len() <= 15 && u.starts_with("v4-éé-"), "{u}");
        let bad = tun_name("a b:c/d");
        assert!(!bad.contains([' ', ':', '/']), "{bad}");
        assert_ne!(tun_name("a b"), tun_name("a_b"));
    }

    /// A pinned value (computed independently, in Python, from the FNV-1a + finaliser
    /// definition), so a change of hash — which would orphan nothing but rename interfaces
    /// across upgrades — is a deliberate decision.
    #[test]
    fn tun_name_is_stable_across_builds() {
        assert_eq!(tun_name("enx00e04c680001"), tun_name("enx00e04c680001"));
        let pinned = tun_name("veryverylongname0");
        assert_eq!(pinned.len(), 15);
        assert_eq!(&pinned[..9], "v4-veryv-");
        assert_eq!(pinned, PINNED_LONG_NAME);
    }
    const PINNED_LONG_NAME: &str = "v4-veryv-wxlqcx";

    #[test]
    fn tun_names_of_many_long_names_are_distinct_and_valid() {
        let mut seen = HashSet::new();
        for i in 0..2_000u32 {
            let uplink = format!("enx00e04c{i:06x}");
            let name = tun_name(&uplink);
            assert!(name.len() <= crate::controller::tun::MAX_NAME_LEN, "{name}");
            assert!(
                name.chars().all(crate::controller::tun::valid_name_char),
                "{name}"
            );
            assert!(name != "." && name != "..");
            assert!(seen.insert(name.clone()), "collision at {uplink}: {name}");
        }
    }
}
