//! Property tests: arbitrary and mutated packets never panic; every packet produced parses
//! (etherparse) and passes its own checksums; nothing is produced for traffic outside the CLAT
//! addresses and the prefix; fragmentation and round trips preserve the data; fragment offsets
//! never wrap. The seed corpus (tests/corpus/xlat) is replayed with its expected verdicts and
//! mutated.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod xlat_common;

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::xlat::{DropReason, PacketBatch, Translator, Verdict, VnetHdr, XlatConfig};
use proptest::prelude::*;
use xlat_common::*;

const LENGTHS: [&str; 6] = [
    "2001:db8::/32",
    "2001:db8:100::/40",
    "2001:db8:122::/48",
    "2001:db8:122:300::/56",
    "2001:db8:122:344::/64",
    "2001:db8:64::/96",
];

fn config(i: usize, mtu: u32) -> XlatConfig {
    cfg_with(LENGTHS[i % LENGTHS.len()], mtu)
}

/// Runs both directions and checks every output. `l4_ok` says whether the input's L4 checksum
/// was valid (then the outputs' must be too).
fn check_outputs(t: &mut Translator, pkt: &[u8], v4_in: bool) -> (Verdict, usize, usize) {
    let (mut main, mut back) = (PacketBatch::default(), PacketBatch::default());
    let v = if v4_in {
        t.ipv4_to_ipv6(pkt, &mut main, &mut back)
    } else {
        t.ipv6_to_ipv4(pkt, &mut main, &mut back)
    };
    let l4_ok = l4_valid(pkt) == Some(true);
    for p in main.iter() {
        // Translated packets carry the input's L4 checksum state over (RFC 1624 updates);
        // when it was valid, the output's must be valid too.
        let o = verify_opts(p, l4_ok);
        match o {
            Out::V4 { ref h, .. } => assert_eq!(Ipv4Addr::from(h.destination), t.config().v4),
            Out::V6 { ref h, .. } => {
                assert_eq!(Ipv6Addr::from(h.source), t.config().v6);
                assert!(t.config().prefix.contains(Ipv6Addr::from(h.destination)));
            }
        }
    }
    // Generated ICMP errors are whole new packets: always fully valid.
    for p in back.iter() {
        verify(p);
    }
    if matches!(v, Verdict::Dropped(_)) {
        assert!(main.is_empty());
    }
    (v, main.len(), back.len())
}

/// A valid IPv4 packet from the CLAT to a far-side address.
fn v4_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..6,
        proptest::collection::vec(any::<u8>(), 0..3000),
        any::<(u8, u8, u16, bool, bool)>(),
        0usize..4,
        any::<u8>(),
    )
        .prop_map(|(kind, data, (ttl, tos, id, df, frag), opts, last)| {
            let ps = Pseudo::V4(CLAT4, REMOTE4);
            let (proto, l4) = match kind {
                0 => (6, tcp(1, 2, 3, &data, &ps)),
                1 => (17, udp(1, 2, &data, &ps, false)),
                2 => (17, udp(1, 2, &data, &ps, true)),
                3 => (1, icmp(8, 0, [1, 2, 3, 4], &data, &Pseudo::None)),
                4 => {
                    let n = data.len().min(600);
                    let inner = V4::new(REMOTE4, CLAT4, 17).build(&udp(
                        53,
                        9,
                        &data[..n],
                        &Pseudo::V4(REMOTE4, CLAT4),
                        false,
                    ));
                    (1, icmp(3, last % 16, [0, 0, 5, 0], &inner, &Pseudo::None))
                }
                _ => (47, data.clone()),
            };
            let mut h = V4::new(CLAT4, Ipv4Addr::new(198, 51, 100, last | 1), proto);
            h.ttl = ttl;
            h.tos = tos;
            h.id = id;
            h.df = df;
            h.mf = frag;
            h.options = vec![1; opts * 4];
            h.build(&l4)
        })
}

/// A valid IPv6 packet from the far side (under prefix `i`) to the CLAT.
fn v6_packet(i: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..6,
        proptest::collection::vec(any::<u8>(), 0..3000),
        any::<(u8, u8, bool)>(),
        any::<u8>(),
    )
        .prop_map(move |(kind, data, (hop, tc, frag), last)| {
            let c = config(i, 1500);
            let r6 = c.prefix.embed(Ipv4Addr::new(198, 51, 100, last | 1));
            let ps = Pseudo::V6(r6, clat6());
            let (next, l4) = match kind {
                0 => (6, tcp(1, 2, 3, &data, &ps)),
                1 => (17, udp(1, 2, &data, &ps, false)),
                2 => (58, icmp(128, 0, [1, 2, 3, 4], &data, &ps)),
                3 => {
                    let n = data.len().min(1000);
                    let inner = V6::new(clat6(), r6).build(
                        6,
                        &[],
                        &tcp(9, 53, 1, &data[..n], &Pseudo::V6(clat6(), r6)),
                    );
                    (58, icmp(last % 5, 0, 1400u32.to_be_bytes(), &inner, &ps))
                }
                4 => (60, {
                    let mut e = vec![17, 0, 1, 4, 0, 0, 0, 0];
                    e.extend_from_slice(&udp(1, 2, &data, &ps, false));
                    e
                }),
                _ => (47, data.clone()),
            };
            let mut h = V6::new(r6, clat6());
            h.hop = hop;
            h.tc = tc;
            if frag {
                let f = [next, 0, 0, 1, 0, 0, 0, 7];
                h.build(44, &f, &l4)
            } else {
                h.build(next, &[], &l4)
            }
        })
}

/// Byte mutations: (position, xor value) pairs, and a truncation.
fn mutations() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (
        proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        proptest::option::of(any::<usize>()),
    )
}

fn mutate(mut p: Vec<u8>, (flips, cut): &(Vec<(usize, u8)>, Option<usize>)) -> Vec<u8> {
    if p.is_empty() {
        return p;
    }
    for &(at, x) in flips {
        let n = p.len();
        // Favour the headers, where the interesting decisions are.
        let at = if at % 2 == 0 { at % n.min(64) } else { at % n };
        p[at] ^= x;
    }
    if let Some(c) = cut {
        let n = p.len();
        p.truncate(c % (n + 1));
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), i in 0usize..6, mtu in 1000u32..10000) {
        let mut t = Translator::new(config(i, mtu));
        check_outputs(&mut t, &data, true);
        check_outputs(&mut t, &data, false);
        // And with the version nibble set right, so that parsing goes further.
        let mut d = data.clone();
        if let Some(b) = d.first_mut() {
            *b = 0x45;
        }
        check_outputs(&mut t, &d, true);
        if let Some(b) = d.first_mut() {
            *b = 0x60;
        }
        check_outputs(&mut t, &d, false);
    }

    #[test]
    fn valid_v4_translates_with_valid_checksums(pkt in v4_packet(), i in 0usize..6, mtu in 1280u32..9000) {
        let mut t = Translator::new(config(i, mtu));
        let (v, n6, n4) = check_outputs(&mut t, &pkt, true);
        if let Verdict::Translated = v {
            prop_assert!(n6 >= 1);
            prop_assert_eq!(n4, 0);
        }
    }

    #[test]
    fn valid_v6_translates_with_valid_checksums(i in 0usize..6, pkt in (0usize..6).prop_flat_map(v6_packet), mtu in 1280u32..9000) {
        // `pkt` was built under prefix index `j`, translated under `i`: mostly NotOurs when
        // they differ, fully checked when they agree.
        let mut t = Translator::new(config(i, mtu));
        check_outputs(&mut t, &pkt, false);
    }

    #[test]
    fn valid_v6_under_its_own_prefix((i, pkt) in (0usize..6).prop_flat_map(|i| (Just(i), v6_packet(i))), mtu in 1280u32..9000) {
        let mut t = Translator::new(config(i, mtu));
        let (v, n4, n6) = check_outputs(&mut t, &pkt, false);
        if v == Verdict::Translated {
            prop_assert_eq!((n4, n6), (1, 0));
        }
    }

    #[test]
    fn mutated_v4_never_panics(pkt in v4_packet(), m in mutations(), i in 0usize..6, mtu in 1280u32..9000) {
        let mut t = Translator::new(config(i, mtu));
        check_outputs(&mut t, &mutate(pkt, &m), true);
    }

    #[test]
    fn mutated_v6_never_panics(pkt in v6_packet(5), m in mutations(), mtu in 1280u32..9000) {
        let mut t = Translator::new(config(5, mtu));
        check_outputs(&mut t, &mutate(pkt, &m), false);
    }

    #[test]
    fn nothing_for_v4_outside_our_address(
        pkt in v4_packet(),
        src in any::<u32>(),
        i in 0usize..6,
    ) {
        let src = Ipv4Addr::from(src);
        prop_assume!(src != CLAT4);
        let mut p = pkt;
        p[12..16].copy_from_slice(&src.octets());
        p[10..12].fill(0);
        let ihl = usize::from(p[0] & 0xf) * 4;
        let c = ref_csum(ref_sum(0, &p[..ihl]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let mut t = Translator::new(config(i, 1500));
        let (v, n, e) = check_outputs(&mut t, &p, true);
        prop_assert_eq!(v, Verdict::Dropped(DropReason::NotOurs));
        prop_assert_eq!((n, e), (0, 0));
    }

    #[test]
    fn nothing_for_v6_outside_our_address_or_prefix(
        pkt in v6_packet(5),
        other in any::<u128>(),
        which in 0u8..2,
        i in 0usize..6,
    ) {
        let c = config(i, 1500);
        let other = Ipv6Addr::from(other);
        let mut p = pkt;
        if which == 0 {
            prop_assume!(other != c.v6);
            p[24..40].copy_from_slice(&other.octets());
        } else {
            prop_assume!(!c.prefix.contains(other));
            p[8..24].copy_from_slice(&other.octets());
            // ICMPv6 errors from outside the prefix about our own packets are translated
            // (from 192.0.0.8); everything else must not be.
            prop_assume!(!(p[6] == 58 && p.len() > 40 && p[40] < 128));
        }
        let mut t = Translator::new(c);
        let (v, n, e) = check_outputs(&mut t, &p, false);
        prop_assert!(matches!(v, Verdict::Dropped(_)), "{:?}", v);
        prop_assert_eq!((n, e), (0, 0));
    }

    #[test]
    fn df_clear_packets_are_fragmented_to_fit(n in 0usize..20000, mtu in 1280u32..9001, i in 0usize..6, proto in 0u8..3) {
        let ps = Pseudo::V4(CLAT4, REMOTE4);
        let data = payload(n.min(65535 - 60), 3);
        let l4 = match proto {
            0 => tcp(1, 2, 3, &data, &ps),
            1 => udp(1, 2, &data, &ps, proto == 1 && n % 2 == 0),
            _ => icmp(8, 0, [0; 4], &data, &Pseudo::None),
        };
        let mut h = V4::new(CLAT4, REMOTE4, [6, 17, 1][proto as usize]);
        h.df = false;
        let pkt = h.build(&l4);
        let mut t = Translator::new(config(i, mtu));
        let (mut out, mut err) = (PacketBatch::default(), PacketBatch::default());
        prop_assert_eq!(t.ipv4_to_ipv6(&pkt, &mut out, &mut err), Verdict::Translated);
        prop_assert!(err.is_empty());
        let mut joined = Vec::new();
        for p in out.iter() {
            prop_assert!(p.len() <= mtu as usize);
            let o = verify(p);
            if let Some(f) = o.frag() {
                prop_assert_eq!(f.offset, joined.len());
            }
            joined.extend_from_slice(o.l4());
        }
        prop_assert_eq!(joined.len(), l4.len());
        // Everything after the checksum (and the ICMP type) is carried unchanged.
        let skip = [18, 8, 4][proto as usize];
        prop_assert_eq!(&joined[skip..], &l4[skip..]);
        let c = t.config();
        let next = [6, 17, 58][proto as usize];
        prop_assert!(sums_ok(pseudo6(c.v6, c.prefix.embed(REMOTE4), next, joined.len()), &joined));
    }

    #[test]
    fn v6_v4_v6_round_trip(i in 0usize..6, data in proptest::collection::vec(any::<u8>(), 0..1400), tc in any::<u8>(), hop in 1u8..=255, kind in 0u8..3) {
        let c = config(i, 1500);
        let r6 = c.prefix.embed(REMOTE4);
        let ps = Pseudo::V6(r6, clat6());
        let (next, l4) = match kind {
            0 => (6, tcp(5, 6, 7, &data, &ps)),
            1 => (17, udp(5, 6, &data, &ps, false)),
            _ => (58, icmp(128, 0, [0, 1, 0, 2], &data, &ps)),
        };
        let mut h = V6::new(r6, clat6());
        h.tc = tc;
        h.hop = hop;
        let pkt = h.build(next, &[], &l4);
        let mut a = Translator::new(c);
        let mut b = Translator::new(mirror(&c, REMOTE4));
        let (mut v4, mut e) = (PacketBatch::default(), PacketBatch::default());
        prop_assert_eq!(a.ipv6_to_ipv4(&pkt, &mut v4, &mut e), Verdict::Translated);
        let (mut v6, mut e2) = (PacketBatch::default(), PacketBatch::default());
        prop_assert_eq!(b.ipv4_to_ipv6(v4.get(0).unwrap(), &mut v6, &mut e2), Verdict::Translated);
        prop_assert_eq!(v6.get(0).unwrap(), &pkt[..]);
    }

    #[test]
    fn offload_entry_points_never_panic(
        pkt4 in v4_packet(),
        pkt6 in v6_packet(5),
        m in mutations(),
        raw in any::<[u8; 10]>(),
        mtu in 1280u32..9000,
    ) {
        let h = VnetHdr::from_le_bytes(&raw).unwrap();
        let mut t = Translator::new(config(5, mtu));
        let (mut a, mut b) = (PacketBatch::default(), PacketBatch::default());
        for p in [pkt4.clone(), mutate(pkt4, &m)] {
            let (v, oh) = t.ipv4_to_ipv6_offload(&h, &p, &mut a, &mut b);
            if matches!(v, Verdict::Dropped(_)) {
                prop_assert_eq!(oh, VnetHdr::default());
            }
        }
        for p in [pkt6.clone(), mutate(pkt6, &m)] {
            let (v, oh) = t.ipv6_to_ipv4_offload(&h, &p, &mut b, &mut a);
            if matches!(v, Verdict::Dropped(_)) {
                prop_assert_eq!(oh, VnetHdr::default());
            }
        }
        for p in a.iter().chain(b.iter()) {
            verify_opts(p, false);
        }
    }
}

/// The seed corpus gives its expected verdicts, and every output is a valid packet.
#[test]
fn corpus_replays_with_expected_verdicts() {
    let corpus = load_corpus();
    for e in &corpus {
        let mut t = Translator::new(corpus_config());
        let (v, n, back) = check_outputs(&mut t, &e.packet, e.v4);
        assert_eq!(format!("{v:?}"), e.expect, "{}", e.name);
        if v == Verdict::Translated {
            assert!(n >= 1, "{}", e.name);
            assert_eq!(back, 0, "{}", e.name);
        }
        // At other MTUs and prefix lengths nothing panics and outputs stay valid.
        for mtu in [1280, 9000] {
            for i in 0..LENGTHS.len() {
                let mut c = config(i, mtu);
                c.v6 = corpus_config().v6;
                check_outputs(&mut Translator::new(c), &e.packet, e.v4);
            }
        }
    }
}

fn corpus_entry() -> impl Strategy<Value = (bool, Vec<u8>)> {
    let corpus = load_corpus();
    (0..corpus.len()).prop_map(move |i| (corpus[i].v4, corpus[i].packet.clone()))
}

/// The IPv4 header checksum made right again after a mutation, so that the mutated packet gets
/// past the first check (half of the cases).
fn fix_v4_header(p: &mut [u8]) {
    if p.len() >= 20 && p[0] >> 4 == 4 {
        let ihl = (usize::from(p[0] & 0xf) * 4).clamp(20, p.len());
        p[10..12].fill(0);
        let c = ref_csum(ref_sum(0, &p[..ihl]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_corpus_never_panics_and_outputs_parse(
        (v4, pkt) in corpus_entry(),
        m in mutations(),
        fix in any::<bool>(),
        mtu in prop_oneof![Just(1280u32), Just(1500), 1280u32..9000],
    ) {
        let mut p = mutate(pkt, &m);
        if fix {
            fix_v4_header(&mut p);
        }
        let mut c = corpus_config();
        c.mtu6 = mtu;
        let mut t = Translator::new(c);
        check_outputs(&mut t, &p, v4);
        // The other direction parses it too.
        check_outputs(&mut t, &p, !v4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Issue 9 §5: IPv4 fragments anywhere up to the 64 KiB end translate to IPv6 fragments
    /// whose offsets follow each other from the input's and end within 65535 − 20, or are
    /// dropped as malformed when the input ends beyond that; never a wrapped offset.
    #[test]
    fn fragment_offsets_never_wrap(
        off8 in prop_oneof![0usize..8192, 7900usize..8192],
        len in 0usize..3000,
        mf in any::<bool>(),
        mtu in 1280u32..2000,
        i in 0usize..6,
    ) {
        let mut h = V4::new(CLAT4, REMOTE4, 17);
        h.df = false;
        h.mf = mf;
        h.offset = off8 * 8;
        // A first fragment must carry a UDP header; later ones carry any data.
        prop_assume!(off8 != 0 || !mf || len >= 8);
        let data = if off8 == 0 {
            udp(1, 2, &payload(len, 4), &Pseudo::V4(CLAT4, REMOTE4), false)
        } else {
            payload(len, 4)
        };
        prop_assume!(off8 != 0 || mf);
        let pkt = h.build(&data);
        let mut t = Translator::new(config(i, mtu));
        let (mut out, mut err) = (PacketBatch::default(), PacketBatch::default());
        let v = t.ipv4_to_ipv6(&pkt, &mut out, &mut err);
        let end = h.offset + data.len();
        if end > 65515 {
            prop_assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
            prop_assert!(out.is_empty());
        } else {
            prop_assert_eq!(v, Verdict::Translated);
            let mut next = h.offset;
            for p in out.iter() {
                let o = verify_opts(p, false);
                let f = o.frag().unwrap();
                prop_assert_eq!(f.offset, next);
                next += o.l4().len();
            }
            prop_assert_eq!(next, end);
        }
    }
}
