//! The classic BPF socket filter of the translator's receive socket.
//!
//! The receive socket is an `AF_PACKET` socket bound with `ETH_P_ALL` to the uplink. As a
//! `SOCK_DGRAM` socket the filter sees the network header at offset 0; as a `SOCK_RAW` socket
//! (the one with virtio headers, see `sockets::RxFraming`) it sees the link-layer header first,
//! and every packet offset is shifted by that header's length. It reads the link-layer protocol and the
//! packet type through the ancillary offsets `SKF_AD_PROTOCOL` and `SKF_AD_PKTTYPE`. It accepts
//! IPv6 packets to the CLAT's IPv6 address (and, in stateless mode, to any address inside the
//! CLAT prefix, a /64: its first two 32-bit words) that were not sent by this host; when the eBPF fast
//! path is on it also rejects exactly what the fast path translates in the kernel
//! (`crate::bpf::fast_path_takes_ingress`), so that `clatd` does not translate those packets a
//! second time and still sees every other one (hop limit 0, which it answers with Time
//! Exceeded; sources it refuses, which it counts).
//!
//! Pure: builds instructions, performs no I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use libc::sock_filter;

use crate::nat64::Nat64Prefix;

/// Packets the eBPF fast path translates in the kernel, which the receive filter must reject:
/// the rule of `crate::bpf::fast_path_takes_ingress` (source inside `prefix` with a remote
/// unicast IPv4 address embedded, next header directly TCP or UDP, hop limit not 0, consistent
/// lengths, for UDP a non-zero checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPathExclusion {
    /// The NAT64 prefix the fast path translates from.
    pub prefix: Nat64Prefix,
}

/// Snap length returned on accept: the whole packet.
const ACCEPT_ALL: u32 = u32::MAX;

const ETH_P_IPV6: u32 = 0x86dd;
const PACKET_OUTGOING: u32 = 4;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Offsets in the IPv6 header (the socket delivers from the network header on).
const OFF_PAYLOAD_LEN: u32 = 4;
const OFF_NEXT_HEADER: u32 = 6;
const OFF_HOP_LIMIT: u32 = 7;
const OFF_SRC: u32 = 8;
const OFF_DST: u32 = 24;
/// The UDP checksum when UDP directly follows the 40-byte IPv6 header.
const OFF_UDP_CSUM: u32 = 40 + 6;

// Opcodes (linux/filter.h, linux/bpf_common.h). The u32 constants of `libc` are narrowed here
// once; every one fits in 16 bits.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const LD_W_LEN: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_LEN) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const ALU_ADD_K: u16 = (libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K) as u16;
const MISC_TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JMP_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JMP_JGE_X: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_X) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The ancillary offset `SKF_AD_OFF + x` as the unsigned `k` of a load.
const fn ancillary(x: i32) -> u32 {
    (libc::SKF_AD_OFF + x) as u32
}

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum To {
    /// The following instruction.
    Next,
    /// The final "accept" instruction.
    Accept,
    /// The final "reject" instruction.
    Reject,
    /// The instruction placed at this label (forward jumps only).
    Label(&'static str),
}

/// One instruction before jump resolution.
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

/// A program of forward jumps that ends in "accept" then "reject".
#[derive(Debug, Default)]
struct Program {
    body: Vec<Insn>,
    labels: Vec<(&'static str, usize)>,
    /// The link-layer header before the IPv6 header (0 on a `SOCK_DGRAM` socket).
    link_len: u32,
}

/// The absolute loads (whose `k` is an offset into the packet unless it is ancillary).
const fn is_abs_load(code: u16) -> bool {
    code == LD_W_ABS || code == LD_H_ABS || code == LD_B_ABS
}

impl Program {
    /// One instruction; a packet offset of an absolute load is taken from the IPv6 header
    /// and moved past the link-layer header here (ancillary offsets, negative as i32, stay).
    fn stmt(&mut self, code: u16, k: u32) {
        let k = if is_abs_load(code) && (k as i32) >= 0 {
            k + self.link_len
        } else {
            k
        };
        self.body.push(Insn {
            code,
            k,
            jt: To::Next,
            jf: To::Next,
        });
    }

    fn jeq(&mut self, k: u32, jt: To, jf: To) {
        self.jump(JMP_JEQ_K, k, jt, jf);
    }

    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.body.push(Insn { code, k, jt, jf });
    }

    /// An embedded IPv4 address whose first octet (at `first`) is not remote unicast (0/8,
    /// 127/8, 224/4, 240/4): accept (clatd's), else go on.
    fn accept_unless_remote_unicast(&mut self, first: u32) {
        self.stmt(LD_B_ABS, first);
        self.jeq(0, To::Accept, To::Next);
        self.jeq(127, To::Accept, To::Next);
        self.jump(JMP_JGE_K, 224, To::Accept, To::Next);
    }

    /// Accept when the octets at `pos` embed `v4` (our own address: clatd's), else go to
    /// `otherwise`; without `v4` (not known), go to `otherwise` at once.
    fn accept_if_ours(&mut self, pos: [u32; 4], v4: Option<Ipv4Addr>, otherwise: To) {
        let Some(v4) = v4 else {
            self.jeq(0, otherwise, otherwise);
            return;
        };
        for (i, (&at, octet)) in pos.iter().zip(v4.octets()).enumerate() {
            self.stmt(LD_B_ABS, at);
            let last = i == 3;
            self.jeq(
                u32::from(octet),
                if last { To::Accept } else { To::Next },
                otherwise,
            );
        }
    }

    /// Names the next instruction.
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.body.len()));
    }

    /// Resolve jumps: the body, then `ret ACCEPT_ALL`, then `ret 0`.
    fn finish(self) -> Vec<sock_filter> {
        let n = self.body.len();
        let accept_at = n;
        let reject_at = n + 1;
        let labels = &self.labels;
        let offset = |from: usize, to: To| -> u8 {
            let target = match to {
                To::Next => from + 1,
                To::Accept => accept_at,
                To::Reject => reject_at,
                // A label the program never placed is a bug caught by the unit tests; it
                // rejects rather than run off the end.
                To::Label(name) => labels
                    .iter()
                    .find(|(l, _)| *l == name)
                    .map_or(reject_at, |&(_, at)| at),
            };
            // Jumps are relative to the next instruction and must fit in a u8; the programs
            // built here are at most a few dozen instructions long.
            u8::try_from(target - from - 1).unwrap_or(u8::MAX)
        };
        let mut out: Vec<sock_filter> = self
            .body
            .iter()
            .enumerate()
            .map(|(i, insn)| sock_filter {
                code: insn.code,
                jt: offset(i, insn.jt),
                jf: offset(i, insn.jf),
                k: insn.k,
            })
            .collect();
        out.push(sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: ACCEPT_ALL,
        });
        out.push(sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        });
        out
    }
}

/// The receive filter: IPv6, not outgoing, destination `clat_v6` or (stateless mode) inside
/// `clat_prefix`, a /64; with `exclude`, also not a packet the fast path translates (see
/// [`FastPathExclusion`]).
///
/// Without the CLAT's IPv4 address this filter cannot tell packets from the CLAT's own embedded
/// address (which the fast path leaves to clatd) from others: it rejects those too, which
/// only loses clatd's count of them (it would drop them as not ours). [`rx_filter_exact`]
/// knows the address and mirrors the fast path exactly.
pub fn rx_filter(
    clat_v6: Ipv6Addr,
    clat_prefix: Option<&Nat64Prefix>,
    exclude: Option<&FastPathExclusion>,
) -> Vec<sock_filter> {
    build(0, clat_v6, None, clat_prefix, exclude)
}

/// [`rx_filter`] that also knows the CLAT's IPv4 address `clat_v4`, so that with `exclude` it
/// rejects exactly the packets `crate::bpf::fast_path_takes_ingress` says the fast path takes.
pub fn rx_filter_exact(
    clat_v6: Ipv6Addr,
    clat_v4: Ipv4Addr,
    clat_prefix: Option<&Nat64Prefix>,
    exclude: Option<&FastPathExclusion>,
) -> Vec<sock_filter> {
    build(0, clat_v6, Some(clat_v4), clat_prefix, exclude)
}

/// [`rx_filter`] (with `clat_v4`: [`rx_filter_exact`]) for a socket that delivers `link_len`
/// octets of link-layer header before the IPv6 header (a `SOCK_RAW` packet socket: 14 on
/// Ethernet). The same verdicts on the same IPv6 packets.
pub fn rx_filter_behind(
    link_len: u8,
    clat_v6: Ipv6Addr,
    clat_v4: Option<Ipv4Addr>,
    clat_prefix: Option<&Nat64Prefix>,
    exclude: Option<&FastPathExclusion>,
) -> Vec<sock_filter> {
    build(u32::from(link_len), clat_v6, clat_v4, clat_prefix, exclude)
}

fn build(
    link_len: u32,
    clat_v6: Ipv6Addr,
    clat_v4: Option<Ipv4Addr>,
    clat_prefix: Option<&Nat64Prefix>,
    exclude: Option<&FastPathExclusion>,
) -> Vec<sock_filter> {
    let mut p = Program {
        link_len,
        ..Program::default()
    };

    p.stmt(LD_W_ABS, ancillary(libc::SKF_AD_PROTOCOL));
    p.jeq(ETH_P_IPV6, To::Next, To::Reject);
    p.stmt(LD_W_ABS, ancillary(libc::SKF_AD_PKTTYPE));
    p.jeq(PACKET_OUTGOING, To::Reject, To::Next);

    // After the destination checks: the exclusion's checks of the source, or accept.
    let common = if exclude.is_some() {
        To::Label("common")
    } else {
        To::Accept
    };
    let not_v6 = if clat_prefix.is_some() {
        To::Label("clat_prefix")
    } else {
        To::Reject
    };
    for (i, word) in words(clat_v6).iter().enumerate() {
        p.stmt(LD_W_ABS, OFF_DST + 4 * i as u32);
        p.jeq(*word, if i == 3 { common } else { To::Next }, not_v6);
    }

    if let Some(cp) = clat_prefix {
        // Stateless mode: a destination inside the CLAT prefix (a /64: two words).
        p.label("clat_prefix");
        let w = words(cp.addr());
        p.stmt(LD_W_ABS, OFF_DST);
        p.jeq(w[0], To::Next, To::Reject);
        p.stmt(LD_W_ABS, OFF_DST + 4);
        p.jeq(
            w[1],
            if exclude.is_some() {
                To::Next
            } else {
                To::Accept
            },
            To::Reject,
        );
        if exclude.is_some() {
            // The fast path takes only RFC 6052 addresses (u-octet and suffix zero) that embed
            // a downstream unicast address other than ours; clatd drops or counts the others.
            for off in [8u32, 13, 14, 15] {
                p.stmt(LD_B_ABS, OFF_DST + off);
                p.jeq(0, To::Next, To::Accept);
            }
            let pos = cp.v4_octet_positions().map(|i| OFF_DST + i as u32);
            p.accept_unless_remote_unicast(pos[0]);
            // Without our IPv4 address the filter cannot tell: it lets the exclusion
            // decide (clatd would only drop our own embedded address as not ours).
            p.accept_if_ours(pos, clat_v4, common);
        }
    }

    if let Some(ex) = exclude {
        p.label("common");
        // Source outside the prefix: clatd's (any mismatch jumps to accept).
        let len = u32::from(ex.prefix.len());
        let prefix = words(ex.prefix.addr());
        for (i, word) in prefix.iter().enumerate() {
            let first_bit = 32 * i as u32;
            if first_bit >= len {
                break;
            }
            p.stmt(LD_W_ABS, OFF_SRC + 4 * i as u32);
            let bits = (len - first_bit).min(32);
            if bits < 32 {
                let mask = u32::MAX << (32 - bits);
                p.stmt(ALU_AND_K, mask);
            }
            p.jeq(*word, To::Next, To::Accept);
        }
        // Hop limit 0: clatd answers with Time Exceeded.
        p.stmt(LD_B_ABS, OFF_HOP_LIMIT);
        p.jeq(0, To::Accept, To::Next);
        // The embedded IPv4 source must be remote unicast: not 0/8, 127/8, 224/4, 240/4.
        let pos = ex.prefix.v4_octet_positions().map(|i| OFF_SRC + i as u32);
        p.accept_unless_remote_unicast(pos[0]);
        // Lengths: a payload of at least a UDP header that fits the packet (the socket sees
        // the packet from its link-layer header, if any, on, padding included) and leaves the
        // IPv4 packet within 65535 octets.
        p.stmt(LD_H_ABS, OFF_PAYLOAD_LEN);
        p.jump(JMP_JGT_K, 65535 - 20, To::Accept, To::Next);
        p.jump(JMP_JGE_K, 8, To::Next, To::Accept);
        p.stmt(ALU_ADD_K, 40 + link_len);
        p.stmt(MISC_TAX, 0);
        p.stmt(LD_W_LEN, 0);
        p.jump(JMP_JGE_X, 0, To::Next, To::Accept);
        // TCP right after the fixed header, with a whole TCP header: the fast path's. UDP: the
        // fast path's unless its checksum is zero. Anything else: clatd's.
        p.stmt(LD_B_ABS, OFF_NEXT_HEADER);
        p.jeq(IPPROTO_TCP, To::Label("tcp"), To::Next);
        p.jeq(IPPROTO_UDP, To::Next, To::Accept);
        p.stmt(LD_H_ABS, OFF_UDP_CSUM);
        p.jeq(0, To::Accept, To::Label("ours"));
        p.label("tcp");
        p.stmt(LD_H_ABS, OFF_PAYLOAD_LEN);
        p.jump(JMP_JGE_K, 20, To::Next, To::Accept);
        // Last, our own IPv4 address embedded as the source: clatd's (it drops it as not
        // ours); any other source: the fast path's.
        p.label("ours");
        p.accept_if_ours(pos, clat_v4, To::Reject);
    }

    p.finish()
}

/// The address as four big-endian 32-bit words, as `BPF_LD|BPF_W|BPF_ABS` loads them.
fn words(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    [0, 1, 2, 3].map(|i| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jumps_stay_inside_the_program() {
        let ex = FastPathExclusion {
            prefix: "2001:db8:100::/40".parse().unwrap(),
        };
        let cp: Nat64Prefix = "2001:db8:1:ff00::/64".parse().unwrap();
        let v4 = Ipv4Addr::new(192, 0, 0, 4);
        for f in [
            rx_filter(Ipv6Addr::LOCALHOST, None, None),
            rx_filter(Ipv6Addr::LOCALHOST, None, Some(&ex)),
            rx_filter_exact(Ipv6Addr::LOCALHOST, v4, None, Some(&ex)),
            rx_filter(Ipv6Addr::LOCALHOST, Some(&cp), None),
            rx_filter(Ipv6Addr::LOCALHOST, Some(&cp), Some(&ex)),
            rx_filter_exact(Ipv6Addr::LOCALHOST, v4, Some(&cp), Some(&ex)),
        ] {
            for (i, insn) in f.iter().enumerate() {
                if u32::from(insn.code) & 0x07 == libc::BPF_JMP {
                    assert!(i + 1 + (insn.jt as usize) < f.len());
                    assert!(i + 1 + (insn.jf as usize) < f.len());
                }
            }
            assert_eq!(f[f.len() - 1].code, RET_K);
            assert_eq!(f[f.len() - 1].k, 0);
        }
    }
}
