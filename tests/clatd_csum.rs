//! Completing partial (CHECKSUM_PARTIAL) TCP/UDP checksums of received IPv6 packets.
#![allow(clippy::unwrap_used)]

use autoclat::translator::csum::{complete_ipv6_checksum, ones_complement_sum};
use etherparse::PacketBuilder;

const SRC: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 198, 51, 100, 10,
];
const DST: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xc1, 0xa7,
];

fn udp_packet(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(SRC, DST, 64).udp(7777, 40000);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn tcp_packet(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(SRC, DST, 64)
        .tcp(80, 40000, 12345, 65535)
        .ack(777)
        .psh();
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// What the kernel leaves in the field for CHECKSUM_PARTIAL: the folded pseudo-header sum.
fn partial(pkt: &mut [u8], l4_off: usize, field: usize, nh: u8) {
    let len = pkt.len() - l4_off;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&pkt[8..40]);
    pseudo.extend_from_slice(&(len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, nh]);
    let s = ones_complement_sum(&pseudo);
    pkt[l4_off + field..l4_off + field + 2].copy_from_slice(&s.to_be_bytes());
}

#[test]
fn completes_udp() {
    for n in [0usize, 1, 6, 7, 100, 1401] {
        let payload: Vec<u8> = (0..n).map(|i| (i * 13) as u8).collect();
        let good = udp_packet(&payload);
        let mut p = good.clone();
        partial(&mut p, 40, 6, 17);
        assert_ne!(p, good, "len {n}");
        assert!(complete_ipv6_checksum(&mut p));
        assert_eq!(p, good, "len {n}");
    }
}

#[test]
fn completes_tcp_including_merged_sizes() {
    for n in [0usize, 1, 1440, 65000] {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7 + i / 300) as u8).collect();
        let good = tcp_packet(&payload);
        let mut p = good.clone();
        partial(&mut p, 40, 16, 6);
        assert!(complete_ipv6_checksum(&mut p));
        assert_eq!(p, good, "len {n}");
    }
}

#[test]
fn ignores_trailing_padding() {
    let good = udp_packet(b"hi");
    let mut p = good.clone();
    partial(&mut p, 40, 6, 17);
    p.extend_from_slice(&[0xaa; 6]);
    assert!(complete_ipv6_checksum(&mut p));
    assert_eq!(&p[..good.len()], &good[..]);
}

#[test]
fn walks_extension_headers() {
    // Insert an 8-byte hop-by-hop header in front of UDP.
    let good = udp_packet(b"through options");
    let mut p = good[..40].to_vec();
    p[6] = 0; // hop-by-hop
    let plen = u16::from_be_bytes([p[4], p[5]]) + 8;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    p.extend_from_slice(&good[40..]);
    let expect = p.clone();
    partial(&mut p, 48, 6, 17);
    assert!(complete_ipv6_checksum(&mut p));
    assert_eq!(p, expect);
}

#[test]
fn leaves_other_packets_alone() {
    // A fragment.
    let mut p = udp_packet(b"x")[..40].to_vec();
    p[6] = 44;
    p.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 1]);
    let before = p.clone();
    assert!(!complete_ipv6_checksum(&mut p));
    assert_eq!(p, before);
    // ICMPv6, IPv4, truncated.
    let mut icmp = udp_packet(b"x");
    icmp[6] = 58;
    assert!(!complete_ipv6_checksum(&mut icmp));
    let mut v4 = vec![0x45u8; 60];
    assert!(!complete_ipv6_checksum(&mut v4));
    let mut short = udp_packet(b"x");
    short.truncate(44);
    assert!(!complete_ipv6_checksum(&mut short));
}
