//! The receive socket's classic BPF filter, run in a small classic BPF interpreter with the
//! kernel's semantics for the instructions it uses (absolute loads, the packet length,
//! ancillary protocol and packet type, AND, ADD, TAX, JEQ/JGE/JGT with a constant, JGE with X,
//! RET; a load past the end of the packet rejects). With the fast path on, the filter must
//! reject exactly what `autoclat::bpf::fast_path_takes_ingress` says the fast path takes.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::bpf::fast_path_takes_ingress;
use autoclat::discovery::Nat64Prefix;
use autoclat::translator::{rx_filter, rx_filter_behind, rx_filter_exact, FastPathExclusion};
use libc::sock_filter;
use proptest::prelude::*;

const ETH_P_IPV6: u32 = 0x86dd;
const ETH_P_IP: u32 = 0x0800;
const PACKET_HOST: u32 = 0;
const PACKET_MULTICAST: u32 = 2;
const PACKET_OUTGOING: u32 = 4;

/// What the kernel knows about a packet besides its bytes.
struct Meta {
    protocol: u32,
    pkttype: u32,
}

const HOST6: Meta = Meta {
    protocol: ETH_P_IPV6,
    pkttype: PACKET_HOST,
};

/// Run `prog` on `pkt`; the return value is the snap length (0 = reject).
fn run(prog: &[sock_filter], pkt: &[u8], meta: &Meta) -> u32 {
    let ad_off = libc::SKF_AD_OFF as u32;
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 10_000, "runaway filter");
        let insn = prog.get(pc).expect("pc ran off the program");
        let code = u32::from(insn.code);
        let class = code & 0x07;
        match class {
            c if c == libc::BPF_LD && code & 0xe0 == libc::BPF_LEN => {
                assert_eq!(code & 0x18, libc::BPF_W);
                a = pkt.len() as u32;
                pc += 1;
            }
            c if c == libc::BPF_LD => {
                assert_eq!(code & 0xe0, libc::BPF_ABS, "only absolute loads expected");
                let size = match code & 0x18 {
                    s if s == libc::BPF_W => 4,
                    s if s == libc::BPF_H => 2,
                    s if s == libc::BPF_B => 1,
                    s => panic!("load size {s:#x}"),
                };
                if insn.k >= ad_off {
                    let which = insn.k.wrapping_sub(ad_off) as i32;
                    a = match which {
                        w if w == libc::SKF_AD_PROTOCOL => meta.protocol,
                        w if w == libc::SKF_AD_PKTTYPE => meta.pkttype,
                        w => panic!("ancillary {w}"),
                    };
                } else {
                    let k = insn.k as usize;
                    let Some(bytes) = pkt.get(k..k + size) else {
                        return 0; // the kernel rejects a packet a load runs past
                    };
                    a = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
                }
                pc += 1;
            }
            c if c == libc::BPF_ALU => {
                match code {
                    op if op == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= insn.k,
                    op if op == libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K => {
                        a = a.wrapping_add(insn.k)
                    }
                    op => panic!("ALU op {op:#x}"),
                }
                pc += 1;
            }
            c if c == libc::BPF_MISC => {
                assert_eq!(code, libc::BPF_MISC | libc::BPF_TAX);
                x = a;
                pc += 1;
            }
            c if c == libc::BPF_JMP => {
                let operand = if code & 0x08 == libc::BPF_X {
                    x
                } else {
                    insn.k
                };
                let taken = match code & 0xf0 {
                    op if op == libc::BPF_JEQ => a == operand,
                    op if op == libc::BPF_JGE => a >= operand,
                    op if op == libc::BPF_JGT => a > operand,
                    op => panic!("jump op {op:#x}"),
                };
                if code & 0x08 == libc::BPF_X {
                    assert_eq!(code & 0xf0, libc::BPF_JGE, "only JGE with X expected");
                }
                let off = if taken { insn.jt } else { insn.jf };
                pc += 1 + off as usize;
            }
            c if c == libc::BPF_RET => {
                assert_eq!(code & 0x18, libc::BPF_K);
                return insn.k;
            }
            c => panic!("unexpected class {c:#x}"),
        }
    }
}

const CLAT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0x1234, 0x5678, 0x9abc, 0xdef0);

/// An IPv6 packet: header, then `payload` after next header `nh`.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(nh);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

fn udp(csum: u16) -> Vec<u8> {
    let mut u = vec![0x30, 0x39, 0x00, 0x35, 0x00, 0x0c];
    u.extend_from_slice(&csum.to_be_bytes());
    u.extend_from_slice(b"ping");
    u
}

fn tcp() -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[12] = 0x50;
    t
}

fn icmp6_echo() -> Vec<u8> {
    vec![128, 0, 0x12, 0x34, 0, 1, 0, 1]
}

fn accepts(prog: &[sock_filter], pkt: &[u8]) -> bool {
    run(prog, pkt, &HOST6) != 0
}

fn prefix(s: &str) -> Nat64Prefix {
    s.parse().unwrap()
}

fn server(p: &Nat64Prefix) -> Ipv6Addr {
    p.embed(Ipv4Addr::new(198, 51, 100, 10))
}

#[test]
fn accepts_ipv6_to_the_clat_address_and_nothing_else() {
    let f = rx_filter(CLAT, None, None);
    let src = server(&prefix("2001:db8:64::/96"));
    let pkt = ipv6(src, CLAT, 58, &icmp6_echo());
    assert!(accepts(&f, &pkt));
    // The whole packet is kept.
    assert!(run(&f, &pkt, &HOST6) as usize >= pkt.len());
    // Any other destination, including one bit off in each word.
    for bit in [0u32, 31, 32, 63, 64, 95, 96, 127] {
        let other = Ipv6Addr::from(u128::from(CLAT) ^ (1u128 << bit));
        assert!(
            !accepts(&f, &ipv6(src, other, 58, &icmp6_echo())),
            "bit {bit}"
        );
    }
    // Multicast frames to the address (odd, but not ours to judge) are accepted.
    let m = Meta {
        protocol: ETH_P_IPV6,
        pkttype: PACKET_MULTICAST,
    };
    assert_ne!(run(&f, &pkt, &m), 0);
}

#[test]
fn rejects_outgoing_and_non_ipv6_frames() {
    let f = rx_filter(CLAT, None, None);
    let pkt = ipv6(server(&prefix("2001:db8:64::/96")), CLAT, 58, &icmp6_echo());
    let out = Meta {
        protocol: ETH_P_IPV6,
        pkttype: PACKET_OUTGOING,
    };
    assert_eq!(run(&f, &pkt, &out), 0);
    let v4 = Meta {
        protocol: ETH_P_IP,
        pkttype: PACKET_HOST,
    };
    assert_eq!(run(&f, &pkt, &v4), 0);
}

#[test]
fn rejects_truncated_packets() {
    let f = rx_filter(CLAT, None, None);
    let pkt = ipv6(server(&prefix("2001:db8:64::/96")), CLAT, 58, &icmp6_echo());
    assert!(!accepts(&f, &pkt[..39]));
    assert!(!accepts(&f, &[]));
}

#[test]
fn without_exclusion_tcp_and_udp_go_to_clatd() {
    let f = rx_filter(CLAT, None, None);
    let src = server(&prefix("2001:db8:64::/96"));
    assert!(accepts(&f, &ipv6(src, CLAT, 6, &tcp())));
    assert!(accepts(&f, &ipv6(src, CLAT, 17, &udp(0xbeef))));
}

#[test]
fn exclusion_rejects_what_the_fast_path_translates_at_every_prefix_length() {
    for p in [
        "2001:db8::/32",
        "2001:db8:100::/40",
        "2001:db8:122::/48",
        "2001:db8:122:300::/56",
        "2001:db8:122:344::/64",
        "2001:db8:64::/96",
        "64:ff9b::/96",
    ] {
        let pre = prefix(p);
        let ex = FastPathExclusion { prefix: pre };
        let f = rx_filter(CLAT, None, Some(&ex));
        let src = server(&pre);

        // The fast path's: plain TCP, UDP with a checksum.
        assert!(!accepts(&f, &ipv6(src, CLAT, 6, &tcp())), "{p} tcp");
        assert!(!accepts(&f, &ipv6(src, CLAT, 17, &udp(0xbeef))), "{p} udp");
        // clatd's: UDP without checksum, ICMPv6, fragments, other extension headers.
        assert!(accepts(&f, &ipv6(src, CLAT, 17, &udp(0))), "{p} udp0");
        assert!(accepts(&f, &ipv6(src, CLAT, 58, &icmp6_echo())), "{p} icmp");
        let frag = [6u8, 0, 0, 1, 0, 0, 0, 42];
        assert!(accepts(&f, &ipv6(src, CLAT, 44, &frag)), "{p} frag");
        assert!(
            accepts(&f, &ipv6(src, CLAT, 0, &[6, 0, 1, 4, 0, 0, 0, 0])),
            "{p} hbh"
        );

        // Sources just outside the prefix (last prefix bit flipped, first bit flipped) are
        // clatd's even for TCP; a source differing only in the suffix is still inside.
        let len = u32::from(pre.len());
        let last_bit = 1u128 << (128 - len);
        let outside_last = Ipv6Addr::from(u128::from(src) ^ last_bit);
        let outside_first = Ipv6Addr::from(u128::from(src) ^ (1u128 << 127));
        assert!(
            accepts(&f, &ipv6(outside_last, CLAT, 6, &tcp())),
            "{p} last"
        );
        assert!(
            accepts(&f, &ipv6(outside_first, CLAT, 6, &tcp())),
            "{p} first"
        );
        let inside = Ipv6Addr::from(u128::from(src) ^ (last_bit >> 1));
        assert!(!accepts(&f, &ipv6(inside, CLAT, 6, &tcp())), "{p} inside");

        // Still only to the CLAT address, still not outgoing.
        let other = Ipv6Addr::from(u128::from(CLAT) ^ 1);
        assert!(
            !accepts(&f, &ipv6(src, other, 58, &icmp6_echo())),
            "{p} dst"
        );
        let out = Meta {
            protocol: ETH_P_IPV6,
            pkttype: PACKET_OUTGOING,
        };
        assert_eq!(run(&f, &ipv6(src, CLAT, 58, &icmp6_echo()), &out), 0);
    }
}

/// A UDP packet too short for its header is not the fast path's (it guard-drops it), so clatd
/// must see it (and count it as malformed). The filter used to reject it, as its checksum load
/// ran past the end.
#[test]
fn exclusion_hands_a_udp_packet_too_short_for_its_header_to_clatd() {
    let pre = prefix("2001:db8:64::/96");
    let f = rx_filter(CLAT, None, Some(&FastPathExclusion { prefix: pre }));
    let pkt = ipv6(server(&pre), CLAT, 17, &[0x30, 0x39, 0x00, 0x35]);
    assert!(accepts(&f, &pkt));
    assert!(!fast_path_takes_ingress(&pkt, CLAT, CLAT4, &pre, None));
}

const CLAT4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 4);

const LENGTHS: [&str; 7] = [
    "2001:db8::/32",
    "2001:db8:100::/40",
    "2001:db8:122::/48",
    "2001:db8:122:300::/56",
    "2001:db8:122:344::/64",
    "2001:db8:64::/96",
    "64:ff9b::/96",
];

/// Issue 9 §3: packets the fast path now leaves to clatd reach clatd: hop limit 0 (clatd
/// answers Time Exceeded), embedded sources that are not remote unicast, our own address.
#[test]
fn exclusion_hands_hop_limit_zero_and_refused_sources_to_clatd() {
    for p in LENGTHS {
        let pre = prefix(p);
        let ex = FastPathExclusion { prefix: pre };
        let exact = rx_filter_exact(CLAT, CLAT4, None, Some(&ex));
        let loose = rx_filter(CLAT, None, Some(&ex));
        let mut pkt = ipv6(server(&pre), CLAT, 17, &udp(0xbeef));
        pkt[7] = 0;
        assert!(accepts(&exact, &pkt), "{p} hop 0");
        assert!(accepts(&loose, &pkt), "{p} hop 0");
        pkt[7] = 1;
        assert!(!accepts(&exact, &pkt), "{p} hop 1 is the fast path's");
        for a in [
            "127.0.0.53",
            "0.0.0.0",
            "224.0.0.251",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            let src = pre.embed(a.parse().unwrap());
            for pkt in [ipv6(src, CLAT, 17, &udp(1)), ipv6(src, CLAT, 6, &tcp())] {
                assert!(accepts(&exact, &pkt), "{p} {a}");
                assert!(accepts(&loose, &pkt), "{p} {a}");
            }
        }
        let ours = ipv6(pre.embed(CLAT4), CLAT, 6, &tcp());
        assert!(accepts(&exact, &ours), "{p} our own address");
        // The loose filter does not know our address: it skips those (clatd would drop them).
        assert!(!accepts(&loose, &ours), "{p} our own address");
        // Lengths: a payload length beyond the packet, or under a TCP header.
        let mut long = ipv6(server(&pre), CLAT, 6, &tcp());
        long[5] += 1;
        assert!(accepts(&exact, &long), "{p} payload length past the end");
        let short = ipv6(server(&pre), CLAT, 6, &tcp()[..12]);
        assert!(accepts(&exact, &short), "{p} short TCP");
        // Link-layer padding after the packet does not matter.
        let mut padded = ipv6(server(&pre), CLAT, 6, &tcp());
        padded.extend_from_slice(&[0; 6]);
        assert!(!accepts(&exact, &padded), "{p} padded");
    }
}

/// A packet to the CLAT address from under `pre`, with a choice of embedded source, hop limit,
/// next header, payload and length field.
fn candidate() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (
        0usize..LENGTHS.len(),
        prop_oneof![
            Just(Ipv4Addr::new(198, 51, 100, 10)),
            Just(CLAT4),
            Just(Ipv4Addr::new(127, 0, 0, 53)),
            Just(Ipv4Addr::new(224, 0, 0, 251)),
            Just(Ipv4Addr::new(255, 255, 255, 255)),
            Just(Ipv4Addr::new(0, 1, 2, 3)),
            any::<u32>().prop_map(Ipv4Addr::from),
        ],
        prop_oneof![Just(0u8), Just(1), Just(64), any::<u8>()],
        prop_oneof![Just(6u8), Just(17), Just(58), Just(44), any::<u8>()],
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![Just(None), any::<u16>().prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(i, a, hop, next, payload, len, outside)| {
            let pre = prefix(LENGTHS[i]);
            let mut src = pre.embed(a);
            if outside {
                src = Ipv6Addr::from(u128::from(src) ^ (1u128 << (128 - u32::from(pre.len()))));
            }
            let mut p = ipv6(src, CLAT, next, &payload);
            p[7] = hop;
            if let Some(l) = len {
                p[4..6].copy_from_slice(&l.to_be_bytes());
            }
            (i, p)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The exact filter rejects a packet exactly when the fast path takes it; the loose one
    /// differs only for our own embedded address.
    #[test]
    fn exact_filter_is_the_complement_of_the_fast_path((i, pkt) in candidate()) {
        let pre = prefix(LENGTHS[i]);
        let ex = FastPathExclusion { prefix: pre };
        let takes = fast_path_takes_ingress(&pkt, CLAT, CLAT4, &pre, None);
        prop_assert_eq!(accepts(&rx_filter_exact(CLAT, CLAT4, None, Some(&ex)), &pkt), !takes);
        let from_ours = pre.extract(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).unwrap()))
            == Some(CLAT4);
        if !from_ours {
            prop_assert_eq!(accepts(&rx_filter(CLAT, None, Some(&ex)), &pkt), !takes);
        }
    }
}

#[test]
fn filter_fits_the_kernel_limits() {
    let pre = prefix("2001:db8:122:300::/56");
    for f in [
        rx_filter(CLAT, None, None),
        rx_filter(CLAT, None, Some(&FastPathExclusion { prefix: pre })),
        rx_filter_exact(CLAT, CLAT4, None, Some(&FastPathExclusion { prefix: pre })),
        rx_filter(CLAT, Some(&clat_prefix()), None),
        rx_filter_exact(
            CLAT,
            CLAT4,
            Some(&clat_prefix()),
            Some(&FastPathExclusion { prefix: pre }),
        ),
    ] {
        assert!(f.len() <= 4096);
        for (i, insn) in f.iter().enumerate() {
            let class = u32::from(insn.code) & 0x07;
            if class == libc::BPF_JMP {
                assert!(i + 1 + (insn.jt as usize) < f.len());
                assert!(i + 1 + (insn.jf as usize) < f.len());
            }
        }
        assert_eq!(u32::from(f.last().unwrap().code) & 0x07, libc::BPF_RET);
    }
}

// ---- stateless mode: destinations inside the CLAT prefix (a /64) ----

fn clat_prefix() -> Nat64Prefix {
    prefix("2001:db8:1:ff00::/64")
}

/// A downstream host's address inside the CLAT prefix.
fn lan6() -> Ipv6Addr {
    clat_prefix().embed(Ipv4Addr::new(198, 51, 100, 23))
}

#[test]
fn stateless_accepts_destinations_inside_the_clat_prefix() {
    let cp = clat_prefix();
    let f = rx_filter(CLAT, Some(&cp), None);
    let src = server(&prefix("2001:db8:64::/96"));
    for dst in [
        CLAT,
        lan6(),
        cp.addr(),
        Ipv6Addr::from(u128::from(lan6()) | 0xffff),
    ] {
        assert!(accepts(&f, &ipv6(src, dst, 17, &udp(1))), "{dst}");
        assert!(accepts(&f, &ipv6(src, dst, 58, &icmp6_echo())), "{dst}");
    }
    // One bit outside the /64, in either word.
    for bit in [64u32, 95, 96, 127] {
        let other = Ipv6Addr::from(u128::from(lan6()) ^ (1u128 << bit));
        assert!(!accepts(&f, &ipv6(src, other, 17, &udp(1))), "bit {bit}");
    }
    // Without the prefix, only the CLAT address.
    assert!(!accepts(
        &rx_filter(CLAT, None, None),
        &ipv6(src, lan6(), 17, &udp(1))
    ));
    // Outgoing frames are still refused.
    let out = Meta {
        protocol: ETH_P_IPV6,
        pkttype: PACKET_OUTGOING,
    };
    assert_eq!(run(&f, &ipv6(src, lan6(), 17, &udp(1)), &out), 0);
}

#[test]
fn stateless_exclusion_rejects_what_the_fast_path_translates() {
    let cp = clat_prefix();
    for p in LENGTHS {
        let pre = prefix(p);
        let ex = FastPathExclusion { prefix: pre };
        let exact = rx_filter_exact(CLAT, CLAT4, Some(&cp), Some(&ex));
        let loose = rx_filter(CLAT, Some(&cp), Some(&ex));
        let src = server(&pre);
        for f in [&exact, &loose] {
            assert!(!accepts(f, &ipv6(src, lan6(), 6, &tcp())), "{p} tcp");
            assert!(!accepts(f, &ipv6(src, lan6(), 17, &udp(7))), "{p} udp");
            assert!(
                !accepts(f, &ipv6(src, CLAT, 17, &udp(7))),
                "{p} udp to CLAT"
            );
            assert!(accepts(f, &ipv6(src, lan6(), 17, &udp(0))), "{p} udp0");
            assert!(
                accepts(f, &ipv6(src, lan6(), 58, &icmp6_echo())),
                "{p} icmp"
            );
        }
        // Not the RFC 6052 format, or an embedded address that is not downstream unicast:
        // clatd's (it counts them).
        let mut bad_u = lan6().octets();
        bad_u[8] = 1;
        let mut bad_suffix = lan6().octets();
        bad_suffix[14] = 1;
        for dst in [
            Ipv6Addr::from(bad_u),
            Ipv6Addr::from(bad_suffix),
            cp.embed(Ipv4Addr::new(127, 0, 0, 1)),
            cp.embed(Ipv4Addr::new(224, 0, 0, 1)),
            cp.embed(Ipv4Addr::new(0, 0, 0, 1)),
            cp.embed(Ipv4Addr::BROADCAST),
        ] {
            assert!(accepts(&exact, &ipv6(src, dst, 6, &tcp())), "{p} {dst}");
            assert!(accepts(&loose, &ipv6(src, dst, 6, &tcp())), "{p} {dst}");
        }
        // Our own IPv4 address embedded in the CLAT prefix: only the exact filter knows.
        let ours = ipv6(src, cp.embed(CLAT4), 6, &tcp());
        assert!(accepts(&exact, &ours), "{p} our own address");
    }
}

/// A packet to the CLAT address or into the CLAT prefix, from under one of `LENGTHS`.
fn stateless_candidate() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (
        candidate(),
        prop_oneof![
            Just(None),
            Just(Some(Ipv4Addr::new(198, 51, 100, 23))),
            Just(Some(CLAT4)),
            Just(Some(Ipv4Addr::new(127, 0, 0, 1))),
            Just(Some(Ipv4Addr::new(224, 0, 0, 251))),
            Just(Some(Ipv4Addr::new(255, 255, 255, 255))),
            any::<u32>().prop_map(|a| Some(Ipv4Addr::from(a))),
        ],
        prop_oneof![Just(None), (8usize..16, any::<u8>()).prop_map(Some)],
    )
        .prop_map(|((i, mut p), dst4, poke)| {
            if let Some(a) = dst4 {
                let mut d = clat_prefix().embed(a).octets();
                if let Some((at, v)) = poke {
                    d[at] = v;
                }
                p[24..40].copy_from_slice(&d);
            }
            (i, p)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// In stateless mode too, the exact filter rejects a packet exactly when the fast path
    /// takes it; the loose one differs only for our own embedded address (as source or as
    /// destination).
    #[test]
    fn stateless_exact_filter_is_the_complement_of_the_fast_path(
        (i, pkt) in stateless_candidate()
    ) {
        let pre = prefix(LENGTHS[i]);
        let cp = clat_prefix();
        let ex = FastPathExclusion { prefix: pre };
        let takes = fast_path_takes_ingress(&pkt, CLAT, CLAT4, &pre, Some(&cp));
        prop_assert_eq!(
            accepts(&rx_filter_exact(CLAT, CLAT4, Some(&cp), Some(&ex)), &pkt),
            !takes
        );
        let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[at..at + 16]).unwrap());
        let from_ours = pre.extract(addr(8)) == Some(CLAT4);
        let to_ours = Nat64Prefix::extract_at(addr(24), 64) == CLAT4 && cp.contains(addr(24));
        if !from_ours && !to_ours {
            prop_assert_eq!(accepts(&rx_filter(CLAT, Some(&cp), Some(&ex)), &pkt), !takes);
        }
        // Whatever is to the CLAT prefix or the CLAT address and not taken reaches clatd.
        let no_ex = rx_filter(CLAT, Some(&cp), None);
        prop_assert_eq!(accepts(&no_ex, &pkt), addr(24) == CLAT || cp.contains(addr(24)));
    }
}

/// `pkt` behind a 14-octet Ethernet header, as a `SOCK_RAW` packet socket's filter sees it.
fn framed(pkt: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(pkt);
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Behind a link-layer header (the raw receive socket with virtio headers), every filter
    /// gives the framed packet the verdict the cooked filter gives the bare packet: the
    /// lengths checks included, and nothing is read from the link-layer header.
    #[test]
    fn a_filter_behind_a_link_header_agrees_with_the_cooked_one(
        (i, pkt) in stateless_candidate(),
        stateless in any::<bool>(),
        exact in any::<bool>(),
        fast_path in any::<bool>(),
    ) {
        let ex = FastPathExclusion { prefix: prefix(LENGTHS[i]) };
        let cp = clat_prefix();
        let cp = stateless.then_some(&cp);
        let ex = fast_path.then_some(&ex);
        let v4 = exact.then_some(CLAT4);
        let cooked = match v4 {
            Some(v4) => rx_filter_exact(CLAT, v4, cp, ex),
            None => rx_filter(CLAT, cp, ex),
        };
        let raw = rx_filter_behind(14, CLAT, v4, cp, ex);
        prop_assert_eq!(accepts(&raw, &framed(&pkt)), accepts(&cooked, &pkt));
        // Cut short inside the IPv6 header, framed or not: the same verdict again.
        let short = &pkt[..pkt.len().min(30)];
        prop_assert_eq!(accepts(&raw, &framed(short)), accepts(&cooked, short));
    }
}

#[test]
fn the_filter_behind_no_header_is_the_cooked_one() {
    let ex = FastPathExclusion {
        prefix: prefix("64:ff9b::/96"),
    };
    let cp = clat_prefix();
    let a = rx_filter_behind(0, CLAT, Some(CLAT4), Some(&cp), Some(&ex));
    let b = rx_filter_exact(CLAT, CLAT4, Some(&cp), Some(&ex));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.code, x.jt, x.jf, x.k), (y.code, y.jt, y.jf, y.k));
    }
}
