//! Shared helpers of the xlat integration tests: packet builders (checksums from an independent
//! word-at-a-time RFC 1071 implementation) and a verifier that parses outputs with etherparse
//! and checks every checksum twice (etherparse and the reference).
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::discovery::Nat64Prefix;
use autoclat::xlat::XlatConfig;
use etherparse::{Ipv4Header, Ipv6Header, TcpHeader, UdpHeader};

pub const CLAT4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 4);
pub const REMOTE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The /96 the CLAT's IPv6 address sits in, so that a mirrored translator can map it back.
pub const CLAT_SIDE: &str = "2001:db8:1:2::/96";

pub fn prefix(s: &str) -> Nat64Prefix {
    s.parse().unwrap()
}

pub fn clat6() -> Ipv6Addr {
    prefix(CLAT_SIDE).embed(CLAT4)
}

/// The translator configuration used by most tests.
pub fn cfg_with(p: &str, mtu6: u32) -> XlatConfig {
    XlatConfig {
        v4: CLAT4,
        v6: clat6(),
        prefix: prefix(p),
        mtu6,
        clat_prefix: None,
    }
}

pub fn cfg() -> XlatConfig {
    cfg_with("2001:db8:64::/96", 1500)
}

/// The translator on the far side: its IPv4 address is REMOTE4, its IPv6 address REMOTE4
/// embedded under our prefix, and our IPv6 address lies inside its prefix.
pub fn mirror(c: &XlatConfig, remote4: Ipv4Addr) -> XlatConfig {
    XlatConfig {
        v4: remote4,
        v6: c.prefix.embed(remote4),
        prefix: prefix(CLAT_SIDE),
        mtu6: c.mtu6,
        clat_prefix: None,
    }
}

// ---- reference checksum (RFC 1071, one word at a time, independent of the crate) ----

pub fn ref_sum(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u32::from(c[0]) << 8 | u32::from(c[1])
        } else {
            u32::from(c[0]) << 8
        };
        acc += w;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

pub fn ref_csum(acc: u32) -> u16 {
    let mut a = acc;
    while a > 0xffff {
        a = (a & 0xffff) + (a >> 16);
    }
    !(a as u16)
}

pub fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut a = ref_sum(0, &src.octets());
    a = ref_sum(a, &dst.octets());
    ref_sum(a, &[0, proto, (len >> 8) as u8, len as u8])
}

pub fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> u32 {
    let mut a = ref_sum(0, &src.octets());
    a = ref_sum(a, &dst.octets());
    ref_sum(a, &(len as u32).to_be_bytes()) + u32::from(next)
}

/// Whether data including its checksum sums to all ones.
pub fn sums_ok(acc: u32, data: &[u8]) -> bool {
    ref_csum(ref_sum(acc, data)) == 0
}

// ---- builders ----

#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    pub df: bool,
    pub mf: bool,
    pub offset: usize,
    pub options: Vec<u8>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: 64,
            tos: 0,
            id: 0x1234,
            df: true,
            mf: false,
            offset: 0,
            options: Vec::new(),
        }
    }
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0);
        let ihl = 20 + self.options.len();
        let total = ihl + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x40 | (ihl / 4) as u8;
        p[1] = self.tos;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&self.id.to_be_bytes());
        let flags =
            (u16::from(self.df) << 14) | (u16::from(self.mf) << 13) | (self.offset / 8) as u16;
        p[6..8].copy_from_slice(&flags.to_be_bytes());
        p[8] = self.ttl;
        p[9] = self.proto;
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        p[20..ihl].copy_from_slice(&self.options);
        let c = ref_csum(ref_sum(0, &p[..ihl]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[ihl..].copy_from_slice(payload);
        p
    }
}

#[derive(Clone, Debug)]
pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop: u8,
    pub tc: u8,
    pub flow: u32,
}

impl V6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            src,
            dst,
            hop: 64,
            tc: 0,
            flow: 0,
        }
    }
    /// `exts` are raw extension headers, `first_next` the Next Header of the fixed header.
    pub fn build(&self, first_next: u8, exts: &[u8], payload: &[u8]) -> Vec<u8> {
        let plen = exts.len() + payload.len();
        let mut p = vec![0u8; 40 + plen];
        let vtf: u32 = (6 << 28) | (u32::from(self.tc) << 20) | (self.flow & 0xfffff);
        p[0..4].copy_from_slice(&vtf.to_be_bytes());
        p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        p[6] = first_next;
        p[7] = self.hop;
        p[8..24].copy_from_slice(&self.src.octets());
        p[24..40].copy_from_slice(&self.dst.octets());
        p[40..40 + exts.len()].copy_from_slice(exts);
        p[40 + exts.len()..].copy_from_slice(payload);
        p
    }
}

pub enum Pseudo {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
    None,
}

impl Pseudo {
    fn sum(&self, proto: u8, len: usize) -> u32 {
        match *self {
            Pseudo::V4(s, d) => pseudo4(s, d, proto, len),
            Pseudo::V6(s, d) => pseudo6(s, d, proto, len),
            Pseudo::None => 0,
        }
    }
}

pub fn tcp(sport: u16, dport: u16, seq: u32, data: &[u8], ps: &Pseudo) -> Vec<u8> {
    let mut s = vec![0u8; 20 + data.len()];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&seq.to_be_bytes());
    s[12] = 5 << 4;
    s[13] = 0x18;
    s[14..16].copy_from_slice(&65535u16.to_be_bytes());
    s[20..].copy_from_slice(data);
    let c = ref_csum(ref_sum(ps.sum(6, s.len()), &s));
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A UDP datagram; `zero_csum` leaves the checksum field zero (IPv4 only).
pub fn udp(sport: u16, dport: u16, data: &[u8], ps: &Pseudo, zero_csum: bool) -> Vec<u8> {
    let mut s = vec![0u8; 8 + data.len()];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    let n = s.len() as u16;
    s[4..6].copy_from_slice(&n.to_be_bytes());
    s[8..].copy_from_slice(data);
    if !zero_csum {
        let mut c = ref_csum(ref_sum(ps.sum(17, s.len()), &s));
        if c == 0 {
            c = 0xffff;
        }
        s[6..8].copy_from_slice(&c.to_be_bytes());
    }
    s
}

/// An ICMP (Pseudo::None) or ICMPv6 (Pseudo::V6) message.
pub fn icmp(typ: u8, code: u8, rest: [u8; 4], body: &[u8], ps: &Pseudo) -> Vec<u8> {
    let mut s = vec![0u8; 8 + body.len()];
    s[0] = typ;
    s[1] = code;
    s[4..8].copy_from_slice(&rest);
    s[8..].copy_from_slice(body);
    let c = ref_csum(ref_sum(ps.sum(58, s.len()), &s));
    s[2..4].copy_from_slice(&c.to_be_bytes());
    s
}

pub fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---- verifier ----

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frag {
    pub offset: usize,
    pub more: bool,
    pub id: u32,
}

/// What a verified output packet holds.
#[derive(Debug, Clone)]
pub enum Out {
    V4 {
        h: Ipv4Header,
        l4: Vec<u8>,
    },
    V6 {
        h: Ipv6Header,
        next: u8,
        frag: Option<Frag>,
        l4: Vec<u8>,
    },
}

impl Out {
    pub fn l4(&self) -> &[u8] {
        match self {
            Out::V4 { l4, .. } | Out::V6 { l4, .. } => l4,
        }
    }
    pub fn v4(&self) -> &Ipv4Header {
        match self {
            Out::V4 { h, .. } => h,
            _ => panic!("not IPv4: {self:?}"),
        }
    }
    pub fn v6(&self) -> &Ipv6Header {
        match self {
            Out::V6 { h, .. } => h,
            _ => panic!("not IPv6: {self:?}"),
        }
    }
    pub fn frag(&self) -> Option<&Frag> {
        match self {
            Out::V6 { frag, .. } => frag.as_ref(),
            _ => None,
        }
    }
    pub fn next(&self) -> u8 {
        match self {
            Out::V4 { h, .. } => h.protocol.0,
            Out::V6 { next, .. } => *next,
        }
    }
}

/// Parses an output packet, asserting well-formedness and every checksum it can check: the
/// IPv4 header checksum, and the TCP/UDP/ICMP/ICMPv6 checksum of unfragmented packets.
pub fn verify(pkt: &[u8]) -> Out {
    verify_opts(pkt, true)
}

/// As [`verify`], checking the L4 checksum only if `l4` (the IP layer is always checked).
pub fn verify_opts(pkt: &[u8], check: bool) -> Out {
    assert!(!pkt.is_empty());
    match pkt[0] >> 4 {
        4 => {
            let (h, _) = Ipv4Header::from_slice(pkt).expect("IPv4 header parses");
            assert_eq!(usize::from(h.total_len), pkt.len(), "total length");
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert!(
                sums_ok(0, &pkt[..h.header_len()]),
                "IPv4 header checksum (reference)"
            );
            let l4 = pkt[h.header_len()..].to_vec();
            if check && !h.is_fragmenting_payload() {
                check_l4_v4(&h, &l4);
            }
            Out::V4 { h, l4 }
        }
        6 => {
            let (h, _) = Ipv6Header::from_slice(pkt).expect("IPv6 header parses");
            assert_eq!(
                usize::from(h.payload_length) + 40,
                pkt.len(),
                "payload length"
            );
            let mut next = h.next_header.0;
            let mut at = 40;
            let mut frag = None;
            if next == 44 {
                // Parsed by hand: etherparse 0.19 reads the offset and M flag from the wrong bits
                // (JulianSchmid/etherparse#150, fixed in 0.20).
                assert!(pkt.len() >= 48, "fragment header present");
                assert_eq!(pkt[41], 0, "fragment header reserved octet");
                let w = u16::from_be_bytes([pkt[42], pkt[43]]);
                assert_eq!(w & 6, 0, "fragment header reserved bits");
                frag = Some(Frag {
                    offset: usize::from(w & 0xfff8),
                    more: w & 1 != 0,
                    id: u32::from_be_bytes([pkt[44], pkt[45], pkt[46], pkt[47]]),
                });
                next = pkt[40];
                at = 48;
            }
            let l4 = pkt[at..].to_vec();
            if check && frag.is_none() {
                check_l4_v6(&h, next, &l4);
            }
            Out::V6 { h, next, frag, l4 }
        }
        v => panic!("IP version {v}"),
    }
}

fn check_l4_v4(h: &Ipv4Header, l4: &[u8]) {
    let (s, d) = (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination));
    match h.protocol.0 {
        6 => {
            let (th, data) = TcpHeader::from_slice(l4).expect("TCP header");
            let c = th
                .calc_checksum_ipv4_raw(h.source, h.destination, data)
                .unwrap();
            assert_eq!(th.checksum, c, "TCP checksum (etherparse)");
            assert!(
                sums_ok(pseudo4(s, d, 6, l4.len()), l4),
                "TCP checksum (reference)"
            );
        }
        17 => {
            let (uh, data) = UdpHeader::from_slice(l4).expect("UDP header");
            if uh.checksum != 0 {
                let c = uh
                    .calc_checksum_ipv4_raw(h.source, h.destination, data)
                    .unwrap();
                assert_eq!(uh.checksum, c, "UDP checksum (etherparse)");
                assert!(
                    sums_ok(pseudo4(s, d, 17, l4.len()), l4),
                    "UDP checksum (reference)"
                );
            }
        }
        1 => assert!(sums_ok(0, l4), "ICMP checksum (reference)"),
        _ => {}
    }
}

fn check_l4_v6(h: &Ipv6Header, next: u8, l4: &[u8]) {
    let (s, d) = (Ipv6Addr::from(h.source), Ipv6Addr::from(h.destination));
    match next {
        6 => {
            let (th, data) = TcpHeader::from_slice(l4).expect("TCP header");
            let c = th
                .calc_checksum_ipv6_raw(h.source, h.destination, data)
                .unwrap();
            assert_eq!(th.checksum, c, "TCP checksum (etherparse)");
            assert!(
                sums_ok(pseudo6(s, d, 6, l4.len()), l4),
                "TCP checksum (reference)"
            );
        }
        17 => {
            let (uh, data) = UdpHeader::from_slice(l4).expect("UDP header");
            assert_ne!(uh.checksum, 0, "IPv6 UDP checksum must not be zero");
            let c = uh
                .calc_checksum_ipv6_raw(h.source, h.destination, data)
                .unwrap();
            assert_eq!(uh.checksum, c, "UDP checksum (etherparse)");
            assert!(
                sums_ok(pseudo6(s, d, 17, l4.len()), l4),
                "UDP checksum (reference)"
            );
        }
        58 => assert!(
            sums_ok(pseudo6(s, d, 58, l4.len()), l4),
            "ICMPv6 checksum (reference)"
        ),
        _ => {}
    }
}

pub fn collect(b: &autoclat::xlat::PacketBatch) -> Vec<Vec<u8>> {
    b.iter().map(<[u8]>::to_vec).collect()
}

/// Whether the L4 checksum of an input packet is valid: `None` when it cannot be told (a
/// fragment, extension headers, a protocol without a checksum, a zero UDP checksum in IPv4).
pub fn l4_valid(pkt: &[u8]) -> Option<bool> {
    match pkt.first()? >> 4 {
        4 => {
            let (h, _) = Ipv4Header::from_slice(pkt).ok()?;
            if h.is_fragmenting_payload() || usize::from(h.total_len) > pkt.len() {
                return None;
            }
            let l4 = pkt.get(h.header_len()..usize::from(h.total_len))?;
            let (s, d) = (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination));
            match h.protocol.0 {
                6 => Some(sums_ok(pseudo4(s, d, 6, l4.len()), l4)),
                17 if l4.len() >= 8 && l4[6..8] != [0, 0] => {
                    Some(sums_ok(pseudo4(s, d, 17, l4.len()), l4))
                }
                1 => Some(sums_ok(0, l4)),
                _ => None,
            }
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            let l4 = pkt.get(40..40 + plen)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(&pkt[8..24]);
            let s = Ipv6Addr::from(a);
            a.copy_from_slice(&pkt[24..40]);
            let d = Ipv6Addr::from(a);
            match pkt[6] {
                n @ (6 | 17 | 58) => Some(sums_ok(pseudo6(s, d, n, l4.len()), l4)),
                _ => None,
            }
        }
        _ => None,
    }
}

// ---- the seed corpus (tests/corpus/xlat, written by make_corpus.py there) ----

/// One packet of the seed corpus.
#[derive(Clone, Debug)]
pub struct CorpusEntry {
    /// The file name without `.hex`.
    pub name: String,
    /// IPv4 read from the tun (true) or IPv6 received on the uplink.
    pub v4: bool,
    /// The userspace translator's verdict under [`corpus_config`], as `{:?}` prints it.
    pub expect: String,
    /// What the eBPF fast path does: `take`, `clatd` or `pass`.
    pub fast: String,
    pub packet: Vec<u8>,
}

/// The CLAT every corpus packet is for.
pub fn corpus_config() -> XlatConfig {
    XlatConfig {
        v4: CLAT4,
        v6: "2001:db8:1::a".parse().unwrap(),
        prefix: prefix("2001:db8:64::/96"),
        mtu6: 1500,
        clat_prefix: None,
    }
}

/// Every `*.hex` file of tests/corpus/xlat, sorted by name.
pub fn load_corpus() -> Vec<CorpusEntry> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/xlat");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    names.sort();
    let entries: Vec<CorpusEntry> = names
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                    .unwrap_or_else(|| panic!("{} lacks `# {key}:`", path.display()))
                    .trim()
                    .to_string()
            };
            let (dir, expect, fast) = (field("dir"), field("expect"), field("fast"));
            let hex: String = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
                .collect();
            let packet = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert!(dir == "v4" || dir == "v6", "{}: dir {dir}", path.display());
            assert!(
                ["take", "clatd", "pass"].contains(&fast.as_str()),
                "{}: fast {fast}",
                path.display()
            );
            CorpusEntry {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                v4: dir == "v4",
                expect,
                fast,
                packet,
            }
        })
        .collect();
    assert!(entries.len() >= 40, "the corpus is in tests/corpus/xlat");
    entries
}
