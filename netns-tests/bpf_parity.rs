//! The differential test of issue 9: the eBPF fast path takes exactly packets the userspace
//! translator translates, and translates them to the same bytes.
//!
//! One corpus — the seed corpus tests/corpus/xlat (valid, edge and hostile packets both ways),
//! the same packets' kinds built under every RFC 6052 prefix length, and thousands of
//! deterministic mutations of both — goes through `clat_ingress6` / `clat_egress4` with
//! `BPF_PROG_TEST_RUN` (`FastPathTestRun`) and through the userspace core (`xlat::Translator`).
//!
//! A tc program run this way cannot redirect; it returns its verdict and leaves the packet as
//! it would have sent it. So, for every packet:
//! - `TC_ACT_REDIRECT` (the fast path translated it): userspace must translate it too, into
//!   exactly one packet and no ICMP error, and the two L3 packets must be equal — but for the
//!   IPv4 Identification of small IPv6 → IPv4 packets (random in the kernel, a counter in
//!   userspace), which is compared with the header checksum recomputed.
//! - anything else: the fast path left it (to clatd, or ingress to the host). Never
//!   `TC_ACT_SHOT` on egress (that would lose a packet clatd must see), never another value.
//! - ingress: `bpf::fast_path_takes_ingress` (the rule clatd's receive filter encodes, checked
//!   against it in tests/clatd_filter.rs) says "taken" exactly when the program redirected.
//! - seed corpus entries also state what the fast path must do (`take`, `clatd`, `pass`) and
//!   the userspace verdict, so a fast path that takes nothing cannot pass.
//!
//! The programs run in a network namespace with a veth of MTU 1500 as the uplink
//! (`bpf_check_mtu` looks it up there); userspace uses the same MTU.
//!
//! Run: `cargo test --test netns_bpf_parity` as root (skips with a notice otherwise).

#![allow(clippy::unwrap_used)] // tests may unwrap (house rules)

#[path = "../tests/xlat_common/mod.rs"]
mod xlat_common;

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use autoclat::bpf::{fast_path_takes_ingress, ClatBpfConfig, FastPathTestRun, TcVerdict};
use autoclat::discovery::Nat64Prefix;
use autoclat::xlat::{PacketBatch, Translator, Verdict, XlatConfig};
use xlat_common::*;

const MTU: u32 = 1500;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace with a veth pair (the uplink); deleted on drop, also when the test panics.
struct Netns {
    name: String,
    uplink_ifindex: u32,
}

impl Netns {
    fn new() -> Netns {
        let mut b = [0u8; 3];
        File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut b)
            .unwrap();
        let name = format!("bp-{:02x}{:02x}{:02x}", b[0], b[1], b[2]);
        sh(&["ip", "netns", "add", &name]);
        let mut ns = Netns {
            name,
            uplink_ifindex: 0,
        };
        let n = ns.name.as_str();
        sh(&[
            "ip", "-n", n, "link", "add", "up0", "mtu", "1500", "type", "veth", "peer", "name",
            "up0p",
        ]);
        sh(&["ip", "-n", n, "link", "set", "up0", "up"]);
        sh(&["ip", "-n", n, "link", "set", "up0p", "up"]);
        let out = sh(&["ip", "-n", n, "-o", "link", "show", "dev", "up0"]);
        ns.uplink_ifindex = out.split(':').next().unwrap().trim().parse().unwrap();
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A deterministic generator (xorshift64*), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Flips a few octets (mostly in the first 64), sometimes truncates or pads, and half of the
/// time makes the IPv4 header checksum right again so that the mutant reaches later checks.
fn mutate(rng: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    if p.is_empty() {
        return p;
    }
    for _ in 0..1 + rng.below(3) {
        let at = if rng.below(4) == 0 {
            rng.below(p.len())
        } else {
            rng.below(p.len().min(64))
        };
        p[at] ^= 1 + rng.below(255) as u8;
    }
    match rng.below(8) {
        0 => p.truncate(rng.below(p.len() + 1)),
        1 => p.extend(std::iter::repeat_n(0, rng.below(16))),
        _ => {}
    }
    if rng.below(2) == 0 && p.len() >= 20 && p[0] >> 4 == 4 {
        let ihl = (usize::from(p[0] & 0xf) * 4).clamp(20, p.len());
        p[10..12].fill(0);
        let c = ref_csum(ref_sum(0, &p[..ihl]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// What the fast path did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    Take,
    Clatd,
    Pass,
}

/// Tallies for the final sanity checks.
#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    /// Packets too short for the kernel to run (see `check`).
    too_short: usize,
    taken: [usize; 2],
    left: [usize; 2],
}

/// An IPv4 packet: its length field, or the whole slice when that is shorter.
fn l3_v4(p: &[u8]) -> &[u8] {
    let n = usize::from(u16::from_be_bytes([p[2], p[3]]));
    &p[..n.min(p.len())]
}

fn l3_v6(p: &[u8]) -> &[u8] {
    let n = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
    &p[..n.min(p.len())]
}

/// The IPv4 header with Identification 0 and its checksum recomputed (after checking it).
fn without_id(p: &[u8], what: &str) -> Vec<u8> {
    let mut p = p.to_vec();
    assert!(sums_ok(0, &p[..20]), "{what}: IPv4 header checksum");
    p[4..6].fill(0);
    p[10..12].fill(0);
    let c = ref_csum(ref_sum(0, &p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// Runs one packet through both and checks the parity rules; returns what the fast path did.
fn check(
    fast: &mut FastPathTestRun,
    cfg: &XlatConfig,
    v4: bool,
    pkt: &[u8],
    what: &str,
    tally: &mut Tally,
) -> (Fast, Verdict) {
    let mut t = Translator::new(*cfg);
    let (mut main, mut back) = (PacketBatch::default(), PacketBatch::default());
    let user = if v4 {
        t.ipv4_to_ipv6(pkt, &mut main, &mut back)
    } else {
        t.ipv6_to_ipv4(pkt, &mut main, &mut back)
    };
    let out = match if v4 {
        fast.egress(pkt)
    } else {
        fast.ingress(pkt)
    } {
        Ok(out) => out,
        // The kernel refuses to run a packet shorter than the IP header its Ethernet type
        // announces (EINVAL); the stack never hands the programs one. Userspace drops it.
        Err(_) if pkt.len() < if v4 { 20 } else { 40 } => {
            assert!(matches!(user, Verdict::Dropped(_)), "{what}: {user:?}");
            tally.too_short += 1;
            return (Fast::Clatd, user);
        }
        Err(e) => panic!("{what}: {e}"),
    };
    tally.runs += 1;
    let dir = usize::from(v4);
    let verdict = match out.verdict {
        TcVerdict::Redirect => Fast::Take,
        TcVerdict::Pass if v4 => Fast::Clatd,
        TcVerdict::Drop if !v4 => Fast::Clatd,
        TcVerdict::Pass => Fast::Pass,
        other => panic!("{what}: unexpected tc verdict {other:?}"),
    };
    if !v4 {
        let takes =
            fast_path_takes_ingress(pkt, cfg.v6, cfg.v4, &cfg.prefix, cfg.clat_prefix.as_ref());
        assert_eq!(
            takes,
            verdict == Fast::Take,
            "{what}: fast_path_takes_ingress disagrees with clat_ingress6 ({verdict:?})"
        );
    }
    if verdict != Fast::Take {
        tally.left[dir] += 1;
        return (verdict, user);
    }
    tally.taken[dir] += 1;
    assert_eq!(
        user,
        Verdict::Translated,
        "{what}: the fast path translated what userspace refuses"
    );
    assert_eq!(
        main.len(),
        1,
        "{what}: userspace made {} packets",
        main.len()
    );
    assert!(back.is_empty(), "{what}: userspace sent an ICMP error");
    let mine = main.get(0).unwrap();
    // The L4 checksum is carried over incrementally: valid out when it was valid in.
    let l4_ok = l4_valid(pkt) == Some(true);
    verify_opts(mine, l4_ok);
    if v4 {
        // Placeholder Ethernet header for bpf_redirect_neigh, then the test framing.
        let f = &out.frame;
        assert!(f.len() >= 28 + 40, "{what}: short output");
        assert_eq!(&f[12..14], &[0x86, 0xdd], "{what}: placeholder header type");
        let kernel = l3_v6(&f[28..]);
        assert_eq!(kernel, mine, "{what}: IPv6 bytes differ");
    } else {
        let f = &out.frame;
        assert!(f.len() >= 14 + 20, "{what}: short output");
        assert_eq!(&f[12..14], &[0x08, 0x00], "{what}: Ethernet type");
        let kernel = l3_v4(&f[14..]);
        verify_opts(kernel, l4_ok);
        let df = kernel[6] & 0x40 != 0;
        if df {
            assert_eq!(kernel, mine, "{what}: IPv4 bytes differ");
        } else {
            assert_eq!(
                without_id(kernel, what),
                without_id(mine, what),
                "{what}: IPv4 bytes differ (Identification aside)"
            );
        }
    }
    (verdict, user)
}

/// A few packets of every kind that matters, for any prefix: the fast path's (TCP, UDP) and
/// what it must leave to clatd (TTL / hop limit 0, sources and destinations userspace refuses).
fn built_cases(cfg: &XlatConfig) -> Vec<(bool, Vec<u8>, Option<Fast>)> {
    let remote = REMOTE4;
    let r6 = cfg.prefix.embed(remote);
    let out_ps = Pseudo::V4(cfg.v4, remote);
    let in_ps = Pseudo::V6(r6, cfg.v6);
    let mut cases = Vec::new();
    let v4 = |dst: Ipv4Addr, proto: u8, ttl: u8| {
        let mut h = V4::new(cfg.v4, dst, proto);
        h.ttl = ttl;
        h
    };
    let v6 = |src: Ipv6Addr, hop: u8| {
        let mut h = V6::new(src, cfg.v6);
        h.hop = hop;
        h
    };
    let data = payload(200, 7);
    cases.push((
        true,
        v4(remote, 6, 64).build(&tcp(1, 2, 3, &data, &out_ps)),
        Some(Fast::Take),
    ));
    cases.push((
        true,
        v4(remote, 17, 1).build(&udp(1, 2, &data, &out_ps, false)),
        Some(Fast::Take),
    ));
    cases.push((
        true,
        v4(remote, 17, 0).build(&udp(1, 2, &data, &out_ps, false)),
        Some(Fast::Clatd),
    ));
    for dst in [
        "239.255.255.250",
        "224.0.0.251",
        "255.255.255.255",
        "127.0.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "192.0.0.4",
    ] {
        let d: Ipv4Addr = dst.parse().unwrap();
        let ps = Pseudo::V4(cfg.v4, d);
        cases.push((
            true,
            v4(d, 17, 64).build(&udp(1, 1900, &data, &ps, false)),
            Some(Fast::Clatd),
        ));
    }
    cases.push((
        false,
        v6(r6, 64).build(6, &[], &tcp(1, 2, 3, &data, &in_ps)),
        Some(Fast::Take),
    ));
    cases.push((
        false,
        v6(r6, 1).build(17, &[], &udp(1, 2, &data, &in_ps, false)),
        Some(Fast::Take),
    ));
    cases.push((
        false,
        v6(r6, 64).build(17, &[], &udp(1, 2, &payload(1300, 3), &in_ps, false)),
        Some(Fast::Take),
    ));
    cases.push((
        false,
        v6(r6, 0).build(17, &[], &udp(1, 2, &data, &in_ps, false)),
        Some(Fast::Clatd),
    ));
    for src in [
        "127.0.0.53",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.251",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.4",
    ] {
        let s6 = cfg.prefix.embed(src.parse().unwrap());
        let ps = Pseudo::V6(s6, cfg.v6);
        cases.push((
            false,
            v6(s6, 64).build(17, &[], &udp(53, 2, &data, &ps, false)),
            Some(Fast::Clatd),
        ));
        cases.push((
            false,
            v6(s6, 64).build(6, &[], &tcp(53, 2, 3, &data, &ps)),
            Some(Fast::Clatd),
        ));
    }
    cases
}

/// Stateless mode (`cfg.clat_prefix` set): a downstream host's packets both ways, and what the
/// fast path must leave to clatd (sources and destinations userspace refuses, addresses inside
/// the CLAT prefix that are not in the RFC 6052 format).
fn stateless_cases(cfg: &XlatConfig) -> Vec<(bool, Vec<u8>, Option<Fast>)> {
    let cp = cfg.clat_prefix.unwrap();
    let lan = Ipv4Addr::new(198, 51, 100, 23);
    let lan6 = cp.embed(lan);
    let remote = Ipv4Addr::new(203, 0, 113, 10);
    let r6 = cfg.prefix.embed(remote);
    let data = payload(200, 9);
    let mut cases = Vec::new();
    let v4 = |src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8| {
        let mut h = V4::new(src, dst, proto);
        h.ttl = ttl;
        h
    };
    let out_ps = Pseudo::V4(lan, remote);
    cases.push((
        true,
        v4(lan, remote, 6, 64).build(&tcp(1, 2, 3, &data, &out_ps)),
        Some(Fast::Take),
    ));
    cases.push((
        true,
        v4(lan, remote, 17, 1).build(&udp(1, 2, &data, &out_ps, false)),
        Some(Fast::Take),
    ));
    cases.push((
        true,
        v4(lan, remote, 17, 0).build(&udp(1, 2, &data, &out_ps, false)),
        Some(Fast::Clatd),
    ));
    cases.push((
        true,
        v4(lan, remote, 17, 64).build(&udp(1, 2, &data, &out_ps, true)),
        Some(Fast::Clatd),
    ));
    // The CLAT's own address still maps to the CLAT address.
    let own_ps = Pseudo::V4(cfg.v4, remote);
    cases.push((
        true,
        v4(cfg.v4, remote, 17, 64).build(&udp(1, 2, &data, &own_ps, false)),
        Some(Fast::Take),
    ));
    for src in [
        "127.0.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
    ] {
        let s: Ipv4Addr = src.parse().unwrap();
        let ps = Pseudo::V4(s, remote);
        cases.push((
            true,
            v4(s, remote, 17, 64).build(&udp(1, 2, &data, &ps, false)),
            Some(Fast::Clatd),
        ));
    }
    for dst in ["224.0.0.251", "255.255.255.255", "127.0.0.1", "192.0.0.4"] {
        let d: Ipv4Addr = dst.parse().unwrap();
        let ps = Pseudo::V4(lan, d);
        cases.push((
            true,
            v4(lan, d, 17, 64).build(&udp(1, 2, &data, &ps, false)),
            Some(Fast::Clatd),
        ));
    }

    let v6 = |dst: Ipv6Addr, hop: u8| {
        let mut h = V6::new(r6, dst);
        h.hop = hop;
        h
    };
    let in_ps = Pseudo::V6(r6, lan6);
    cases.push((
        false,
        v6(lan6, 64).build(6, &[], &tcp(2, 1, 3, &data, &in_ps)),
        Some(Fast::Take),
    ));
    cases.push((
        false,
        v6(lan6, 1).build(17, &[], &udp(2, 1, &data, &in_ps, false)),
        Some(Fast::Take),
    ));
    cases.push((
        false,
        v6(lan6, 64).build(17, &[], &udp(2, 1, &payload(1300, 4), &in_ps, false)),
        Some(Fast::Take),
    ));
    cases.push((
        false,
        v6(lan6, 0).build(17, &[], &udp(2, 1, &data, &in_ps, false)),
        Some(Fast::Clatd),
    ));
    cases.push((
        false,
        v6(lan6, 64).build(58, &[], &icmp(129, 0, [0, 1, 0, 1], &data, &in_ps)),
        Some(Fast::Clatd),
    ));
    let mut bad_u = lan6.octets();
    bad_u[8] = 1;
    let mut bad_suffix = lan6.octets();
    bad_suffix[15] = 1;
    for dst in [
        Ipv6Addr::from(bad_u),
        Ipv6Addr::from(bad_suffix),
        cp.embed("127.0.0.1".parse().unwrap()),
        cp.embed("224.0.0.1".parse().unwrap()),
        cp.embed("255.255.255.255".parse().unwrap()),
        cp.embed(cfg.v4),
    ] {
        let ps = Pseudo::V6(r6, dst);
        cases.push((
            false,
            v6(dst, 64).build(17, &[], &udp(2, 1, &data, &ps, false)),
            Some(Fast::Clatd),
        ));
    }
    // Just outside the CLAT prefix: not the CLAT's at all (ingress passes it to the host).
    let outside = Ipv6Addr::from(u128::from(lan6) ^ (1u128 << 64));
    let ps = Pseudo::V6(r6, outside);
    cases.push((
        false,
        v6(outside, 64).build(17, &[], &udp(2, 1, &data, &ps, false)),
        Some(Fast::Pass),
    ));
    cases
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
fn fast_path_and_userspace_agree() {
    if !is_root() {
        eprintln!("SKIPPED fast_path_and_userspace_agree: needs root (network namespace, BPF)");
        return;
    }
    let ns = Netns::new();
    let path = format!("/run/netns/{}", ns.name);
    let uplink = ns.uplink_ifindex;
    // BPF_PROG_TEST_RUN runs in the caller's network namespace: a thread inside it.
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        run_all(uplink);
    })
    .join()
    .unwrap();
}

fn load(cfg: &XlatConfig, uplink: u32) -> FastPathTestRun {
    FastPathTestRun::load(&ClatBpfConfig {
        uplink_ifindex: uplink,
        tun_ifindex: 1,
        v4: cfg.v4,
        v6: cfg.v6,
        prefix: cfg.prefix,
        clat_prefix: cfg.clat_prefix,
        fast_path: true,
        uplink_is_ethernet: true,
    })
    .unwrap()
}

fn run_all(uplink: u32) {
    let mut tally = Tally::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    const MUTANTS: usize = 40;

    // The seed corpus, with its stated verdicts, and its mutants.
    let cfg = corpus_config();
    assert_eq!(cfg.mtu6, MTU);
    let mut fast = load(&cfg, uplink);
    let corpus = load_corpus();
    for e in &corpus {
        let (got, user) = check(&mut fast, &cfg, e.v4, &e.packet, &e.name, &mut tally);
        let want = match e.fast.as_str() {
            "take" => Fast::Take,
            "clatd" => Fast::Clatd,
            _ => Fast::Pass,
        };
        assert_eq!(got, want, "{}: fast path", e.name);
        assert_eq!(format!("{user:?}"), e.expect, "{}: userspace", e.name);
        for k in 0..MUTANTS {
            let m = mutate(&mut rng, e.packet.clone());
            check(
                &mut fast,
                &cfg,
                e.v4,
                &m,
                &format!("{} mutant {k}: {}", e.name, hex(&m)),
                &mut tally,
            );
        }
    }
    let c = fast.counters().unwrap();
    assert_eq!(c.errors, 0, "no helper failed half-way");

    // Built packets under every prefix length, and their mutants.
    for p in LENGTHS {
        let prefix: Nat64Prefix = p.parse().unwrap();
        let cfg = XlatConfig {
            prefix,
            mtu6: MTU,
            ..corpus_config()
        };
        let mut fast = load(&cfg, uplink);
        for (i, (v4, pkt, want)) in built_cases(&cfg).into_iter().enumerate() {
            let what = format!("{p} case {i}");
            let (got, _) = check(&mut fast, &cfg, v4, &pkt, &what, &mut tally);
            if let Some(w) = want {
                assert_eq!(got, w, "{what}: {}", hex(&pkt));
            }
            for k in 0..MUTANTS {
                let m = mutate(&mut rng, pkt.clone());
                let what = format!("{what} mutant {k}: {}", hex(&m));
                check(&mut fast, &cfg, v4, &m, &what, &mut tally);
            }
        }
        assert_eq!(fast.counters().unwrap().errors, 0, "{p}");
    }

    // Stateless mode (a CLAT prefix) under every NAT64 prefix length: the usual cases (the
    // CLAT's own address behaves as before) and the downstream host's, and their mutants.
    let clat_prefix: Nat64Prefix = "2001:db8:1:ff00::/64".parse().unwrap();
    let before = tally.taken;
    for p in LENGTHS {
        let cfg = XlatConfig {
            prefix: p.parse().unwrap(),
            mtu6: MTU,
            clat_prefix: Some(clat_prefix),
            ..corpus_config()
        };
        let mut fast = load(&cfg, uplink);
        let cases = built_cases(&cfg).into_iter().chain(stateless_cases(&cfg));
        for (i, (v4, pkt, want)) in cases.enumerate() {
            let what = format!("stateless {p} case {i}");
            let (got, _) = check(&mut fast, &cfg, v4, &pkt, &what, &mut tally);
            if let Some(w) = want {
                assert_eq!(got, w, "{what}: {}", hex(&pkt));
            }
            for k in 0..MUTANTS {
                let m = mutate(&mut rng, pkt.clone());
                let what = format!("{what} mutant {k}: {}", hex(&m));
                check(&mut fast, &cfg, v4, &m, &what, &mut tally);
            }
        }
        assert_eq!(fast.counters().unwrap().errors, 0, "stateless {p}");
    }
    assert!(
        tally.taken[0] > before[0] + 50 && tally.taken[1] > before[1] + 50,
        "stateless cases taken: {tally:?}"
    );

    eprintln!("parity: {tally:?}");
    // Both directions were exercised both ways (the corpus guarantees it; this guards the
    // harness against silently running nothing).
    assert!(tally.taken.iter().all(|&n| n >= 50), "{tally:?}");
    assert!(tally.left.iter().all(|&n| n >= 50), "{tally:?}");
}

fn hex(p: &[u8]) -> String {
    p.iter().map(|b| format!("{b:02x}")).collect()
}
