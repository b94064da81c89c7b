//! Translation with virtio_net_hdr metadata (tun IFF_VNET_HDR): partial checksums (NEEDS_CSUM)
//! are updated for the new pseudo-header and completed here the way the device would, then
//! checked; GSO types and sizes are mapped.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

mod xlat_common;

use autoclat::xlat::{DropReason, PacketBatch, Translator, Verdict, VnetHdr};
use xlat_common::*;

/// A TCP or UDP segment whose checksum field holds the folded pseudo-header sum only, as the
/// kernel leaves it for CHECKSUM_PARTIAL.
fn partial(mut seg: Vec<u8>, at: usize, pseudo: u32) -> Vec<u8> {
    let f = !ref_csum(pseudo);
    seg[at..at + 2].copy_from_slice(&f.to_be_bytes());
    seg
}

/// What the device does for NEEDS_CSUM.
fn complete(pkt: &mut [u8], h: &VnetHdr) {
    assert_eq!(h.flags & VnetHdr::F_NEEDS_CSUM, VnetHdr::F_NEEDS_CSUM);
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    let c = ref_csum(ref_sum(0, &pkt[start..]));
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn v4_off(t: &mut Translator, h: &VnetHdr, pkt: &[u8]) -> (Verdict, VnetHdr, Vec<Vec<u8>>) {
    let (mut a, mut b) = (PacketBatch::default(), PacketBatch::default());
    let (v, oh) = t.ipv4_to_ipv6_offload(h, pkt, &mut a, &mut b);
    (v, oh, collect(&a))
}

fn v6_off(t: &mut Translator, h: &VnetHdr, pkt: &[u8]) -> (Verdict, VnetHdr, Vec<Vec<u8>>) {
    let (mut a, mut b) = (PacketBatch::default(), PacketBatch::default());
    let (v, oh) = t.ipv6_to_ipv4_offload(h, pkt, &mut a, &mut b);
    (v, oh, collect(&a))
}

fn needs_csum(start: u16, offset: u16) -> VnetHdr {
    VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: start,
        csum_offset: offset,
        ..VnetHdr::default()
    }
}

#[test]
fn header_bytes_round_trip() {
    let h = VnetHdr {
        flags: 1,
        gso_type: 0x81,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let b = h.to_le_bytes();
    assert_eq!(b, [1, 0x81, 54, 0, 0xa8, 0x05, 34, 0, 16, 0]);
    assert_eq!(VnetHdr::from_le_bytes(&b), Some(h));
    assert_eq!(VnetHdr::from_le_bytes(&b[..9]), None);
}

#[test]
fn partial_tcp_checksum_v4_to_v6() {
    let mut t = Translator::new(cfg());
    let data = payload(1000, 1);
    let seg = partial(
        tcp(1, 2, 3, &data, &Pseudo::None),
        16,
        pseudo4(CLAT4, REMOTE4, 6, 1020),
    );
    let mut h4 = V4::new(CLAT4, REMOTE4, 6);
    h4.options = vec![1, 1, 1, 1];
    let pkt = h4.build(&seg);
    let (v, oh, out) = v4_off(&mut t, &needs_csum(24, 16), &pkt);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(oh, needs_csum(40, 16));
    let mut p = out[0].clone();
    complete(&mut p, &oh);
    let o = verify(&p);
    assert_eq!(o.l4()[20..], data[..]);
}

#[test]
fn partial_udp_checksum_v6_to_v4_behind_an_extension_header() {
    let c = cfg();
    let mut t = Translator::new(c);
    let r6 = c.prefix.embed(REMOTE4);
    let seg = partial(
        udp(53, 9, &payload(500, 2), &Pseudo::None, true),
        6,
        pseudo6(r6, clat6(), 17, 508),
    );
    let dst_opts = [17u8, 0, 1, 4, 0, 0, 0, 0];
    let pkt = V6::new(r6, clat6()).build(60, &dst_opts, &seg);
    let (v, oh, out) = v6_off(&mut t, &needs_csum(48, 6), &pkt);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(oh, needs_csum(20, 6));
    let mut p = out[0].clone();
    complete(&mut p, &oh);
    verify(&p);
}

#[test]
fn gso_tcp_is_mapped_and_never_fragmented() {
    let c = cfg_with("2001:db8:100::/40", 1280);
    let mut t = Translator::new(c);
    let data = payload(30000, 3);
    let seg = partial(
        tcp(1, 2, 3, &data, &Pseudo::None),
        16,
        pseudo4(CLAT4, REMOTE4, 6, 30020),
    );
    let pkt = V4::new(CLAT4, REMOTE4, 6).build(&seg);
    let h = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN,
        gso_size: 1212,
        hdr_len: 40,
        ..needs_csum(20, 16)
    };
    let (v, oh, out) = v4_off(&mut t, &h, &pkt);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(
        out.len(),
        1,
        "a GSO packet is segmented later, not fragmented"
    );
    assert_eq!(
        oh,
        VnetHdr {
            gso_type: VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN,
            gso_size: 1212,
            hdr_len: 60,
            ..needs_csum(40, 16)
        }
    );
    let mut p = out[0].clone();
    complete(&mut p, &oh);
    verify(&p);

    // And back: the far side's translator maps TCPV6 to TCPV4.
    let mut b = Translator::new(mirror(&c, REMOTE4));
    let (v, bh, back) = v6_off(&mut b, &oh, &out[0]);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(bh, h);
    let mut p = back[0].clone();
    complete(&mut p, &bh);
    verify(&p);
}

#[test]
fn gso_udp_l4_keeps_its_type() {
    let mut t = Translator::new(cfg());
    let seg = partial(
        udp(1, 2, &payload(8000, 4), &Pseudo::None, true),
        6,
        pseudo4(CLAT4, REMOTE4, 17, 8008),
    );
    let pkt = V4::new(CLAT4, REMOTE4, 17).build(&seg);
    let h = VnetHdr {
        gso_type: VnetHdr::GSO_UDP_L4,
        gso_size: 1400,
        hdr_len: 28,
        ..needs_csum(20, 6)
    };
    let (v, oh, out) = v4_off(&mut t, &h, &pkt);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(
        (oh.gso_type, oh.gso_size, oh.hdr_len),
        (VnetHdr::GSO_UDP_L4, 1400, 48)
    );
    let mut p = out[0].clone();
    complete(&mut p, &oh);
    verify(&p);
}

#[test]
fn partial_checksum_is_completed_when_fragmenting() {
    let mut t = Translator::new(cfg_with("2001:db8:64::/96", 1280));
    let data = payload(3000, 5);
    let seg = partial(
        udp(1, 2, &data, &Pseudo::None, true),
        6,
        pseudo4(CLAT4, REMOTE4, 17, 3008),
    );
    let mut h4 = V4::new(CLAT4, REMOTE4, 17);
    h4.df = false;
    let (v, oh, out) = v4_off(&mut t, &needs_csum(20, 6), &h4.build(&seg));
    assert_eq!(v, Verdict::Translated);
    assert_eq!(oh, VnetHdr::default(), "complete fragments need no offload");
    assert!(out.len() > 2);
    let mut all = Vec::new();
    for p in &out {
        all.extend_from_slice(verify(p).l4());
    }
    let dst6 = cfg().prefix.embed(REMOTE4);
    assert!(sums_ok(pseudo6(clat6(), dst6, 17, all.len()), &all));
}

#[test]
fn data_valid_and_plain_packets_pass_through() {
    let mut t = Translator::new(cfg());
    let pkt =
        V4::new(CLAT4, REMOTE4, 6).build(&tcp(1, 2, 3, b"hello", &Pseudo::V4(CLAT4, REMOTE4)));
    let h = VnetHdr {
        flags: VnetHdr::F_DATA_VALID,
        ..VnetHdr::default()
    };
    let (v, oh, out) = v4_off(&mut t, &h, &pkt);
    assert_eq!(v, Verdict::Translated);
    assert_eq!(oh, h);
    verify(&out[0]);
    // ICMP without offload flags goes the ordinary way.
    let echo = V4::new(CLAT4, REMOTE4, 1).build(&icmp(8, 0, [0; 4], b"ping", &Pseudo::None));
    let (v, oh, out) = v4_off(&mut t, &VnetHdr::default(), &echo);
    assert_eq!((v, oh), (Verdict::Translated, VnetHdr::default()));
    verify(&out[0]);
    assert_eq!(t.counters().v4_to_v6_packets, 2);
}

#[test]
fn inconsistent_offload_metadata_is_refused() {
    let mut t = Translator::new(cfg());
    let tcp_pkt = V4::new(CLAT4, REMOTE4, 6).build(&tcp(1, 2, 3, b"hello", &Pseudo::None));
    let udp_pkt = V4::new(CLAT4, REMOTE4, 17).build(&udp(1, 2, b"hello", &Pseudo::None, true));
    let echo = V4::new(CLAT4, REMOTE4, 1).build(&icmp(8, 0, [0; 4], b"ping", &Pseudo::None));
    let gso = |g: u8| VnetHdr {
        gso_type: g,
        gso_size: 1000,
        ..needs_csum(20, 16)
    };
    let cases: [(VnetHdr, &[u8]); 6] = [
        (needs_csum(20, 6), &tcp_pkt),  // wrong checksum offset
        (needs_csum(24, 16), &tcp_pkt), // wrong start
        (needs_csum(20, 2), &echo),     // ICMP has no partial checksum
        (gso(VnetHdr::GSO_TCPV4), &udp_pkt),
        (gso(VnetHdr::GSO_UDP), &udp_pkt), // UFO
        (gso(VnetHdr::GSO_TCPV6), &tcp_pkt),
    ];
    for (i, (h, p)) in cases.iter().enumerate() {
        let (v, oh, out) = v4_off(&mut t, h, p);
        assert_eq!(v, Verdict::Dropped(DropReason::Unsupported), "case {i}");
        assert_eq!(oh, VnetHdr::default());
        assert!(out.is_empty());
    }
    // IPv6 side: a TCPV6 GSO header on UDP.
    let c = cfg();
    let r6 = c.prefix.embed(REMOTE4);
    let pkt =
        V6::new(r6, clat6()).build(17, &[], &udp(1, 2, b"x", &Pseudo::V6(r6, clat6()), false));
    let h = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV6,
        gso_size: 1000,
        ..VnetHdr::default()
    };
    let (v, _, out) = v6_off(&mut t, &h, &pkt);
    assert_eq!(v, Verdict::Dropped(DropReason::Unsupported));
    assert!(out.is_empty());
    // Not ours stays not ours.
    let pkt = V4::new(REMOTE4, CLAT4, 6).build(&tcp(1, 2, 3, b"x", &Pseudo::None));
    assert_eq!(
        v4_off(&mut t, &needs_csum(20, 16), &pkt).0,
        Verdict::Dropped(DropReason::NotOurs)
    );
}

#[test]
fn data_valid_is_not_claimed_for_fragments() {
    let mut t = Translator::new(cfg_with("2001:db8:64::/96", 1280));
    let seg = udp(1, 2, &payload(2000, 6), &Pseudo::V4(CLAT4, REMOTE4), false);
    let mut h4 = V4::new(CLAT4, REMOTE4, 17);
    h4.df = false;
    let h = VnetHdr {
        flags: VnetHdr::F_DATA_VALID,
        ..VnetHdr::default()
    };
    let (v, oh, out) = v4_off(&mut t, &h, &h4.build(&seg));
    assert_eq!(v, Verdict::Translated);
    assert_eq!(out.len(), 2);
    assert_eq!(oh, VnetHdr::default());
}
