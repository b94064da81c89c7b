//! Neighbour discovery packets for the CLAT's IPv6 address, built and parsed without I/O:
//! the duplicate address detection probe (RFC 4862 §5.4: a neighbour solicitation from `::` to
//! the solicited-node group, hop limit 255), the neighbour advertisement autoclat sends when no
//! address of the uplink covers the CLAT's /64 (so the kernel cannot answer through an anycast
//! membership), the parser for what comes back, and the classic BPF filter that lets exactly
//! the solicitations and advertisements for one target reach a packet socket.
//!
//! Packets are whole IPv6 packets (header included, checksum computed here): they are sent on
//! a raw `IPPROTO_RAW` socket, which is the only way to send from `::` or from an address the
//! host does not own. The I/O lives in [`super::ndsock`].

use std::net::Ipv6Addr;

use libc::sock_filter;

use crate::xlat::checksum;

/// ICMPv6 neighbour solicitation.
pub const NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// ND messages are only valid with this hop limit (RFC 4861 §7.1): they never crossed a router.
pub const ND_HOP_LIMIT: u8 = 255;

const IPV6_HEADER: usize = 40;
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Type, code, checksum, flags/reserved, target: the fixed part of an NS or NA.
const ND_FIXED: usize = 24;
/// Option types (RFC 4861 §4.6.1).
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// NA flags (first byte after the checksum).
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// The solicited-node multicast group of `addr` (RFC 4291 §2.7.1): `ff02::1:ffXX:XXXX` with the
/// address's low 24 bits.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let low = u128::from(addr) & 0x00ff_ffff;
    Ipv6Addr::from(0xff02_0000_0000_0000_0000_0001_ff00_0000_u128 | low)
}

/// An IPv6 packet carrying the ICMPv6 message `icmp` (checksum field zero), with the checksum
/// filled in.
fn icmpv6_packet(src: Ipv6Addr, dst: Ipv6Addr, mut icmp: Vec<u8>) -> Vec<u8> {
    let len = icmp.len();
    let sum = checksum::add(
        checksum::pseudo_v6(src, dst, NEXT_HEADER_ICMPV6, len as u32),
        &icmp,
    );
    let csum = checksum::finish(sum);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut p = Vec::with_capacity(IPV6_HEADER + len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.push(NEXT_HEADER_ICMPV6);
    p.push(ND_HOP_LIMIT);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&icmp);
    p
}

/// The DAD probe for `target`: a neighbour solicitation from `::` to `target`'s solicited-node
/// group, without a source link-layer address option (RFC 4861 §4.3 forbids it from `::`).
pub fn dad_probe(target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmpv6_packet(Ipv6Addr::UNSPECIFIED, solicited_node(target), icmp)
}

/// The neighbour advertisement for `target` (sent from `target` itself, as its owner would),
/// answering a solicitation from `solicitor`: to the solicitor with the Solicited flag, or to
/// all nodes (`ff02::1`) when the solicitor is `::` (someone's DAD probe: RFC 4861 §7.2.4).
/// Override is set (the address has no other owner), Router is not; the target link-layer
/// address option carries the uplink's `mac`.
pub fn advertisement(target: Ipv6Addr, solicitor: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let (dst, flags) = if solicitor.is_unspecified() {
        (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), NA_OVERRIDE)
    } else {
        (solicitor, NA_SOLICITED | NA_OVERRIDE)
    };
    let mut icmp = vec![NEIGHBOR_ADVERTISEMENT, 0, 0, 0, flags, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[OPT_TARGET_LL, 1]);
    icmp.extend_from_slice(&mac);
    icmpv6_packet(target, dst, icmp)
}

/// A neighbour discovery message about one target, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdMessage {
    /// A neighbour solicitation (`source` `::`: a DAD probe).
    Solicitation {
        source: Ipv6Addr,
        target: Ipv6Addr,
        /// The source link-layer address option, if present.
        source_mac: Option<[u8; 6]>,
    },
    /// A neighbour advertisement: `target` is in use by the sender.
    Advertisement {
        source: Ipv6Addr,
        target: Ipv6Addr,
        /// The target link-layer address option, if present.
        target_mac: Option<[u8; 6]>,
    },
}

impl NdMessage {
    /// The address the message is about.
    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdMessage::Solicitation { target, .. } | NdMessage::Advertisement { target, .. } => {
                *target
            }
        }
    }
}

/// Parses an IPv6 packet as a neighbour solicitation or advertisement, validated as RFC 4861
/// §7.1.1/§7.1.2 asks (hop limit 255, ICMPv6 directly after the header, code 0, length, a
/// correct checksum, well-formed options of non-zero length, a non-multicast target). Anything
/// else is `None`.
pub fn parse(packet: &[u8]) -> Option<NdMessage> {
    if packet.len() < IPV6_HEADER + ND_FIXED || packet[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if packet[6] != NEXT_HEADER_ICMPV6 || packet[7] != ND_HOP_LIMIT {
        return None;
    }
    let icmp = packet.get(IPV6_HEADER..IPV6_HEADER + payload_len)?;
    if icmp.len() < ND_FIXED || icmp[1] != 0 {
        return None;
    }
    let octets = |b: &[u8]| -> Option<Ipv6Addr> {
        let a: [u8; 16] = b.try_into().ok()?;
        Some(Ipv6Addr::from(a))
    };
    let source = octets(&packet[8..24])?;
    let dest = octets(&packet[24..40])?;
    let sum = checksum::add(
        checksum::pseudo_v6(source, dest, NEXT_HEADER_ICMPV6, icmp.len() as u32),
        icmp,
    );
    if !matches!(checksum::fold(sum), 0xffff | 0) {
        return None;
    }
    let target = octets(&icmp[8..24])?;
    if target.is_multicast() {
        return None;
    }
    let mut options = &icmp[ND_FIXED..];
    let mut source_ll = None;
    let mut target_ll = None;
    while !options.is_empty() {
        let kind = options[0];
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        let mac: Option<[u8; 6]> = options.get(2..8).and_then(|m| m.try_into().ok());
        match kind {
            OPT_SOURCE_LL => source_ll = mac,
            OPT_TARGET_LL => target_ll = mac,
            _ => {}
        }
        options = &options[len..];
    }
    match icmp[0] {
        NEIGHBOR_SOLICITATION => {
            // From `::` only to a solicited-node group and without a source link-layer option.
            if source.is_unspecified() && (source_ll.is_some() || dest != solicited_node(target)) {
                return None;
            }
            Some(NdMessage::Solicitation {
                source,
                target,
                source_mac: source_ll,
            })
        }
        NEIGHBOR_ADVERTISEMENT => Some(NdMessage::Advertisement {
            source,
            target,
            target_mac: target_ll,
        }),
        _ => None,
    }
}

// Classic BPF for the packet socket (`SOCK_DGRAM`, so offset 0 is the IPv6 header).
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const ETH_P_IPV6: u32 = 0x86dd;
/// `PACKET_OUTGOING`; the types from it on (outgoing, loopback, …) are the host's own.
const PACKET_OUTGOING: u32 = 4;

/// The socket filter for neighbour solicitations and advertisements about `target`: IPv6,
/// received (not sent or looped back by this host), ICMPv6 right after the header, hop limit
/// 255, type NS or NA, target field equal to `target`. [`parse`] checks the rest.
pub fn target_filter(target: Ipv6Addr) -> Vec<sock_filter> {
    // Each check: load, then a jump that goes on when it holds and rejects otherwise. The
    // program ends in "accept", then "reject".
    enum Check {
        /// Continue when the loaded value equals k.
        Eq(u32),
        /// Continue when the loaded value is below k.
        Below(u32),
        /// Continue when the loaded value equals k or `second`.
        EqEither(u32, u32),
    }
    let ancillary = |x: i32| (libc::SKF_AD_OFF + x) as u32;
    let mut checks: Vec<(u16, u32, Check)> = vec![
        (
            LD_W_ABS,
            ancillary(libc::SKF_AD_PROTOCOL),
            Check::Eq(ETH_P_IPV6),
        ),
        (
            LD_W_ABS,
            ancillary(libc::SKF_AD_PKTTYPE),
            Check::Below(PACKET_OUTGOING),
        ),
        (LD_B_ABS, 6, Check::Eq(u32::from(NEXT_HEADER_ICMPV6))),
        (LD_B_ABS, 7, Check::Eq(u32::from(ND_HOP_LIMIT))),
        (
            LD_B_ABS,
            IPV6_HEADER as u32,
            Check::EqEither(
                u32::from(NEIGHBOR_SOLICITATION),
                u32::from(NEIGHBOR_ADVERTISEMENT),
            ),
        ),
    ];
    for (i, word) in target.octets().chunks_exact(4).enumerate() {
        let w = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        checks.push((LD_W_ABS, (IPV6_HEADER + 8 + 4 * i) as u32, Check::Eq(w)));
    }
    // Instruction counts per check, to find the distance to "reject".
    let size = |c: &Check| match c {
        Check::EqEither(..) => 3,
        _ => 2,
    };
    let total: usize = checks.iter().map(|(_, _, c)| size(c)).sum();
    let reject_at = total + 1;
    let mut out = Vec::with_capacity(total + 2);
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    for (code, k, check) in checks {
        out.push(insn(code, 0, 0, k));
        let jump_to_reject = |at: usize| u8::try_from(reject_at - at - 1).unwrap_or(u8::MAX);
        match check {
            Check::Eq(v) => {
                let at = out.len();
                out.push(insn(JMP_JEQ_K, 0, jump_to_reject(at), v));
            }
            Check::Below(v) => {
                let at = out.len();
                out.push(insn(JMP_JGE_K, jump_to_reject(at), 0, v));
            }
            Check::EqEither(a, b) => {
                let at = out.len();
                out.push(insn(JMP_JEQ_K, 1, 0, a));
                out.push(insn(JMP_JEQ_K, 0, jump_to_reject(at + 1), b));
            }
        }
    }
    out.push(insn(RET_K, 0, 0, u32::MAX));
    out.push(insn(RET_K, 0, 0, 0));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T: &str = "2001:db8:1::abcd:1234:5678";

    fn target() -> Ipv6Addr {
        T.parse().unwrap()
    }

    #[test]
    fn solicited_node_group_takes_the_low_24_bits() {
        assert_eq!(
            solicited_node(target()),
            "ff02::1:ff34:5678".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn dad_probe_is_a_valid_ns_from_unspecified() {
        let p = dad_probe(target());
        assert_eq!(p.len(), 40 + 24);
        assert_eq!(p[7], 255, "hop limit");
        assert_eq!(&p[8..24], &[0; 16], "from ::");
        assert_eq!(&p[24..40], &solicited_node(target()).octets());
        assert_eq!(
            parse(&p),
            Some(NdMessage::Solicitation {
                source: Ipv6Addr::UNSPECIFIED,
                target: target(),
                source_mac: None
            })
        );
    }

    #[test]
    fn advertisement_round_trips_with_flags_and_mac() {
        let mac = [0x02, 0, 0, 0, 0, 0x42];
        let router: Ipv6Addr = "fe80::1".parse().unwrap();
        let p = advertisement(target(), router, mac);
        assert_eq!(&p[8..24], &target().octets(), "from the target itself");
        assert_eq!(&p[24..40], &router.octets());
        assert_eq!(p[44], NA_SOLICITED | NA_OVERRIDE);
        assert_eq!(
            parse(&p),
            Some(NdMessage::Advertisement {
                source: target(),
                target: target(),
                target_mac: Some(mac)
            })
        );
        // Answering a DAD probe: to all nodes, not solicited.
        let p = advertisement(target(), Ipv6Addr::UNSPECIFIED, mac);
        assert_eq!(&p[24..40], &"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(p[44], NA_OVERRIDE);
    }

    #[test]
    fn parse_refuses_what_rfc4861_says_to_drop() {
        let good = advertisement(target(), "fe80::1".parse().unwrap(), [2, 0, 0, 0, 0, 1]);
        assert!(parse(&good).is_some());
        let mut hop = good.clone();
        hop[7] = 64;
        assert_eq!(parse(&hop), None, "hop limit below 255");
        let mut csum = good.clone();
        csum[42] ^= 1;
        assert_eq!(parse(&csum), None, "bad checksum");
        assert_eq!(parse(&good[..60]), None, "truncated");
        let mut zero_opt = good.clone();
        let n = zero_opt.len();
        zero_opt[n - 7] = 0;
        assert_eq!(parse(&zero_opt), None, "option of length 0");
        // A DAD probe must not carry a source link-layer address.
        let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target().octets());
        icmp.extend_from_slice(&[OPT_SOURCE_LL, 1, 2, 0, 0, 0, 0, 1]);
        let bad = icmpv6_packet(
            Ipv6Addr::UNSPECIFIED,
            solicited_node(target()),
            icmp.clone(),
        );
        assert_eq!(parse(&bad), None);
        // From a real address it may, and the MAC is read.
        let ok = icmpv6_packet("fe80::1".parse().unwrap(), solicited_node(target()), icmp);
        assert_eq!(
            parse(&ok),
            Some(NdMessage::Solicitation {
                source: "fe80::1".parse().unwrap(),
                target: target(),
                source_mac: Some([2, 0, 0, 0, 0, 1])
            })
        );
        // Other ICMPv6 types.
        let mut echo = vec![128, 0, 0, 0, 0, 0, 0, 0];
        echo.extend_from_slice(&[0; 16]);
        let echo = icmpv6_packet("fe80::1".parse().unwrap(), target(), echo);
        assert_eq!(parse(&echo), None);
    }

    /// A tiny classic BPF interpreter for the instructions `target_filter` uses; `ancillary`
    /// gives (protocol, pkttype).
    fn run(filter: &[sock_filter], packet: &[u8], protocol: u32, pkttype: u32) -> bool {
        let mut a: u32 = 0;
        let mut pc = 0;
        loop {
            let i = filter[pc];
            pc += 1;
            match i.code {
                LD_W_ABS if i.k >= (libc::SKF_AD_OFF as u32) => {
                    let off = i.k.wrapping_sub(libc::SKF_AD_OFF as u32) as i32;
                    a = if off == libc::SKF_AD_PROTOCOL {
                        protocol
                    } else if off == libc::SKF_AD_PKTTYPE {
                        pkttype
                    } else {
                        panic!("ancillary {off}")
                    };
                }
                LD_W_ABS => {
                    let k = i.k as usize;
                    let Some(b) = packet.get(k..k + 4) else {
                        return false;
                    };
                    a = u32::from_be_bytes(b.try_into().unwrap());
                }
                LD_B_ABS => {
                    let Some(&b) = packet.get(i.k as usize) else {
                        return false;
                    };
                    a = u32::from(b);
                }
                JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JMP_JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                RET_K => return i.k != 0,
                c => panic!("opcode {c}"),
            }
        }
    }

    #[test]
    fn filter_takes_ns_and_na_for_the_target_only() {
        let f = target_filter(target());
        let mac = [2, 0, 0, 0, 0, 1];
        let ns = dad_probe(target());
        let na = advertisement(target(), "fe80::1".parse().unwrap(), mac);
        assert!(run(&f, &ns, ETH_P_IPV6, 2), "multicast NS");
        assert!(run(&f, &na, ETH_P_IPV6, 0), "NA to us");
        assert!(!run(&f, &ns, ETH_P_IPV6, PACKET_OUTGOING), "our own");
        assert!(!run(&f, &ns, ETH_P_IPV6, 5), "looped back");
        assert!(!run(&f, &ns, 0x0800, 2), "not IPv6");
        let other = dad_probe("2001:db8:1::abcd:1234:5679".parse().unwrap());
        assert!(!run(&f, &other, ETH_P_IPV6, 2), "another target");
        let mut hop = ns.clone();
        hop[7] = 254;
        assert!(!run(&f, &hop, ETH_P_IPV6, 2), "hop limit");
        let mut echo = ns.clone();
        echo[40] = 128;
        assert!(!run(&f, &echo, ETH_P_IPV6, 2), "echo request");
        assert!(!run(&f, &ns[..50], ETH_P_IPV6, 2), "short");
    }
}
