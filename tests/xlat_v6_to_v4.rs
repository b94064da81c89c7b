//! RFC 7915 §5 (IPv6 → IPv4), one test per rule. Packets are built here, outputs parsed by
//! etherparse and every checksum checked against an independent reference.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod xlat_common;

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::xlat::{DropReason, PacketBatch, Translator, Verdict, IPV4_DUMMY};
use xlat_common::*;

fn run(t: &mut Translator, pkt: &[u8]) -> (Verdict, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut v4 = PacketBatch::default();
    let mut v6 = PacketBatch::default();
    let v = t.ipv6_to_ipv4(pkt, &mut v4, &mut v6);
    (v, collect(&v4), collect(&v6))
}

fn one(t: &mut Translator, pkt: &[u8]) -> Out {
    let (v, v4, v6) = run(t, pkt);
    assert_eq!(v, Verdict::Translated);
    assert!(v6.is_empty());
    assert_eq!(v4.len(), 1);
    verify(&v4[0])
}

fn remote6(t: &Translator) -> Ipv6Addr {
    t.config().prefix.embed(REMOTE4)
}

fn in_ps(t: &Translator) -> Pseudo {
    Pseudo::V6(remote6(t), clat6())
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
        let mut t = Translator::new(cfg_with(p, 1500));
        let r6 = remote6(&t);
        let seg = tcp(443, 40000, 9, &payload(900, 1), &in_ps(&t));
        let mut h = V6::new(r6, clat6());
        h.hop = 33;
        h.tc = 0x2e;
        h.flow = 0x12345;
        let o = one(&mut t, &h.build(6, &[], &seg));
        let v4 = o.v4();
        assert_eq!(Ipv4Addr::from(v4.source), REMOTE4, "{p}");
        assert_eq!(Ipv4Addr::from(v4.destination), CLAT4, "{p}");
        assert_eq!(v4.time_to_live, 33, "TTL = hop limit");
        assert_eq!(
            v4.dscp.value() << 2 | v4.ecn.value(),
            0x2e,
            "TOS = traffic class"
        );
        assert_eq!(o.next(), 6);
        assert!(!v4.more_fragments);
        assert_eq!(v4.fragment_offset.value(), 0);
        assert_eq!(v4.header_len(), 20);
        assert_eq!(o.l4()[..16], seg[..16]);
        assert_eq!(o.l4()[18..], seg[18..]);
    }
}

#[test]
fn df_and_identification_follow_the_1260_byte_rule() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    // Small: DF clear and a fresh, changing Identification.
    let seg = udp(53, 1000, &payload(100, 0), &in_ps(&t), false);
    let pkt = V6::new(r6, clat6()).build(17, &[], &seg);
    let a = one(&mut t, &pkt);
    let b = one(&mut t, &pkt);
    assert!(!a.v4().dont_fragment);
    assert_ne!(a.v4().identification, b.v4().identification);
    // Larger than 1260 bytes once translated: DF set.
    let seg = udp(53, 1000, &payload(1300, 0), &in_ps(&t), false);
    let o = one(&mut t, &V6::new(r6, clat6()).build(17, &[], &seg));
    assert!(o.v4().dont_fragment);
}

#[test]
fn udp_checksum_updated_and_zero_checksum_refused() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let seg = udp(53, 1000, &payload(333, 3), &in_ps(&t), false);
    let o = one(&mut t, &V6::new(r6, clat6()).build(17, &[], &seg));
    assert_eq!(o.next(), 17);
    assert_eq!(o.l4()[8..], seg[8..]);
    let zero = udp(53, 1000, &payload(33, 3), &in_ps(&t), true);
    let (v, v4, _) = run(&mut t, &V6::new(r6, clat6()).build(17, &[], &zero));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
    assert!(v4.is_empty());
}

#[test]
fn icmpv6_echo_becomes_icmp_echo() {
    for (t6, t4) in [(128u8, 8u8), (129, 0)] {
        let mut t = Translator::new(cfg());
        let r6 = remote6(&t);
        let msg = icmp(t6, 0, [0xab, 0xcd, 0, 1], &payload(56, 8), &in_ps(&t));
        let o = one(&mut t, &V6::new(r6, clat6()).build(58, &[], &msg));
        assert_eq!(o.next(), 1);
        assert_eq!((o.l4()[0], o.l4()[1]), (t4, 0));
        assert_eq!(o.l4()[4..], msg[4..]);
    }
}

#[test]
fn icmpv6_informational_without_counterpart_is_dropped() {
    for typ in [130u8, 131, 133, 134, 135, 136, 137, 143, 200] {
        let mut t = Translator::new(cfg());
        let r6 = remote6(&t);
        let msg = icmp(typ, 0, [0; 4], &payload(24, 4), &in_ps(&t));
        let (v, v4, v6) = run(&mut t, &V6::new(r6, clat6()).build(58, &[], &msg));
        assert_eq!(v, Verdict::Dropped(DropReason::Unsupported), "type {typ}");
        assert!(v4.is_empty() && v6.is_empty());
    }
}

#[test]
fn not_ours_is_dropped_and_counted() {
    let c = cfg();
    let mut t = Translator::new(c);
    let r6 = remote6(&t);
    let other: Ipv6Addr = "2001:db8:1:2::99".parse().unwrap();
    let cases = [
        (r6, other),                                          // not to us
        ("2001:db8:65::c633:640a".parse().unwrap(), clat6()), // outside the prefix
        (c.prefix.embed(Ipv4Addr::new(127, 0, 0, 1)), clat6()),
        (c.prefix.embed(Ipv4Addr::new(224, 0, 0, 1)), clat6()),
        (c.prefix.embed(Ipv4Addr::BROADCAST), clat6()),
        (c.prefix.embed(Ipv4Addr::UNSPECIFIED), clat6()),
        (c.prefix.embed(CLAT4), clat6()), // spoofing our own IPv4 address
    ];
    for (s, d) in cases {
        let seg = udp(1, 2, b"x", &Pseudo::V6(s, d), false);
        let (v, v4, v6) = run(&mut t, &V6::new(s, d).build(17, &[], &seg));
        assert_eq!(v, Verdict::Dropped(DropReason::NotOurs), "{s} -> {d}");
        assert!(v4.is_empty() && v6.is_empty());
    }
    assert_eq!(t.counters().dropped_not_ours, cases.len() as u64);
}

/// An extension header of `len8` 8-octet units with the given next header.
fn ext(next: u8, len8: usize, fill: u8) -> Vec<u8> {
    let mut e = vec![fill; len8 * 8];
    e[0] = next;
    e[1] = (len8 - 1) as u8;
    e
}

#[test]
fn hop_by_hop_destination_options_and_spent_routing_headers_are_skipped() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let seg = tcp(443, 40000, 9, &payload(100, 1), &in_ps(&t));
    let mut exts = ext(43, 1, 1); // hop-by-hop (PadN-ish filler) -> routing
    exts[2] = 1; // PadN option type, length 4 ...
    exts[3] = 4;
    exts[4..8].fill(0);
    let mut rh = ext(60, 3, 0); // routing type 0 .. segments left 0
    rh[2] = 0;
    rh[3] = 0;
    exts.extend_from_slice(&rh);
    let mut dst = ext(6, 1, 0); // destination options -> TCP
    dst[2] = 1;
    dst[3] = 4;
    exts.extend_from_slice(&dst);
    let o = one(&mut t, &V6::new(r6, clat6()).build(0, &exts, &seg));
    assert_eq!(o.next(), 6);
    assert_eq!(o.l4().len(), seg.len(), "extension headers are not carried");
}

#[test]
fn routing_header_with_segments_left_draws_parameter_problem() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let seg = tcp(443, 40000, 9, &payload(10, 1), &in_ps(&t));
    let mut rh = ext(6, 3, 0);
    rh[2] = 0;
    rh[3] = 1;
    let pkt = V6::new(r6, clat6()).build(43, &rh, &seg);
    let (v, v4, v6) = run(&mut t, &pkt);
    assert_eq!(v, Verdict::Dropped(DropReason::RoutingHeader));
    assert!(v4.is_empty());
    assert_eq!(v6.len(), 1);
    let e = verify(&v6[0]);
    assert_eq!(Ipv6Addr::from(e.v6().source), clat6());
    assert_eq!(Ipv6Addr::from(e.v6().destination), r6);
    let m = e.l4();
    assert_eq!((m[0], m[1]), (4, 0));
    assert_eq!(
        u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
        43,
        "points at Segments Left"
    );
    assert_eq!(m[8..], pkt[..]);
}

#[test]
fn untranslatable_extension_headers_are_dropped() {
    for next in [50u8, 51, 59, 135, 139, 140, 253, 254] {
        let mut t = Translator::new(cfg());
        let r6 = remote6(&t);
        let body = ext(6, 2, 0);
        let (v, v4, v6) = run(&mut t, &V6::new(r6, clat6()).build(next, &[], &body));
        assert_eq!(
            v,
            Verdict::Dropped(DropReason::Unsupported),
            "next header {next}"
        );
        assert!(v4.is_empty() && v6.is_empty());
    }
}

fn frag_hdr(next: u8, offset: usize, more: bool, id: u32) -> Vec<u8> {
    let mut f = vec![next, 0];
    f.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f
}

#[test]
fn fragment_header_becomes_ipv4_fragment_fields() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let whole = udp(53, 1000, &payload(1000, 7), &in_ps(&t), false);
    let h = V6::new(r6, clat6());
    let first = one(
        &mut t,
        &h.build(44, &frag_hdr(17, 0, true, 0xdead_beef), &whole[..512]),
    );
    let v4 = first.v4();
    assert_eq!(
        v4.identification, 0xbeef,
        "low 16 bits of the identification"
    );
    assert!(v4.more_fragments && !v4.dont_fragment);
    assert_eq!(v4.fragment_offset.value(), 0);
    assert_eq!(first.next(), 17);
    let second = one(
        &mut t,
        &h.build(44, &frag_hdr(17, 512, false, 0xdead_beef), &whole[512..]),
    );
    let v4 = second.v4();
    assert!(!v4.more_fragments && !v4.dont_fragment);
    assert_eq!(usize::from(v4.fragment_offset.value()) * 8, 512);
    assert_eq!(second.l4(), &whole[512..]);
    let mut all = first.l4().to_vec();
    all.extend_from_slice(second.l4());
    assert!(
        sums_ok(pseudo4(REMOTE4, CLAT4, 17, all.len()), &all),
        "reassembled UDP checksum"
    );
    // ICMPv6 fragments cannot be translated statelessly.
    let msg = icmp(128, 0, [0; 4], &payload(100, 0), &in_ps(&t));
    let (v, ..) = run(&mut t, &h.build(44, &frag_hdr(58, 0, true, 1), &msg[..64]));
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
}

#[test]
fn hop_limit_zero_draws_time_exceeded() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let seg = udp(53, 1000, b"abc", &in_ps(&t), false);
    let mut h = V6::new(r6, clat6());
    h.hop = 0;
    let (v, v4, v6) = run(&mut t, &h.build(17, &[], &seg));
    assert_eq!(v, Verdict::Dropped(DropReason::TtlExceeded));
    assert!(v4.is_empty());
    let e = verify(&v6[0]);
    assert_eq!((e.l4()[0], e.l4()[1]), (3, 0));
    assert_eq!(t.counters().icmp_errors_sent, 1);
}

/// A packet we sent (as IPv6), for a far-side ICMPv6 error to quote.
fn outbound_tcp(t: &Translator, n: usize) -> Vec<u8> {
    let dst = remote6(t);
    let seg = tcp(40000, 443, 77, &payload(n, 5), &Pseudo::V6(clat6(), dst));
    V6::new(clat6(), dst).build(6, &[], &seg)
}

fn net_error(
    t: &mut Translator,
    from: Ipv6Addr,
    typ: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> (Verdict, Vec<Vec<u8>>) {
    let msg = icmp(typ, code, rest, quoted, &Pseudo::V6(from, clat6()));
    let (v, v4, v6) = run(t, &V6::new(from, clat6()).build(58, &[], &msg));
    assert!(v6.is_empty());
    (v, v4)
}

#[test]
fn packet_too_big_becomes_fragmentation_needed() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let quoted = outbound_tcp(&t, 100);
    let from = r6;
    let (v, v4) = net_error(&mut t, from, 2, 0, 1400u32.to_be_bytes(), &quoted);
    assert_eq!(v, Verdict::Translated);
    let o = verify(&v4[0]);
    assert_eq!(Ipv4Addr::from(o.v4().source), REMOTE4);
    assert_eq!(Ipv4Addr::from(o.v4().destination), CLAT4);
    let m = o.l4();
    assert_eq!((m[0], m[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), 1380);
    // The packet inside, as the host sent it.
    let inner = verify(&m[8..]); // header checksum and TCP checksum of the inner packet
    assert_eq!(Ipv4Addr::from(inner.v4().source), CLAT4);
    assert_eq!(Ipv4Addr::from(inner.v4().destination), REMOTE4);
    assert_eq!(inner.l4()[20..], quoted[60..]);
}

#[test]
fn packet_too_big_mtu_floor() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let quoted = outbound_tcp(&t, 100);
    let from = r6;
    let (_, v4) = net_error(&mut t, from, 2, 0, 1280u32.to_be_bytes(), &quoted);
    let m = verify(&v4[0]).l4().to_vec();
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), 1260);
}

#[test]
fn error_from_a_router_outside_the_prefix_uses_the_dummy_address() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let router: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    let quoted = outbound_tcp(&t, 100);
    let (v, v4) = net_error(&mut t, router, 2, 0, 1400u32.to_be_bytes(), &quoted);
    assert_eq!(v, Verdict::Translated);
    let o = verify(&v4[0]);
    assert_eq!(Ipv4Addr::from(o.v4().source), IPV4_DUMMY);
    // But not about a packet that was not ours.
    let dst = r6;
    let other: Ipv6Addr = "2001:db8:1:2::77".parse().unwrap();
    let seg = tcp(1, 2, 3, b"zz", &Pseudo::V6(other, dst));
    let foreign = V6::new(other, dst).build(6, &[], &seg);
    let (v, v4) = net_error(&mut t, router, 2, 0, 1400u32.to_be_bytes(), &foreign);
    assert_eq!(v, Verdict::Dropped(DropReason::NotOurs));
    assert!(v4.is_empty());
    // Nor anything but an error.
    let msg = icmp(128, 0, [0; 4], b"ping", &Pseudo::V6(router, clat6()));
    let (v, ..) = run(&mut t, &V6::new(router, clat6()).build(58, &[], &msg));
    assert_eq!(v, Verdict::Dropped(DropReason::NotOurs));
}

#[test]
fn icmpv6_error_type_and_code_mappings() {
    let cases: [(u8, u8, [u8; 4], Option<(u8, u8, [u8; 4])>); 12] = [
        (1, 0, [0; 4], Some((3, 1, [0; 4]))),
        (1, 1, [0; 4], Some((3, 10, [0; 4]))),
        (1, 2, [0; 4], Some((3, 1, [0; 4]))),
        (1, 3, [0; 4], Some((3, 1, [0; 4]))),
        (1, 4, [0; 4], Some((3, 3, [0; 4]))),
        (1, 6, [0; 4], None),
        (3, 0, [0; 4], Some((11, 0, [0; 4]))),
        (3, 1, [0; 4], Some((11, 1, [0; 4]))),
        (4, 0, 6u32.to_be_bytes(), Some((12, 0, [9, 0, 0, 0]))),
        (4, 0, 24u32.to_be_bytes(), Some((12, 0, [16, 0, 0, 0]))),
        (4, 0, 2u32.to_be_bytes(), None),
        (4, 1, 40u32.to_be_bytes(), Some((3, 2, [0; 4]))),
    ];
    for (typ, code, rest, want) in cases {
        let mut t = Translator::new(cfg());
        let r6 = remote6(&t);
        let quoted = outbound_tcp(&t, 20);
        let from = r6;
        let (v, v4) = net_error(&mut t, from, typ, code, rest, &quoted);
        match want {
            Some((t4, c4, r4)) => {
                assert_eq!(v, Verdict::Translated, "{typ}/{code}");
                let o = verify(&v4[0]);
                let m = o.l4();
                assert_eq!(
                    (m[0], m[1], [m[4], m[5], m[6], m[7]]),
                    (t4, c4, r4),
                    "{typ}/{code}"
                );
            }
            None => {
                assert_eq!(v, Verdict::Dropped(DropReason::Unsupported), "{typ}/{code}");
                assert!(v4.is_empty());
            }
        }
    }
}

#[test]
fn icmpv6_error_about_echo_and_truncated_inner() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let dst = r6;
    let echo = icmp(
        128,
        0,
        [0, 7, 0, 1],
        &payload(64, 0),
        &Pseudo::V6(clat6(), dst),
    );
    let quoted = V6::new(clat6(), dst).build(58, &[], &echo);
    let (v, v4) = net_error(&mut t, dst, 3, 0, [0; 4], &quoted);
    assert_eq!(v, Verdict::Translated);
    let inner = verify(&verify(&v4[0]).l4()[8..]); // inner ICMP checksum checked
    assert_eq!(inner.l4()[0], 8);
    // Truncated inner: header fields still translated, lengths as claimed.
    let quoted = outbound_tcp(&t, 1000);
    let (v, v4) = net_error(&mut t, dst, 1, 4, [0; 4], &quoted[..100]);
    assert_eq!(v, Verdict::Translated);
    let o = verify(&v4[0]);
    let (ih, _) = etherparse::Ipv4Header::from_slice(&o.l4()[8..]).unwrap();
    assert_eq!(usize::from(ih.total_len), 20 + 20 + 1000);
    assert_eq!(ih.header_checksum, ih.calc_header_checksum());
}

#[test]
fn icmpv6_error_with_bad_checksum_or_about_an_error_is_dropped() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let from = r6;
    let quoted = outbound_tcp(&t, 20);
    let mut msg = icmp(1, 4, [0; 4], &quoted, &Pseudo::V6(from, clat6()));
    msg[3] ^= 0x10;
    let (v, ..) = run(&mut t, &V6::new(from, clat6()).build(58, &[], &msg));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
    let inner_err = icmp(1, 4, [0; 4], &quoted, &Pseudo::V6(clat6(), from));
    let quoted = V6::new(clat6(), from).build(58, &[], &inner_err);
    let (v, v4) = net_error(&mut t, from, 1, 4, [0; 4], &quoted);
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
    assert!(v4.is_empty());
}

#[test]
fn malformed_ipv6_is_dropped() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let seg = udp(53, 1000, b"abc", &in_ps(&t), false);
    let good = V6::new(r6, clat6()).build(17, &[], &seg);
    let mut long = good.clone();
    long[5] += 1;
    let cases: [&[u8]; 4] = [&[], &good[..39], &long, &[0x45; 60]];
    for (i, p) in cases.iter().enumerate() {
        let (v, v4, v6) = run(&mut t, p);
        assert_eq!(v, Verdict::Dropped(DropReason::Malformed), "case {i}");
        assert!(v4.is_empty() && v6.is_empty());
    }
    // Payload length 0 (a jumbogram or nothing at all).
    let mut jumbo = good.clone();
    jumbo[4..6].fill(0);
    assert_eq!(
        run(&mut t, &jumbo).0,
        Verdict::Dropped(DropReason::Unsupported)
    );
    // Truncated TCP header.
    let (v, ..) = run(&mut t, &V6::new(r6, clat6()).build(6, &[], &[0; 12]));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
    // Truncated extension header.
    let (v, ..) = run(&mut t, &V6::new(r6, clat6()).build(0, &[], &[6, 3, 0, 0]));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
}

#[test]
fn other_protocols_are_carried_unchanged_and_counted() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let gre = payload(64, 1);
    let pkt = V6::new(r6, clat6()).build(47, &[], &gre);
    let o = one(&mut t, &pkt);
    assert_eq!(o.next(), 47);
    assert_eq!(o.l4(), &gre[..]);
    let c = t.counters();
    assert_eq!(
        (c.v6_to_v4_packets, c.v6_to_v4_bytes),
        (1, pkt.len() as u64)
    );
    // ICMPv4 inside IPv6 makes no sense.
    let (v, ..) = run(&mut t, &V6::new(r6, clat6()).build(1, &[], &gre));
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
}

/// Issue 9 §5: an ICMPv6 echo reply with identifier 0, sequence 0 and no data became an ICMPv4
/// echo reply with checksum 0x0000; the message is all zero, so its checksum must be 0xffff.
#[test]
fn all_zero_echo_reply_gets_checksum_ffff() {
    for p in [
        "2001:db8:64::/96",
        "2001:db8::/32",
        "2001:db8:100::/40",
        "2001:db8:122:344::/64",
    ] {
        let mut t = Translator::new(cfg_with(p, 1500));
        let r6 = remote6(&t);
        let msg = icmp(129, 0, [0; 4], &[], &in_ps(&t));
        let o = one(&mut t, &V6::new(r6, clat6()).build(58, &[], &msg));
        assert_eq!(o.l4(), &[0, 0, 0xff, 0xff, 0, 0, 0, 0], "{p}");
        // And with zero data: still all zero.
        let msg = icmp(129, 0, [0; 4], &[0; 12], &in_ps(&t));
        let o = one(&mut t, &V6::new(r6, clat6()).build(58, &[], &msg));
        assert_eq!(&o.l4()[2..4], &[0xff, 0xff], "{p}");
        assert!(sums_ok(0, o.l4()));
    }
}

/// The same inside an ICMPv6 error quoting an all-zero echo reply we sent.
#[test]
fn all_zero_echo_reply_inside_an_error_gets_checksum_ffff() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let echo = icmp(129, 0, [0; 4], &[], &Pseudo::V6(clat6(), r6));
    let inner = V6::new(clat6(), r6).build(58, &[], &echo);
    let err = icmp(1, 4, [0; 4], &inner, &in_ps(&t));
    let o = one(&mut t, &V6::new(r6, clat6()).build(58, &[], &err));
    let quoted = &o.l4()[8 + 20..];
    assert_eq!(quoted, &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
}

/// An IPv6 fragment whose datagram would be longer than any IPv4 datagram is not translated.
#[test]
fn fragment_too_long_for_ipv4_is_dropped() {
    let mut t = Translator::new(cfg());
    let r6 = remote6(&t);
    let h = V6::new(r6, clat6());
    let data = payload(16, 3);
    // Ends at 65512 + 16 = 65528: past 65515, valid IPv6 but not representable in IPv4.
    let (v, v4, _) = run(&mut t, &h.build(44, &frag_hdr(17, 65512, false, 9), &data));
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
    assert!(v4.is_empty());
    // Ends past 65535: invalid IPv6 (RFC 8200 §4.5).
    let data = payload(40, 3);
    let (v, v4, _) = run(&mut t, &h.build(44, &frag_hdr(17, 65512, false, 9), &data));
    assert_eq!(v, Verdict::Dropped(DropReason::Malformed));
    assert!(v4.is_empty());
    // Ends at exactly 65515: translated.
    let data = payload(3, 3);
    let o = one(&mut t, &h.build(44, &frag_hdr(17, 65512, false, 9), &data));
    assert_eq!(usize::from(o.v4().fragment_offset.value()) * 8, 65512);
}
