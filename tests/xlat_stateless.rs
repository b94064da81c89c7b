//! Stateless mode with a dedicated CLAT prefix (RFC 6877 §6.3): downstream IPv4 hosts mapped
//! into a /64 with the RFC 6052 rule, both directions, checksums checked by etherparse and the
//! independent reference of `xlat_common`.

#![allow(clippy::unwrap_used)]

mod xlat_common;

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::discovery::Nat64Prefix;
use autoclat::xlat::{DropReason, PacketBatch, Translator, Verdict, XlatConfig, IPV4_DUMMY};
use xlat_common::*;

/// A downstream host on the LAN behind the CLAT.
const LAN4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);
/// A far-side IPv4 host, reached through the NAT64.
const FAR4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn clat_prefix() -> Nat64Prefix {
    prefix("2001:db8:1:ff00::/64")
}

fn scfg() -> XlatConfig {
    XlatConfig {
        clat_prefix: Some(clat_prefix()),
        ..cfg()
    }
}

fn lan6() -> Ipv6Addr {
    clat_prefix().embed(LAN4)
}

fn far6() -> Ipv6Addr {
    cfg().prefix.embed(FAR4)
}

fn run4(t: &mut Translator, pkt: &[u8]) -> (Verdict, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut v6, mut v4) = (PacketBatch::default(), PacketBatch::default());
    let v = t.ipv4_to_ipv6(pkt, &mut v6, &mut v4);
    (v, collect(&v6), collect(&v4))
}

fn run6(t: &mut Translator, pkt: &[u8]) -> (Verdict, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut v4, mut v6) = (PacketBatch::default(), PacketBatch::default());
    let v = t.ipv6_to_ipv4(pkt, &mut v4, &mut v6);
    (v, collect(&v4), collect(&v6))
}

fn one4(t: &mut Translator, pkt: &[u8]) -> Out {
    let (v, v6, v4) = run4(t, pkt);
    assert_eq!(v, Verdict::Translated);
    assert!(v4.is_empty());
    assert_eq!(v6.len(), 1);
    verify(&v6[0])
}

fn one6(t: &mut Translator, pkt: &[u8]) -> Out {
    let (v, v4, v6) = run6(t, pkt);
    assert_eq!(v, Verdict::Translated);
    assert!(v6.is_empty());
    assert_eq!(v4.len(), 1);
    verify(&v4[0])
}

fn addrs6(o: &Out) -> (Ipv6Addr, Ipv6Addr) {
    let h = o.v6();
    (Ipv6Addr::from(h.source), Ipv6Addr::from(h.destination))
}

fn addrs4(o: &Out) -> (Ipv4Addr, Ipv4Addr) {
    let h = o.v4();
    (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination))
}

fn v4at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[test]
fn the_mapping_is_rfc6052_with_a_64() {
    assert_eq!(
        lan6(),
        "2001:db8:1:ff00:c6:3364:1700:0"
            .parse::<Ipv6Addr>()
            .unwrap()
    );
}

#[test]
fn tcp_udp_icmp_from_a_downstream_host_both_ways() {
    let mut t = Translator::new(scfg());
    let out_ps = Pseudo::V4(LAN4, FAR4);
    let in_ps = Pseudo::V6(far6(), lan6());
    let out = [
        (6, tcp(40000, 443, 7, &payload(300, 1), &out_ps)),
        (17, udp(40001, 53, &payload(40, 2), &out_ps, false)),
        (1, icmp(8, 0, [0, 9, 0, 1], &payload(56, 3), &Pseudo::None)),
    ];
    for (proto, l4) in out {
        let o = one4(&mut t, &V4::new(LAN4, FAR4, proto).build(&l4));
        assert_eq!(addrs6(&o), (lan6(), far6()), "proto {proto}");
    }
    // A zero-checksum UDP datagram gets a computed checksum over the mapped addresses.
    let l4 = udp(40002, 123, &payload(48, 4), &out_ps, true);
    let o = one4(&mut t, &V4::new(LAN4, FAR4, 17).build(&l4));
    assert_eq!(addrs6(&o), (lan6(), far6()));

    let back = [
        (6, tcp(443, 40000, 9, &payload(500, 5), &in_ps)),
        (17, udp(53, 40001, &payload(70, 6), &in_ps, false)),
        (58, icmp(129, 0, [0, 9, 0, 1], &payload(56, 7), &in_ps)),
    ];
    for (next, l4) in back {
        let o = one6(&mut t, &V6::new(far6(), lan6()).build(next, &[], &l4));
        assert_eq!(addrs4(&o), (FAR4, LAN4), "next {next}");
    }
}

#[test]
fn the_clats_own_address_is_unchanged() {
    let mut t = Translator::new(scfg());
    let l4 = tcp(1, 2, 3, &payload(10, 0), &Pseudo::V4(CLAT4, FAR4));
    let o = one4(&mut t, &V4::new(CLAT4, FAR4, 6).build(&l4));
    assert_eq!(addrs6(&o), (clat6(), far6()));
    let l4 = udp(2, 1, &payload(10, 0), &Pseudo::V6(far6(), clat6()), false);
    let o = one6(&mut t, &V6::new(far6(), clat6()).build(17, &[], &l4));
    assert_eq!(addrs4(&o), (FAR4, CLAT4));
}

#[test]
fn without_a_clat_prefix_downstream_sources_are_not_ours() {
    let mut t = Translator::new(cfg());
    let l4 = udp(1, 2, &payload(8, 0), &Pseudo::V4(LAN4, FAR4), false);
    let (v, ..) = run4(&mut t, &V4::new(LAN4, FAR4, 17).build(&l4));
    assert_eq!(v, Verdict::Dropped(DropReason::NotOurs));
    let l4 = udp(2, 1, &payload(8, 0), &Pseudo::V6(far6(), lan6()), false);
    let (v, ..) = run6(&mut t, &V6::new(far6(), lan6()).build(17, &[], &l4));
    assert_eq!(v, Verdict::Dropped(DropReason::NotOurs));
}

#[test]
fn non_unicast_sources_are_refused() {
    let mut t = Translator::new(scfg());
    for src in [
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::new(239, 1, 2, 3),
        Ipv4Addr::new(240, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        let l4 = udp(1, 2, &payload(8, 0), &Pseudo::V4(src, FAR4), false);
        let (v, v6, v4) = run4(&mut t, &V4::new(src, FAR4, 17).build(&l4));
        assert_eq!(v, Verdict::Dropped(DropReason::NotOurs), "{src}");
        assert!(v6.is_empty() && v4.is_empty(), "{src}");
    }
}

#[test]
fn destinations_inside_the_clat_prefix_are_checked() {
    let mut t = Translator::new(scfg());
    let mut o = lan6().octets();
    o[8] = 1; // u-octet
    let bad_u = Ipv6Addr::from(o);
    let mut o = lan6().octets();
    o[15] = 1; // suffix
    let bad_suffix = Ipv6Addr::from(o);
    for (dst, want) in [
        (bad_u, DropReason::Malformed),
        (bad_suffix, DropReason::Malformed),
        (
            clat_prefix().embed(Ipv4Addr::new(127, 0, 0, 1)),
            DropReason::NotOurs,
        ),
        (
            clat_prefix().embed(Ipv4Addr::new(224, 0, 0, 1)),
            DropReason::NotOurs,
        ),
        (clat_prefix().embed(CLAT4), DropReason::NotOurs),
        (
            "2001:db8:1:fe00:c6:3364:1700:0".parse().unwrap(),
            DropReason::NotOurs,
        ),
    ] {
        let l4 = udp(2, 1, &payload(8, 0), &Pseudo::V6(far6(), dst), false);
        let (v, v4, v6) = run6(&mut t, &V6::new(far6(), dst).build(17, &[], &l4));
        assert_eq!(v, Verdict::Dropped(want), "{dst}");
        assert!(v4.is_empty() && v6.is_empty(), "{dst}");
    }
}

#[test]
fn icmpv6_error_about_a_downstream_hosts_packet() {
    let mut t = Translator::new(scfg());
    // The downstream host's TCP segment, as it left the CLAT, and a Packet Too Big about it.
    let seg = tcp(
        40000,
        443,
        1,
        &payload(1300, 8),
        &Pseudo::V6(lan6(), far6()),
    );
    let inner = V6::new(lan6(), far6()).build(6, &[], &seg);
    let ps = Pseudo::V6(far6(), lan6());
    let msg = icmp(2, 0, 1400u32.to_be_bytes(), &inner[..1232 - 8], &ps);
    let o = one6(&mut t, &V6::new(far6(), lan6()).build(58, &[], &msg));
    assert_eq!(addrs4(&o), (FAR4, LAN4));
    let m = o.l4();
    assert_eq!((m[0], m[1]), (3, 4), "Fragmentation Needed");
    let ih = &m[8..28];
    assert!(sums_ok(0, ih), "inner IPv4 header checksum");
    assert_eq!(
        (v4at(ih, 12), v4at(ih, 16)),
        (LAN4, FAR4),
        "inner addresses"
    );
    // The inner TCP checksum was rewritten for the IPv4 pseudo-header: check it over the
    // complete segment (the error carries only part of it).
    let tcp_in = &m[28..];
    let mut whole = seg.clone();
    whole[16..18].copy_from_slice(&tcp_in[16..18]);
    assert!(sums_ok(pseudo4(LAN4, FAR4, 6, whole.len()), &whole));

    // The same error from a router outside the prefix comes from 192.0.0.8.
    let router: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
    let msg = icmp(
        2,
        0,
        1400u32.to_be_bytes(),
        &inner[..1232 - 8],
        &Pseudo::V6(router, lan6()),
    );
    let o = one6(&mut t, &V6::new(router, lan6()).build(58, &[], &msg));
    assert_eq!(addrs4(&o), (IPV4_DUMMY, LAN4));

    // An error to the downstream host about a packet another address sent is not ours.
    let other = V6::new(clat6(), far6()).build(6, &[], &seg);
    let msg = icmp(1, 4, [0; 4], &other[..200], &Pseudo::V6(router, lan6()));
    let (v, ..) = run6(&mut t, &V6::new(router, lan6()).build(58, &[], &msg));
    assert_eq!(v, Verdict::Dropped(DropReason::NotOurs));
}

#[test]
fn icmpv4_error_from_a_downstream_host() {
    let mut t = Translator::new(scfg());
    // The far side's UDP datagram as the downstream host received it; port unreachable.
    let dgram = udp(53, 40000, &payload(30, 9), &Pseudo::V4(FAR4, LAN4), false);
    let inner = V4::new(FAR4, LAN4, 17).build(&dgram);
    let msg = icmp(3, 3, [0; 4], &inner, &Pseudo::None);
    let o = one4(&mut t, &V4::new(LAN4, FAR4, 1).build(&msg));
    assert_eq!(addrs6(&o), (lan6(), far6()));
    let m = o.l4();
    assert_eq!((m[0], m[1]), (1, 4), "port unreachable");
    let ih = verify(&m[8..]);
    assert_eq!(addrs6(&ih), (far6(), lan6()));
}

#[test]
fn fragments_and_generated_errors() {
    let mut t = Translator::new(XlatConfig {
        mtu6: 1280,
        ..scfg()
    });
    // DF clear and too big for the uplink: IPv6 fragments from the mapped address.
    let l4 = udp(1, 2, &payload(2000, 1), &Pseudo::V4(LAN4, FAR4), false);
    let mut h = V4::new(LAN4, FAR4, 17);
    h.df = false;
    let (v, v6, _) = run4(&mut t, &h.build(&l4));
    assert_eq!(v, Verdict::Translated);
    assert_eq!(v6.len(), 2);
    for p in &v6 {
        let o = verify(p);
        assert!(o.frag().is_some());
        assert_eq!(addrs6(&o), (lan6(), far6()));
    }
    // DF set and too big: Fragmentation Needed back to the downstream host.
    h.df = true;
    let (v, v6, v4) = run4(&mut t, &h.build(&l4));
    assert_eq!(v, Verdict::Dropped(DropReason::TooBig));
    assert!(v6.is_empty());
    assert_eq!(addrs4(&verify(&v4[0])), (IPV4_DUMMY, LAN4));

    // An IPv6 fragment to the mapped address becomes an IPv4 fragment to the host.
    let mut frag = vec![17, 0, 0, 1, 0, 0, 0, 42];
    frag[2..4].copy_from_slice(&(8u16 | 1).to_be_bytes()); // offset 8, more
    let (v, v4, _) = run6(
        &mut t,
        &V6::new(far6(), lan6()).build(44, &frag, &payload(64, 3)),
    );
    assert_eq!(v, Verdict::Translated);
    let o = verify(&v4[0]);
    assert_eq!(addrs4(&o), (FAR4, LAN4));
    assert_eq!(o.v4().fragment_offset.value(), 1);

    // Hop limit 0 to the mapped address: Time Exceeded from that address.
    let l4 = udp(2, 1, &payload(8, 0), &Pseudo::V6(far6(), lan6()), false);
    let mut h6 = V6::new(far6(), lan6());
    h6.hop = 0;
    let (v, v4, v6) = run6(&mut t, &h6.build(17, &[], &l4));
    assert_eq!(v, Verdict::Dropped(DropReason::TtlExceeded));
    assert!(v4.is_empty());
    assert_eq!(addrs6(&verify(&v6[0])), (lan6(), far6()));
}
