//! The classic BPF socket filter of the translator's receive socket.
//!
//! The receive socket is an `AF_PACKET`/`SOCK_DGRAM` socket bound with `ETH_P_ALL` to the uplink,
//! so the filter sees the network header at offset 0 and reads the link-layer protocol and the
//! packet type through the ancillary offsets `SKF_AD_PROTOCOL` and `SKF_AD_PKTTYPE`. It accepts
//! IPv6 packets to the CLAT's IPv6 address that were not sent by this host; when the eBPF fast
//! path is on it also rejects what the fast path translates in the kernel, so that `clatd` does
//! not translate those packets a second time.
//!
//! Pure: builds instructions, performs no I/O.

use std::net::Ipv6Addr;

use libc::sock_filter;

use crate::discovery::Nat64Prefix;

/// Packets the eBPF fast path translates in the kernel, which the receive filter must reject:
/// source inside `prefix`, next header directly TCP or UDP (no extension headers), and for UDP
/// a non-zero checksum.
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
const OFF_NEXT_HEADER: u32 = 6;
const OFF_SRC: u32 = 8;
const OFF_DST: u32 = 24;
/// The UDP checksum when UDP directly follows the 40-byte IPv6 header.
const OFF_UDP_CSUM: u32 = 40 + 6;

// Opcodes (linux/filter.h, linux/bpf_common.h). The u32 constants of `libc` are narrowed here
// once; every one fits in 16 bits.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
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
}

/// One instruction before jump resolution.
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

/// A straight-line program that ends in "accept" then "reject".
#[derive(Debug, Default)]
struct Program {
    body: Vec<Insn>,
}

impl Program {
    fn stmt(&mut self, code: u16, k: u32) {
        self.body.push(Insn {
            code,
            k,
            jt: To::Next,
            jf: To::Next,
        });
    }

    fn jeq(&mut self, k: u32, jt: To, jf: To) {
        self.body.push(Insn {
            code: JMP_JEQ_K,
            k,
            jt,
            jf,
        });
    }

    /// Resolve jumps: the body, then `ret ACCEPT_ALL`, then `ret 0`.
    fn finish(self) -> Vec<sock_filter> {
        let n = self.body.len();
        let accept_at = n;
        let reject_at = n + 1;
        let offset = |from: usize, to: To| -> u8 {
            let target = match to {
                To::Next => from + 1,
                To::Accept => accept_at,
                To::Reject => reject_at,
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

/// The receive filter: IPv6, not outgoing, destination `clat_v6`; with `exclude`, also not a
/// packet the fast path translates (see [`FastPathExclusion`]).
pub fn rx_filter(clat_v6: Ipv6Addr, exclude: Option<&FastPathExclusion>) -> Vec<sock_filter> {
    let mut p = Program::default();

    p.stmt(LD_W_ABS, ancillary(libc::SKF_AD_PROTOCOL));
    p.jeq(ETH_P_IPV6, To::Next, To::Reject);
    p.stmt(LD_W_ABS, ancillary(libc::SKF_AD_PKTTYPE));
    p.jeq(PACKET_OUTGOING, To::Reject, To::Next);

    for (i, word) in words(clat_v6).iter().enumerate() {
        p.stmt(LD_W_ABS, OFF_DST + 4 * i as u32);
        p.jeq(*word, To::Next, To::Reject);
    }

    if let Some(ex) = exclude {
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
        // TCP right after the fixed header: the fast path's. UDP: the fast path's unless its
        // checksum is zero (which the fast path leaves to clatd). Anything else: clatd's.
        p.stmt(LD_B_ABS, OFF_NEXT_HEADER);
        p.jeq(IPPROTO_TCP, To::Reject, To::Next);
        p.jeq(IPPROTO_UDP, To::Next, To::Accept);
        p.stmt(LD_H_ABS, OFF_UDP_CSUM);
        p.jeq(0, To::Accept, To::Reject);
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
        for f in [
            rx_filter(Ipv6Addr::LOCALHOST, None),
            rx_filter(Ipv6Addr::LOCALHOST, Some(&ex)),
        ] {
            for (i, insn) in f.iter().enumerate() {
                if insn.code == JMP_JEQ_K {
                    assert!(i + 1 + (insn.jt as usize) < f.len());
                    assert!(i + 1 + (insn.jf as usize) < f.len());
                }
            }
            assert_eq!(f[f.len() - 1].code, RET_K);
            assert_eq!(f[f.len() - 1].k, 0);
        }
    }
}
