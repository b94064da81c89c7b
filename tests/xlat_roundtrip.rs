//! Round trips through a translator and its mirror (the far side's translator, whose prefix
//! holds our IPv6 address): v4 → v6 → v4 and v6 → v4 → v6.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod xlat_common;

use std::net::Ipv4Addr;

use autoclat::xlat::{PacketBatch, Translator, Verdict, XlatConfig};
use xlat_common::*;

const LENGTHS: [&str; 6] = [
    "2001:db8::/32",
    "2001:db8:100::/40",
    "2001:db8:122::/48",
    "2001:db8:122:300::/56",
    "2001:db8:122:344::/64",
    "2001:db8:64::/96",
];

fn v4_to_v6(t: &mut Translator, pkt: &[u8]) -> Vec<Vec<u8>> {
    let (mut a, mut b) = (PacketBatch::default(), PacketBatch::default());
    assert_eq!(t.ipv4_to_ipv6(pkt, &mut a, &mut b), Verdict::Translated);
    assert!(b.is_empty());
    collect(&a)
}

fn v6_to_v4(t: &mut Translator, pkt: &[u8]) -> Vec<Vec<u8>> {
    let (mut a, mut b) = (PacketBatch::default(), PacketBatch::default());
    assert_eq!(t.ipv6_to_ipv4(pkt, &mut a, &mut b), Verdict::Translated);
    assert!(b.is_empty());
    collect(&a)
}

fn pair(p: &str, mtu: u32) -> (Translator, Translator, XlatConfig) {
    let c = cfg_with(p, mtu);
    (Translator::new(c), Translator::new(mirror(&c, REMOTE4)), c)
}

fn samples_v4() -> Vec<(&'static str, Vec<u8>)> {
    let ps = Pseudo::V4(CLAT4, REMOTE4);
    let mut v = vec![
        (
            "tcp",
            V4::new(CLAT4, REMOTE4, 6).build(&tcp(40000, 443, 1, &payload(1200, 1), &ps)),
        ),
        (
            "udp",
            V4::new(CLAT4, REMOTE4, 17).build(&udp(5000, 53, &payload(77, 2), &ps, false)),
        ),
        (
            "echo",
            V4::new(CLAT4, REMOTE4, 1).build(&icmp(
                8,
                0,
                [1, 2, 3, 4],
                &payload(56, 3),
                &Pseudo::None,
            )),
        ),
        ("gre", V4::new(CLAT4, REMOTE4, 47).build(&payload(40, 4))),
    ];
    let inbound = V4::new(REMOTE4, CLAT4, 17).build(&udp(
        53,
        5000,
        &payload(30, 5),
        &Pseudo::V4(REMOTE4, CLAT4),
        false,
    ));
    v.push((
        "port unreachable",
        V4::new(CLAT4, REMOTE4, 1).build(&icmp(3, 3, [0; 4], &inbound, &Pseudo::None)),
    ));
    v
}

#[test]
fn v4_v6_v4_keeps_everything_but_identification_and_df() {
    for p in LENGTHS {
        let (mut a, mut b, _) = pair(p, 1500);
        for (name, pkt) in samples_v4() {
            let v6 = v4_to_v6(&mut a, &pkt);
            assert_eq!(v6.len(), 1);
            verify(&v6[0]);
            let back = v6_to_v4(&mut b, &v6[0]);
            assert_eq!(back.len(), 1);
            let o = verify(&back[0]);
            assert_eq!(back[0].len(), pkt.len(), "{p} {name}");
            // Version, TOS, total length; TTL, protocol; addresses.
            assert_eq!(back[0][..4], pkt[..4], "{p} {name}");
            assert_eq!(back[0][8..10], pkt[8..10], "{p} {name}");
            assert_eq!(back[0][12..20], pkt[12..20], "{p} {name}");
            if name == "port unreachable" {
                // The quoted packet went through both directions too; its IPv4 ID/DF differ.
                assert_eq!(o.l4()[..8], pkt[20..28], "{p} {name}");
                assert_eq!(o.l4()[8..8 + 4], pkt[28..32]);
                assert_eq!(o.l4()[8 + 8..8 + 10], pkt[28 + 8..28 + 10]);
                assert_eq!(o.l4()[8 + 12..], pkt[28 + 12..], "{p} {name}");
            } else {
                assert_eq!(o.l4(), &pkt[20..], "{p} {name}");
            }
        }
    }
}

#[test]
fn zero_checksum_udp_comes_back_with_a_valid_checksum() {
    let (mut a, mut b, _) = pair("2001:db8:100::/40", 1500);
    let seg = udp(1, 2, &payload(99, 0), &Pseudo::None, true);
    let pkt = V4::new(CLAT4, REMOTE4, 17).build(&seg);
    let back = v6_to_v4(&mut b, &v4_to_v6(&mut a, &pkt)[0]);
    let o = verify(&back[0]);
    assert_ne!(o.l4()[6..8], [0, 0]);
    assert_eq!(o.l4()[8..], seg[8..]);
}

#[test]
fn v6_v4_v6_is_byte_identical() {
    for p in LENGTHS {
        let (mut a, mut b, c) = pair(p, 1500);
        let r6 = c.prefix.embed(REMOTE4);
        let ps = Pseudo::V6(r6, clat6());
        let mut h = V6::new(r6, clat6());
        h.tc = 0xb8;
        h.hop = 50;
        let outbound = V6::new(clat6(), r6).build(
            6,
            &[],
            &tcp(40000, 443, 1, &payload(50, 0), &Pseudo::V6(clat6(), r6)),
        );
        let samples = [
            h.build(6, &[], &tcp(443, 40000, 5, &payload(1300, 1), &ps)),
            h.build(17, &[], &udp(53, 5000, &payload(100, 2), &ps, false)),
            h.build(58, &[], &icmp(129, 0, [9, 9, 0, 1], &payload(56, 3), &ps)),
            h.build(58, &[], &icmp(2, 0, 1400u32.to_be_bytes(), &outbound, &ps)),
            h.build(58, &[], &icmp(1, 4, [0; 4], &outbound, &ps)),
            h.build(58, &[], &icmp(3, 0, [0; 4], &outbound, &ps)),
        ];
        for (i, pkt) in samples.iter().enumerate() {
            let v4 = v6_to_v4(&mut a, pkt);
            verify(&v4[0]);
            let back = v4_to_v6(&mut b, &v4[0]);
            assert_eq!(back.len(), 1);
            verify(&back[0]);
            assert_eq!(back[0], *pkt, "{p} sample {i}");
        }
    }
}

#[test]
fn fragmented_round_trip_reassembles_to_the_original() {
    for mtu in [1280u32, 1500, 4000] {
        let (mut a, mut b, _) = pair("2001:db8:122:344::/64", mtu);
        let seg = udp(
            1000,
            2000,
            &payload(8000, 9),
            &Pseudo::V4(CLAT4, REMOTE4),
            false,
        );
        let mut h = V4::new(CLAT4, REMOTE4, 17);
        h.df = false;
        h.id = 0x7777;
        let pkt = h.build(&seg);
        let frags6 = v4_to_v6(&mut a, &pkt);
        assert!(frags6.len() > 1);
        let mut data = vec![0u8; seg.len()];
        let mut seen = 0;
        for f in &frags6 {
            assert!(f.len() <= mtu as usize);
            let back = v6_to_v4(&mut b, f);
            let o = verify(&back[0]);
            let h4 = o.v4();
            assert_eq!(h4.identification, 0x7777);
            assert!(!h4.dont_fragment);
            assert_eq!(Ipv4Addr::from(h4.source), CLAT4);
            let off = usize::from(h4.fragment_offset.value()) * 8;
            data[off..off + o.l4().len()].copy_from_slice(o.l4());
            seen += o.l4().len();
        }
        assert_eq!(seen, seg.len());
        assert_eq!(data, seg, "mtu {mtu}");
    }
}

#[test]
fn packet_too_big_round_trip_keeps_the_mtu() {
    let (mut a, mut b, c) = pair("2001:db8:64::/96", 1500);
    let r6 = c.prefix.embed(REMOTE4);
    let outbound = V6::new(clat6(), r6).build(
        17,
        &[],
        &udp(1, 2, &payload(1400, 0), &Pseudo::V6(clat6(), r6), false),
    );
    let ptb = V6::new(r6, clat6()).build(
        58,
        &[],
        &icmp(
            2,
            0,
            1400u32.to_be_bytes(),
            &outbound[..1232],
            &Pseudo::V6(r6, clat6()),
        ),
    );
    let v4 = v6_to_v4(&mut a, &ptb);
    let m = verify(&v4[0]).l4().to_vec();
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), 1380);
    let back = v4_to_v6(&mut b, &v4[0]);
    let m = verify(&back[0]).l4().to_vec();
    assert_eq!(u32::from_be_bytes([m[4], m[5], m[6], m[7]]), 1400);
}
