//! RFC 7915 §4 (IPv4 → IPv6), one test per rule. Packets are built here, outputs parsed by
//! etherparse and every checksum checked against an independent reference.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod xlat_common;

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::xlat::{DropReason, PacketBatch, Translator, Verdict, IPV4_DUMMY};
use xlat_common::*;

fn run(t: &mut Translator, pkt: &[u8]) -> (Verdict, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut v6 = PacketBatch::default();
    let mut v4 = PacketBatch::default();
    let v = t.ipv4_to_ipv6(pkt, &mut v6, &mut v4);
    (v, collect(&v6), collect(&v4))
}

fn one(t: &mut Translator, pkt: &[u8]) -> Out {
    let (v, v6, v4) = run(t, pkt);
    assert_eq!(v, Verdict::Translated);
    assert!(v4.is_empty());
    assert_eq!(v6.len(), 1);
    verify(&v6[0])
}

fn out_ps() -> Pseudo {
    Pseudo::V4(CLAT4, REMOTE4)
}

const LENGTHS: [&str; 6] = [
    "2001:db8::/32",
    "2001:db8:100::/40",
    "2001:db8:122::/48",
    "2001:db8:122:300::/56",
    "2001:db8:122:344::/64",
    "2001:db8:64::/96",
];

#[test]
fn tcp_header_fields_and_checksum_every_prefix_length() {
    for p in LENGTHS {
        let c = cfg_with(p, 1500);
        let mut t = Translator::new(c);
        let data = payload(1000, 3);
        let seg = tcp(40000, 443, 7, &data, &out_ps());
        let mut h = V4::new(CLAT4, REMOTE4, 6);
        h.ttl = 17;
        h.tos = 0xb8;
        let o = one(&mut t, &h.build(&seg));
        let v6 = o.v6();
        assert_eq!(Ipv6Addr::from(v6.source), clat6(), "{p}");
        assert_eq!(
            Ipv6Addr::from(v6.destination),
            c.prefix.embed(REMOTE4),
            "{p}"
        );
        assert_eq!(v6.hop_limit, 17, "hop limit = TTL");
        assert_eq!(v6.traffic_class, 0xb8, "traffic class = TOS");
        assert_eq!(v6.flow_label.value(), 0);
        assert_eq!(o.next(), 6);
        assert!(
            o.frag().is_none(),
            "no fragment header for an unfragmented packet"
        );
        // Everything but the checksum is carried unchanged.
        assert_eq!(o.l4()[..16], seg[..16]);
        assert_eq!(o.l4()[18..], seg[18..]);
    }
}

#[test]
fn udp_checksum_updated() {
    let mut t = Translator::new(cfg());
    let seg = udp(5353, 53, &payload(300, 1), &out_ps(), false);
    let o = one(&mut t, &V4::new(CLAT4, REMOTE4, 17).build(&seg));
    assert_eq!(o.next(), 17);
    assert_eq!(o.l4()[8..], seg[8..]);
}

#[test]
fn udp_zero_checksum_gets_computed() {
    let mut t = Translator::new(cfg());
    for n in [0, 1, 7, 100, 1001] {
        let seg = udp(1, 2, &payload(n, 9), &out_ps(), true);
        assert_eq!(seg[6..8], [0, 0]);
        let o = one(&mut t, &V4::new(CLAT4, REMOTE4, 17).build(&seg));
        assert_ne!(o.l4()[6..8], [0, 0]); // and verify() checked its value
    }
}

#[test]
fn udp_zero_checksum_fragment_is_dropped() {
    let mut t = Translator::new(cfg());
    let seg = udp(1, 2, &payload(64, 9), &out_ps(), true);
    let mut h = V4::new(CLAT4, REMOTE4, 17);
    h.df = false;
    h.mf = true;
    let (v, v6, v4) = run(&mut t, &h.build(&seg));
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
    assert!(v6.is_empty() && v4.is_empty());
}

#[test]
fn icmp_echo_becomes_icmpv6_echo() {
    for (t4, t6) in [(8u8, 128u8), (0, 129)] {
        let mut t = Translator::new(cfg());
        let msg = icmp(t4, 0, [0x12, 0x34, 0, 9], &payload(56, 4), &Pseudo::None);
        let o = one(&mut t, &V4::new(CLAT4, REMOTE4, 1).build(&msg));
        assert_eq!(o.next(), 58);
        assert_eq!(o.l4()[0], t6);
        assert_eq!(o.l4()[1], 0);
        assert_eq!(o.l4()[4..], msg[4..], "identifier, sequence and data kept");
    }
}

#[test]
fn icmp_informational_without_counterpart_is_dropped() {
    for typ in [13u8, 14, 15, 16, 17, 18, 9, 10, 4, 5, 6, 42] {
        let mut t = Translator::new(cfg());
        let msg = icmp(typ, 0, [0; 4], &payload(28, 4), &Pseudo::None);
        let (v, v6, v4) = run(&mut t, &V4::new(CLAT4, REMOTE4, 1).build(&msg));
        assert_eq!(v, Verdict::Dropped(DropReason::Unsupported), "type {typ}");
        assert!(v6.is_empty() && v4.is_empty());
    }
}

#[test]
fn not_ours_is_dropped_and_counted() {
    let mut t = Translator::new(cfg());
    let seg = udp(1, 2, b"x", &Pseudo::None, true);
    let cases = [
        (Ipv4Addr::new(192, 0, 0, 5), REMOTE4),
        (Ipv4Addr::new(10, 0, 0, 1), REMOTE4),
        (CLAT4, Ipv4Addr::new(224, 0, 0, 251)),
        (CLAT4, Ipv4Addr::BROADCAST),
        (CLAT4, Ipv4Addr::new(127, 0, 0, 1)),
        (CLAT4, Ipv4Addr::UNSPECIFIED),
        (CLAT4, CLAT4),
    ];
    for (s, d) in cases {
        let (v, v6, v4) = run(&mut t, &V4::new(s, d, 17).build(&seg));
        assert_eq!(v, Verdict::Dropped(DropReason::NotOurs), "{s} -> {d}");
        assert!(v6.is_empty() && v4.is_empty());
    }
    let c = t.counters();
    assert_eq!(c.dropped, cases.len() as u64);
    assert_eq!(c.dropped_not_ours, cases.len() as u64);
    assert_eq!(c.v4_to_v6_packets, 0);
}

#[test]
fn options_are_dropped_from_the_header() {
    let mut t = Translator::new(cfg());
    let seg = tcp(1, 2, 3, &payload(20, 0), &out_ps());
    let mut h = V4::new(CLAT4, REMOTE4, 6);
    // NOP, NOP, Record Route (7) with room for one address, then padding.
    h.options = vec![1, 1, 7, 7, 4, 0, 0, 0, 0, 0, 0, 0];
    let o = one(&mut t, &h.build(&seg));
    assert_eq!(usize::from(o.v6().payload_length), seg.len());
}

#[test]
fn unexpired_source_route_is_refused_with_icmp() {
    for opt in [131u8, 137] {
        let mut t = Translator::new(cfg());
        let seg = tcp(1, 2, 3, &payload(20, 0), &out_ps());
        let mut h = V4::new(CLAT4, REMOTE4, 6);
        // LSRR/SSRR with one address left, pointer 4 (unexpired), NOP padding.
        h.options = vec![1, opt, 7, 4, 203, 0, 113, 1];
        let pkt = h.build(&seg);
        let (v, v6, v4) = run(&mut t, &pkt);
        assert_eq!(v, Verdict::Dropped(DropReason::SourceRoute));
        assert!(v6.is_empty());
        assert_eq!(v4.len(), 1);
        let e = verify(&v4[0]);
        assert_eq!(Ipv4Addr::from(e.v4().source), IPV4_DUMMY);
        assert_eq!(Ipv4Addr::from(e.v4().destination), CLAT4);
        assert_eq!(e.next(), 1);
        assert_eq!((e.l4()[0], e.l4()[1]), (3, 5), "Source Route Failed");
        assert_eq!(e.l4()[8..], pkt[..], "the offending packet is quoted");
        assert_eq!(t.counters().icmp_errors_sent, 1);
        // Expired (pointer past the end): ignored like any option.
        h.options = vec![1, opt, 7, 8, 203, 0, 113, 1];
        one(&mut t, &h.build(&seg));
    }
}

#[test]
fn ttl_zero_draws_time_exceeded() {
    let mut t = Translator::new(cfg());
    let seg = udp(1, 2, b"hello", &out_ps(), false);
    let mut h = V4::new(CLAT4, REMOTE4, 17);
    h.ttl = 0;
    let (v, v6, v4) = run(&mut t, &h.build(&seg));
    assert_eq!(v, Verdict::Dropped(DropReason::TtlExceeded));
    assert!(v6.is_empty());
    let e = verify(&v4[0]);
    assert_eq!((e.l4()[0], e.l4()[1]), (11, 0));
    // TTL 1 is copied as is (the host already decremented).
    h.ttl = 1;
    assert_eq!(one(&mut t, &h.build(&seg)).v6().hop_limit, 1);
}

#[test]
fn fragments_get_a_fragment_header() {
    let mut t = Translator::new(cfg());
    let data = payload(1000, 5);
    // First fragment: TCP header inside, checksum covers the whole datagram.
    let whole = tcp(1, 2, 3, &data, &out_ps());
    let mut h = V4::new(CLAT4, REMOTE4, 6);
    h.df = false;
    h.mf = true;
    h.id = 0xbeef;
    let first = one(&mut t, &h.build(&whole[..504]));
    assert_eq!(
        first.frag(),
        Some(&Frag {
            offset: 0,
            more: true,
            id: 0xbeef
        })
    );
    assert_eq!(first.next(), 6);
    h.mf = false;
    h.offset = 504;
    let second = one(&mut t, &h.build(&whole[504..]));
    assert_eq!(
        second.frag(),
        Some(&Frag {
            offset: 504,
            more: false,
            id: 0xbeef
        })
    );
    assert_eq!(
        second.l4(),
        &whole[504..],
        "non-first fragment data unchanged"
    );
    // Reassembled, the TCP checksum is valid under the IPv6 pseudo-header.
    let mut all = first.l4().to_vec();
    all.extend_from_slice(second.l4());
    let dst6 = cfg().prefix.embed(REMOTE4);
    assert!(sums_ok(pseudo6(clat6(), dst6, 6, all.len()), &all));
}

#[test]
fn fragmented_icmp_is_dropped() {
    let mut t = Translator::new(cfg());
    let msg = icmp(8, 0, [0; 4], &payload(100, 0), &Pseudo::None);
    let mut h = V4::new(CLAT4, REMOTE4, 1);
    h.df = false;
    h.mf = true;
    let (v, ..) = run(&mut t, &h.build(&msg[..64]));
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
}

#[test]
fn df_clear_too_big_is_fragmented() {
    for (mtu, proto) in [(1280u32, 17u8), (1500, 6), (1280, 1), (1400, 17)] {
        let mut t = Translator::new(cfg_with("2001:db8:100::/40", mtu));
        let data = payload(2900, 7);
        let l4 = match proto {
            6 => tcp(1, 2, 3, &data, &out_ps()),
            17 => udp(1, 2, &data, &out_ps(), true),
            _ => icmp(8, 0, [0, 1, 0, 2], &data, &Pseudo::None),
        };
        let mut h = V4::new(CLAT4, REMOTE4, proto);
        h.df = false;
        h.id = 0x4242;
        let (v, v6, v4) = run(&mut t, &h.build(&l4));
        assert_eq!(v, Verdict::Translated);
        assert!(v4.is_empty());
        assert!(v6.len() >= 3);
        let mut all = Vec::new();
        for (i, p) in v6.iter().enumerate() {
            assert!(p.len() <= mtu as usize, "fragment {i} fits the MTU");
            let o = verify(p);
            let f = o.frag().expect("fragment header").clone();
            assert_eq!(f.id, 0x4242);
            assert_eq!(f.offset, all.len(), "contiguous offsets");
            let last = i == v6.len() - 1;
            assert_eq!(f.more, !last);
            if !last {
                assert_eq!(o.l4().len() % 8, 0);
            }
            assert_eq!(o.next(), if proto == 1 { 58 } else { proto });
            all.extend_from_slice(o.l4());
        }
        assert_eq!(all.len(), l4.len());
        let dst6 = t.config().prefix.embed(REMOTE4);
        let next = if proto == 1 { 58 } else { proto };
        assert!(
            sums_ok(pseudo6(clat6(), dst6, next, all.len()), &all),
            "reassembled checksum"
        );
        assert_eq!(t.counters().fragments_made, v6.len() as u64);
    }
}

#[test]
fn df_set_too_big_draws_fragmentation_needed() {
    let mut t = Translator::new(cfg_with("2001:db8:64::/96", 1400));
    let l4 = tcp(1, 2, 3, &payload(1400, 7), &out_ps());
    let pkt = V4::new(CLAT4, REMOTE4, 6).build(&l4);
    let (v, v6, v4) = run(&mut t, &pkt);
    assert_eq!(v, Verdict::Dropped(DropReason::TooBig));
    assert!(v6.is_empty());
    assert_eq!(v4.len(), 1);
    assert!(v4[0].len() <= 576);
    let e = verify(&v4[0]);
    assert_eq!(Ipv4Addr::from(e.v4().destination), CLAT4);
    let m = e.l4();
    assert_eq!((m[0], m[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), 1380, "MTU = mtu6 - 20");
    assert_eq!(m[8..28], pkt[..20], "the offending header is quoted");
    // Exactly fitting passes.
    let l4 = tcp(1, 2, 3, &payload(1400 - 60, 7), &out_ps());
    let o = one(&mut t, &V4::new(CLAT4, REMOTE4, 6).build(&l4));
    assert_eq!(usize::from(o.v6().payload_length) + 40, 1400);
}

/// A packet from the far side as the host saw it, for the host's ICMP errors to quote.
fn inbound_udp() -> Vec<u8> {
    let seg = udp(
        53,
        40000,
        &payload(40, 2),
        &Pseudo::V4(REMOTE4, CLAT4),
        false,
    );
    V4::new(REMOTE4, CLAT4, 17).build(&seg)
}

fn host_error(
    t: &mut Translator,
    typ: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> (Verdict, Vec<Vec<u8>>) {
    let msg = icmp(typ, code, rest, quoted, &Pseudo::None);
    let (v, v6, v4) = run(t, &V4::new(CLAT4, REMOTE4, 1).build(&msg));
    assert!(v4.is_empty());
    (v, v6)
}

#[test]
fn icmp_errors_carry_the_translated_packet() {
    let mut t = Translator::new(cfg());
    let quoted = inbound_udp();
    let (v, v6) = host_error(&mut t, 3, 3, [0; 4], &quoted);
    assert_eq!(v, Verdict::Translated);
    let o = verify(&v6[0]);
    let m = o.l4();
    assert_eq!((m[0], m[1]), (1, 4), "port unreachable");
    // The packet inside, as IPv6: from the far side's embedded address to ours.
    let inner = verify(&m[8..]);
    let ih = inner.v6();
    assert_eq!(Ipv6Addr::from(ih.source), cfg().prefix.embed(REMOTE4));
    assert_eq!(Ipv6Addr::from(ih.destination), clat6());
    assert_eq!(inner.next(), 17);
    assert_eq!(inner.l4()[8..], quoted[28..], "inner UDP data"); // verify() checked its checksum
}

#[test]
fn icmp_error_type_and_code_mappings() {
    let quoted = inbound_udp();
    let cases: [(u8, u8, [u8; 4], Option<(u8, u8, u32)>); 12] = [
        (3, 0, [0; 4], Some((1, 0, 0))),
        (3, 1, [0; 4], Some((1, 0, 0))),
        (3, 2, [0; 4], Some((4, 1, 6))),
        (3, 4, [0, 0, 0x05, 0x00], Some((2, 0, 1300))),
        (3, 4, [0, 0, 0x02, 0x40], Some((2, 0, 1280))),
        (3, 9, [0; 4], Some((1, 1, 0))),
        (3, 13, [0; 4], Some((1, 1, 0))),
        (3, 14, [0; 4], None),
        (11, 0, [0; 4], Some((3, 0, 0))),
        (11, 1, [0; 4], Some((3, 1, 0))),
        (12, 0, [9, 0, 0, 0], Some((4, 0, 6))),
        (12, 0, [5, 0, 0, 0], None),
    ];
    for (typ, code, rest, want) in cases {
        let mut t = Translator::new(cfg());
        let (v, v6) = host_error(&mut t, typ, code, rest, &quoted);
        match want {
            Some((t6, c6, r6)) => {
                assert_eq!(v, Verdict::Translated, "{typ}/{code}");
                let o = verify(&v6[0]);
                let m = o.l4();
                assert_eq!(
                    (m[0], m[1], u32::from_be_bytes([m[4], m[5], m[6], m[7]])),
                    (t6, c6, r6),
                    "{typ}/{code}"
                );
            }
            None => {
                assert_eq!(v, Verdict::Dropped(DropReason::Unsupported), "{typ}/{code}");
                assert!(v6.is_empty());
            }
        }
    }
}

#[test]
fn icmp_error_about_echo_translates_the_inner_echo() {
    let mut t = Translator::new(cfg());
    let echo = icmp(8, 0, [0, 7, 0, 1], &payload(32, 0), &Pseudo::None);
    let quoted = V4::new(REMOTE4, CLAT4, 1).build(&echo);
    let (v, v6) = host_error(&mut t, 11, 0, [0; 4], &quoted);
    assert_eq!(v, Verdict::Translated);
    let inner = verify(&verify(&v6[0]).l4()[8..]); // checks the inner ICMPv6 checksum too
    assert_eq!(inner.next(), 58);
    assert_eq!(inner.l4()[0], 128);
}

#[test]
fn icmp_error_with_bad_checksum_is_malformed() {
    let mut t = Translator::new(cfg());
    let mut msg = icmp(3, 3, [0; 4], &inbound_udp(), &Pseudo::None);
    msg[2] ^= 1;
    let (v, v6, _) = run(&mut t, &V4::new(CLAT4, REMOTE4, 1).build(&msg));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
    assert!(v6.is_empty());
}

#[test]
fn icmp_error_about_an_error_is_dropped() {
    let mut t = Translator::new(cfg());
    let inner_err = icmp(3, 1, [0; 4], &inbound_udp()[..28], &Pseudo::None);
    let quoted = V4::new(REMOTE4, CLAT4, 1).build(&inner_err);
    let (v, v6) = host_error(&mut t, 3, 3, [0; 4], &quoted);
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
    assert!(v6.is_empty());
}

#[test]
fn icmpv6_errors_fit_1280_bytes() {
    let mut t = Translator::new(cfg_with("2001:db8:64::/96", 9000));
    let seg = udp(
        53,
        40000,
        &payload(1400, 2),
        &Pseudo::V4(REMOTE4, CLAT4),
        false,
    );
    let quoted = V4::new(REMOTE4, CLAT4, 17).build(&seg);
    let (v, v6) = host_error(&mut t, 3, 3, [0; 4], &quoted);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(v6[0].len(), 1280);
    let o = verify(&v6[0]);
    // The inner header still states the original length.
    let (ih, _) = etherparse::Ipv6Header::from_slice(&o.l4()[8..]).unwrap();
    assert_eq!(usize::from(ih.payload_length), seg.len());
}

#[test]
fn malformed_ipv4_is_dropped() {
    let mut t = Translator::new(cfg());
    let good = V4::new(CLAT4, REMOTE4, 17).build(&udp(1, 2, b"abc", &out_ps(), false));
    let mut bad_csum = good.clone();
    bad_csum[10] ^= 0xff;
    let mut long_total = good.clone();
    long_total[3] += 1;
    long_total[10..12].copy_from_slice(&[0, 0]);
    let c = ref_csum(ref_sum(0, &long_total[..20]));
    long_total[10..12].copy_from_slice(&c.to_be_bytes());
    let mut ihl4 = good.clone();
    ihl4[0] = 0x44;
    let cases: [&[u8]; 6] = [&[], &good[..19], &bad_csum, &long_total, &ihl4, &[0x60; 40]];
    for (i, p) in cases.iter().enumerate() {
        let (v, v6, v4) = run(&mut t, p);
        assert_eq!(v, Verdict::Dropped(DropReason::Malformed), "case {i}");
        assert!(v6.is_empty() && v4.is_empty());
    }
    // A truncated UDP header inside a consistent IPv4 packet.
    let (v, ..) = run(&mut t, &V4::new(CLAT4, REMOTE4, 17).build(&[0, 1, 0, 2]));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
}

#[test]
fn trailing_bytes_after_total_length_are_ignored() {
    let mut t = Translator::new(cfg());
    let seg = udp(1, 2, b"abc", &out_ps(), false);
    let mut pkt = V4::new(CLAT4, REMOTE4, 17).build(&seg);
    pkt.extend_from_slice(&[0xee; 10]);
    let o = one(&mut t, &pkt);
    assert_eq!(o.l4().len(), seg.len());
}

#[test]
fn other_protocols_are_carried_unchanged() {
    let mut t = Translator::new(cfg());
    let gre = payload(64, 1);
    let o = one(&mut t, &V4::new(CLAT4, REMOTE4, 47).build(&gre));
    assert_eq!(o.next(), 47);
    assert_eq!(o.l4(), &gre[..]);
    for proto in [58u8, 0, 43, 44, 60] {
        let (v, ..) = run(&mut t, &V4::new(CLAT4, REMOTE4, proto).build(&gre));
        assert_eq!(
            v,
            Verdict::Dropped(DropReason::Unsupported),
            "proto {proto}"
        );
    }
}

#[test]
fn counters_count_packets_and_bytes() {
    let mut t = Translator::new(cfg());
    let pkt = V4::new(CLAT4, REMOTE4, 17).build(&udp(1, 2, b"abc", &out_ps(), false));
    for _ in 0..3 {
        one(&mut t, &pkt);
    }
    let c = t.counters();
    assert_eq!(c.v4_to_v6_packets, 3);
    assert_eq!(c.v4_to_v6_bytes, 3 * pkt.len() as u64);
    assert_eq!(c.dropped, 0);
}

#[test]
fn batch_memory_is_reused() {
    let mut t = Translator::new(cfg());
    let pkt = V4::new(CLAT4, REMOTE4, 6).build(&tcp(1, 2, 3, &payload(1400, 0), &out_ps()));
    let mut v6 = PacketBatch::with_capacity(64 * 1024);
    let mut v4 = PacketBatch::default();
    for _ in 0..10 {
        for _ in 0..32 {
            t.ipv4_to_ipv6(&pkt, &mut v6, &mut v4);
        }
        assert_eq!(v6.len(), 32);
        assert_eq!(v6.bytes(), 32 * (pkt.len() + 20));
        for p in v6.iter() {
            verify(p);
        }
        assert_eq!(v6.get(31).map(<[u8]>::len), Some(pkt.len() + 20));
        assert_eq!(v6.get(32), None);
        v6.clear();
        assert!(v6.is_empty());
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Issue 9 §5: a fragment at offset 65472 with 1300 octets of data, MTU 1280, produced IPv6
/// fragments at offsets 65472 and then 1168 (wrapped). Its data ends past 65535: it belongs
/// to no valid datagram and is dropped, counted as malformed.
#[test]
fn fragment_ending_past_64k_is_dropped_not_wrapped() {
    let mut pkt = hex("4500052812341ff840115957c0000004c633640a");
    pkt.resize(20 + 1300, 0);
    let mut t = Translator::new(cfg_with("2001:db8:64::/96", 1280));
    let (v, v6, v4) = run(&mut t, &pkt);
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
    assert!(
        v6.is_empty() && v4.is_empty(),
        "nothing sent: {v6:?} {v4:?}"
    );
    assert_eq!(t.counters().dropped_malformed, 1);
    assert_eq!(t.counters().fragments_made, 0);
}

/// Fragments ending exactly at the last octet a datagram can hold are translated, and no
/// translated fragment ever has an offset below the input's (no wrap), at any MTU.
#[test]
fn fragments_up_to_the_64k_end_translate_without_wrapping() {
    for mtu in [1280u32, 1500, 9000] {
        for (offset, len) in [
            (65512usize, 3usize),
            (64000, 1512),
            (65000, 512),
            (65504, 11),
        ] {
            let mut h = V4::new(CLAT4, REMOTE4, 17);
            h.df = false;
            h.offset = offset;
            let data = payload(len, 9);
            let pkt = h.build(&data);
            let mut t = Translator::new(cfg_with("2001:db8:64::/96", mtu));
            let (v, v6, _) = run(&mut t, &pkt);
            let end = offset + len;
            if end > 65515 {
                assert_eq!(v, Verdict::Dropped(DropReason::Malformed), "{offset}+{len}");
                continue;
            }
            assert_eq!(v, Verdict::Translated, "{offset}+{len} mtu {mtu}");
            let mut expect = offset;
            for p in &v6 {
                let o = verify(p);
                let f = o.frag().unwrap();
                assert_eq!(f.offset, expect, "offsets follow each other");
                expect += o.l4().len();
            }
            assert_eq!(expect, end);
        }
        // One octet more than fits: dropped.
        let mut h = V4::new(CLAT4, REMOTE4, 17);
        h.df = false;
        h.offset = 65512;
        let mut t = Translator::new(cfg_with("2001:db8:64::/96", mtu));
        let (v, v6, _) = run(&mut t, &h.build(&payload(4, 1)));
        assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
        assert!(v6.is_empty());
    }
}
