//! RFC 7050 §3: the NAT64 prefix(es) from the AAAA answers for `ipv4only.arpa`. Pure.
//!
//! For every answer the well-known IPv4 addresses (192.0.0.170, 192.0.0.171) are searched at
//! each RFC 6052 position (prefix lengths 32, 40, 48, 56, 64, 96). A position only counts if
//! the u-octet (bits 64..72) is zero and the prefix is usable (the well-known prefix
//! `64:ff9b::/96` only at /96, RFC 6052 §2.1). When one answer shows a well-known address at
//! more than one position, the prefix's own bits happen to look like a WKA; RFC 7050 gives two
//! WKAs so that this can be resolved: the length is the one at which a second answer carries
//! the *other* WKA under the same prefix. If that does not settle it, the answer is rejected.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::nat64::{Nat64Prefix, LENGTHS, WELL_KNOWN};

/// The Well-Known Name queried for AAAA records.
pub const WELL_KNOWN_NAME: &str = "ipv4only.arpa.";
/// The primary well-known IPv4 address (RFC 7050 §2.2).
pub const WKA_PRIMARY: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 170);
/// The secondary well-known IPv4 address (RFC 7050 §2.2).
pub const WKA_SECONDARY: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 171);

/// Why one AAAA answer gave no prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Neither 192.0.0.170 nor 192.0.0.171 sits at any RFC 6052 position.
    #[error("{0} contains no well-known IPv4 address (192.0.0.170/171) at any RFC 6052 position")]
    NoWellKnownAddress(Ipv6Addr),
    /// A WKA sits at the position of `len`, but the u-octet (bits 64..72) is not zero.
    #[error("{addr} has a well-known IPv4 address at the /{len} position but a non-zero u-octet")]
    UOctetSet { addr: Ipv6Addr, len: u8 },
    /// The well-known prefix 64:ff9b::/96 would be used with another length.
    #[error("{addr} would put the well-known prefix 64:ff9b::/96 at length /{len}")]
    WellKnownPrefixMisplaced { addr: Ipv6Addr, len: u8 },
    /// A WKA sits at several positions and no other answer tells which one is meant.
    #[error("{addr} has a well-known IPv4 address at several positions ({lengths:?}) and no other answer disambiguates")]
    Ambiguous { addr: Ipv6Addr, lengths: Vec<u8> },
    /// The prefix is one no NAT64 can have (multicast, link-local, `::/96`, IPv4-mapped).
    #[error("{addr}: {reason}")]
    Reserved {
        addr: Ipv6Addr,
        reason: crate::nat64::PrefixError,
    },
}

/// The outcome of examining all answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rfc7050Prefixes {
    /// Distinct prefixes in the order of the answers; the first is the one to use. Empty when
    /// no answer was usable.
    pub prefixes: Vec<Nat64Prefix>,
    /// Answers that were rejected, each with its reason (for the caller to log).
    pub rejected: Vec<AnswerError>,
}

/// One place in an answer where a WKA is found, with the prefix it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hit {
    len: u8,
    wka: Ipv4Addr,
    prefix: Nat64Prefix,
}

/// Examine every AAAA answer for `ipv4only.arpa` (RFC 7050 §3).
pub fn prefixes_from_answers(answers: &[Ipv6Addr]) -> Rfc7050Prefixes {
    let hits: Vec<Result<Vec<Hit>, AnswerError>> = answers.iter().map(|a| hits_in(*a)).collect();
    let mut out = Rfc7050Prefixes::default();
    for (i, (addr, h)) in answers.iter().zip(&hits).enumerate() {
        let chosen = match h {
            Err(e) => Err(e.clone()),
            Ok(h) if h.len() == 1 => Ok(h[0].prefix),
            Ok(h) => disambiguate(*addr, h, i, &hits),
        };
        match chosen {
            Ok(p) if !out.prefixes.contains(&p) => out.prefixes.push(p),
            Ok(_) => {}
            Err(e) => out.rejected.push(e),
        }
    }
    out
}

/// All valid positions of a WKA in `addr`; an error if there is none.
fn hits_in(addr: Ipv6Addr) -> Result<Vec<Hit>, AnswerError> {
    let mut hits = Vec::new();
    let mut first_problem = None;
    for len in LENGTHS {
        let wka = Nat64Prefix::extract_at(addr, len);
        if wka != WKA_PRIMARY && wka != WKA_SECONDARY {
            continue;
        }
        if addr.octets()[8] != 0 {
            first_problem.get_or_insert(AnswerError::UOctetSet { addr, len });
            continue;
        }
        let prefix = match Nat64Prefix::from_address(addr, len) {
            Ok(p) => p,
            Err(_) => {
                first_problem.get_or_insert(AnswerError::UOctetSet { addr, len });
                continue;
            }
        };
        if let Err(reason) = prefix.check_usable() {
            first_problem.get_or_insert(AnswerError::Reserved { addr, reason });
            continue;
        }
        if len != 96 && prefix.contains(WELL_KNOWN.addr()) {
            first_problem.get_or_insert(AnswerError::WellKnownPrefixMisplaced { addr, len });
            continue;
        }
        hits.push(Hit { len, wka, prefix });
    }
    match (hits.is_empty(), first_problem) {
        (false, _) => Ok(hits),
        (true, Some(problem)) => Err(problem),
        (true, None) => Err(AnswerError::NoWellKnownAddress(addr)),
    }
}

/// Pick the one length at which another answer carries the other WKA under the same prefix.
fn disambiguate(
    addr: Ipv6Addr,
    mine: &[Hit],
    me: usize,
    all: &[Result<Vec<Hit>, AnswerError>],
) -> Result<Nat64Prefix, AnswerError> {
    let confirmed: Vec<&Hit> = mine
        .iter()
        .filter(|h| {
            all.iter().enumerate().any(|(j, other)| {
                j != me
                    && other.as_ref().is_ok_and(|o| {
                        o.iter()
                            .any(|x| x.len == h.len && x.prefix == h.prefix && x.wka != h.wka)
                    })
            })
        })
        .collect();
    match confirmed.as_slice() {
        [one] => Ok(one.prefix),
        _ => Err(AnswerError::Ambiguous {
            addr,
            lengths: mine.iter().map(|h| h.len).collect(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    fn p(s: &str) -> Nat64Prefix {
        s.parse().unwrap()
    }

    /// Every RFC 6052 length, synthesised from both WKAs, yields exactly that prefix.
    #[test]
    fn each_rfc6052_position() {
        for prefix in [
            "2001:db8::/32",
            "2001:db8:100::/40",
            "2001:db8:122::/48",
            "2001:db8:122:300::/56",
            "2001:db8:122:344::/64",
            "2001:db8:122:344::/96",
            "2001:db8:64::/96",
            "64:ff9b::/96",
        ] {
            let prefix = p(prefix);
            let answers = [prefix.embed(WKA_PRIMARY), prefix.embed(WKA_SECONDARY)];
            let got = prefixes_from_answers(&answers);
            assert_eq!(got.prefixes, vec![prefix], "{prefix}");
            assert!(got.rejected.is_empty(), "{prefix}: {:?}", got.rejected);
            // One answer alone suffices when it is unambiguous.
            assert_eq!(prefixes_from_answers(&answers[..1]).prefixes, vec![prefix]);
        }
    }

    /// A DNS64 synthesising into a prefix no NAT64 can have is not believed.
    #[test]
    fn reserved_prefixes_are_rejected() {
        for bad in ["ff02::/96", "fe80::/96", "::ffff:0:0/96"] {
            let got = prefixes_from_answers(&[p(bad).embed(WKA_PRIMARY)]);
            assert!(got.prefixes.is_empty(), "{bad}: {got:?}");
            assert!(
                matches!(got.rejected[..], [AnswerError::Reserved { .. }]),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn literal_addresses() {
        // The /64 form from RFC 6052 Table 1 with 192.0.0.170: c0 at byte 9, u-octet zero.
        let got = prefixes_from_answers(&[a("2001:db8:122:344:c0:0:aa00:0")]);
        assert_eq!(got.prefixes, vec![p("2001:db8:122:344::/64")]);
        let got = prefixes_from_answers(&[a("64:ff9b::192.0.0.171")]);
        assert_eq!(got.prefixes, vec![p("64:ff9b::/96")]);
    }

    #[test]
    fn answer_without_wka_rejected() {
        let got = prefixes_from_answers(&[a("2001:db8::1"), a("2001:db8:64::c000:2")]);
        assert!(got.prefixes.is_empty());
        assert_eq!(
            got.rejected,
            vec![
                AnswerError::NoWellKnownAddress(a("2001:db8::1")),
                AnswerError::NoWellKnownAddress(a("2001:db8:64::c000:2")),
            ]
        );
    }

    #[test]
    fn empty_answers() {
        assert_eq!(prefixes_from_answers(&[]), Rfc7050Prefixes::default());
    }

    #[test]
    fn u_octet_set_rejected() {
        // 192.0.0.170 at the /96 position under a prefix whose byte 8 is 0xff.
        let bad = a("2001:db8:0:0:ff00::c000:aa");
        let got = prefixes_from_answers(&[bad]);
        assert!(got.prefixes.is_empty());
        assert_eq!(
            got.rejected,
            vec![AnswerError::UOctetSet { addr: bad, len: 96 }]
        );
    }

    #[test]
    fn well_known_prefix_at_wrong_length_rejected() {
        // 64:ff9b::/32 with the WKA at the /32 position (bytes 4..8).
        let bad = a("64:ff9b:c000:aa::");
        let got = prefixes_from_answers(&[bad]);
        assert!(got.prefixes.is_empty());
        assert_eq!(
            got.rejected,
            vec![AnswerError::WellKnownPrefixMisplaced { addr: bad, len: 32 }]
        );
        // RFC 8215's local-use 64:ff9b:1::/48 is a different prefix and is fine.
        let ok = p("64:ff9b:1::/48");
        assert_eq!(
            prefixes_from_answers(&[ok.embed(WKA_PRIMARY)]).prefixes,
            vec![ok]
        );
    }

    /// A /64 prefix whose bits 32..64 are c000:00aa: 192.0.0.170 shows at /32 and /64.
    #[test]
    fn ambiguity_resolved_by_secondary_wka() {
        let prefix = p("2001:db8:c000:aa::/64");
        let primary = prefix.embed(WKA_PRIMARY);
        let secondary = prefix.embed(WKA_SECONDARY);
        // Alone, the primary answer is ambiguous.
        let alone = prefixes_from_answers(&[primary]);
        assert!(alone.prefixes.is_empty());
        assert_eq!(
            alone.rejected,
            vec![AnswerError::Ambiguous {
                addr: primary,
                lengths: vec![32, 64]
            }]
        );
        // With the secondary answer, /64 is where the two answers differ in the right way.
        let both = prefixes_from_answers(&[primary, secondary]);
        assert_eq!(both.prefixes, vec![prefix]);
        assert!(both.rejected.is_empty(), "{:?}", both.rejected);
    }

    #[test]
    fn ambiguity_unresolvable_when_both_answers_agree_twice() {
        // Both answers carry the same WKA at two positions: nothing disambiguates.
        let x = a("2001:db8:c000:aa:c0:0:aa00:0");
        let got = prefixes_from_answers(&[x, x]);
        assert!(got.prefixes.is_empty());
        assert_eq!(got.rejected.len(), 2);
        assert!(matches!(got.rejected[0], AnswerError::Ambiguous { .. }));
    }

    #[test]
    fn several_prefixes_in_answer_order_deduplicated() {
        let p1 = p("2001:db8:64::/96");
        let p2 = p("2001:db8:100::/40");
        let answers = [
            p1.embed(WKA_PRIMARY),
            p2.embed(WKA_PRIMARY),
            a("2001:db8::1"),
            p1.embed(WKA_SECONDARY),
            p2.embed(WKA_SECONDARY),
        ];
        let got = prefixes_from_answers(&answers);
        assert_eq!(got.prefixes, vec![p1, p2]);
        assert_eq!(
            got.rejected,
            vec![AnswerError::NoWellKnownAddress(a("2001:db8::1"))]
        );
    }

    #[test]
    fn good_answer_survives_bad_neighbours() {
        let good = p("2001:db8:122::/48");
        let got = prefixes_from_answers(&[a("::1"), good.embed(WKA_SECONDARY)]);
        assert_eq!(got.prefixes, vec![good]);
        assert_eq!(got.rejected.len(), 1);
    }
}
