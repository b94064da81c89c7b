//! Translation core throughput: ns per 1500-byte packet each way, TCP and UDP.
//!
//! `cargo bench --bench xlat -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::discovery::Nat64Prefix;
use autoclat::xlat::{PacketBatch, Translator, Verdict, XlatConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CLAT4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 4);
const REMOTE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn csum(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    acc
}

fn fin(mut acc: u32) -> [u8; 2] {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    (!(acc as u16)).to_be_bytes()
}

/// An L4 segment (TCP or UDP) of `len` bytes with its checksum under `pseudo`.
fn segment(proto: u8, len: usize, pseudo: u32) -> Vec<u8> {
    let mut s: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let at = if proto == 6 {
        s[12] = 0x50;
        16
    } else {
        s[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        6
    };
    s[at..at + 2].fill(0);
    let c = fin(csum(pseudo + u32::from(proto) + len as u32, &s));
    s[at..at + 2].copy_from_slice(&c);
    s
}

fn ipv4(proto: u8, total: usize) -> Vec<u8> {
    let l4 = segment(
        proto,
        total - 20,
        csum(csum(0, &CLAT4.octets()), &REMOTE4.octets()),
    );
    let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&CLAT4.octets());
    p.extend_from_slice(&REMOTE4.octets());
    let c = fin(csum(0, &p));
    p[10..12].copy_from_slice(&c);
    p.extend_from_slice(&l4);
    p
}

fn ipv6(proto: u8, total: usize, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let l4 = segment(
        proto,
        total - 40,
        csum(csum(0, &src.octets()), &dst.octets()),
    );
    let mut p = vec![0x60, 0, 0, 0, 0, 0, proto, 64];
    p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&l4);
    p
}

fn config(mtu6: u32) -> XlatConfig {
    let prefix: Nat64Prefix = "2001:db8:64::/96".parse().expect("prefix");
    XlatConfig {
        v4: CLAT4,
        v6: "2001:db8:1:2::c000:4".parse().expect("address"),
        prefix,
        mtu6,
        clat_prefix: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xlat");
    g.throughput(Throughput::Elements(1));
    for (name, proto) in [("tcp", 6u8), ("udp", 17u8)] {
        // 1500-byte IPv4 packet → 1520-byte IPv6 packet (the uplink MTU allows it).
        let mut t = Translator::new(config(1520));
        let pkt = ipv4(proto, 1500);
        let (mut out, mut err) = (PacketBatch::with_capacity(4096), PacketBatch::default());
        assert_eq!(
            t.ipv4_to_ipv6(&pkt, &mut out, &mut err),
            Verdict::Translated
        );
        g.bench_function(format!("v4_to_v6/{name}/1500"), |b| {
            b.iter(|| {
                out.clear();
                black_box(t.ipv4_to_ipv6(black_box(&pkt), &mut out, &mut err))
            })
        });

        // 1500-byte IPv6 packet → 1480-byte IPv4 packet.
        let cfg = config(1500);
        let mut t = Translator::new(cfg);
        let pkt = ipv6(proto, 1500, cfg.prefix.embed(REMOTE4), cfg.v6);
        let (mut out, mut err) = (PacketBatch::with_capacity(4096), PacketBatch::default());
        assert_eq!(
            t.ipv6_to_ipv4(&pkt, &mut out, &mut err),
            Verdict::Translated
        );
        g.bench_function(format!("v6_to_v4/{name}/1500"), |b| {
            b.iter(|| {
                out.clear();
                black_box(t.ipv6_to_ipv4(black_box(&pkt), &mut out, &mut err))
            })
        });
    }
    // A DF-clear 1500-byte IPv4 packet into a 1280-byte uplink: two IPv6 fragments.
    let mut t = Translator::new(config(1280));
    let mut pkt = ipv4(17, 1500);
    pkt[6] = 0;
    pkt[10..12].fill(0);
    let c = fin(csum(0, &pkt[..20]));
    pkt[10..12].copy_from_slice(&c);
    let (mut out, mut err) = (PacketBatch::with_capacity(4096), PacketBatch::default());
    assert_eq!(
        t.ipv4_to_ipv6(&pkt, &mut out, &mut err),
        Verdict::Translated
    );
    assert_eq!(out.len(), 2);
    g.bench_function("v4_to_v6/udp/1500_fragmented", |b| {
        b.iter(|| {
            out.clear();
            black_box(t.ipv4_to_ipv6(black_box(&pkt), &mut out, &mut err))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
