//! autoclat's own nftables table, spoken directly over `NETLINK_NETFILTER` (no `nft` binary).
//!
//! Router mode forwards IPv4 from downstream interfaces (a LAN bridge, `docker0`, `virbr0`)
//! out through the CLAT tun interfaces (`v4-eth0`, …). The forwarding needs TCP MSS clamping
//! to the route MTU, per-tun counters, and in NAT44 mode a masquerade of everything leaving a
//! tun that does not already carry the CLAT's own IPv4 address. All of that lives in one table,
//! family `ip`, named [`TABLE`]; nothing here reads or writes any other table.
//!
//! ```text
//! table ip autoclat {
//!   chain forward { type filter hook forward priority mangle; policy accept;
//!     iifname D oifname T tcp flags syn tcp option maxseg size set rt mtu   # per (D, T)
//!     iifname T oifname D tcp flags syn tcp option maxseg size set rt mtu   # per (D, T)
//!     iifname D oifname T counter comment "out:T"                           # per (D, T)
//!     iifname T oifname D counter comment "in:T"                            # per (D, T)
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     oifname T ip saddr != A counter masquerade comment "masq:T"           # NAT44 tuns only
//!   }
//! }
//! ```
//!
//! The encoding is pure ([`replace_batch`], [`delete_batch`], [`parse_counters`]); the socket
//! I/O ([`apply`], [`remove`], [`exists`], [`counters`]) is a thin blocking layer at the end
//! (a fresh socket per call, with a receive timeout, so it never hangs; call it from
//! `spawn_blocking` in async code). Every ruleset change is one nfnetlink batch, which the
//! kernel applies atomically: a replace is `NEWTABLE` (create if missing), `DELTABLE`,
//! `NEWTABLE` and then the chains and rules, so it works whether or not the table existed and
//! nobody ever sees half a table.
//!
//! Constants are from the kernel's `include/uapi/linux/netfilter/nf_tables.h`,
//! `nfnetlink.h`, `netfilter.h` and `netlink.h`. nf_tables integers are big-endian.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;

use crate::nlmsg::{self, NlmsgError, Request, NLA_F_NESTED, NLMSG_DONE, NLMSG_ERROR};
use crate::nlsock::NlSocket;

/// The one table autoclat owns (family `ip`).
pub const TABLE: &str = "autoclat";
/// The base chain on the forward hook: MSS clamping and the per-tun counters.
pub const FORWARD: &str = "forward";
/// The base chain on the postrouting hook (NAT44 masquerade); only present when needed.
pub const POSTROUTING: &str = "postrouting";

// --- netlink / nfnetlink ---------------------------------------------------------------------

/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: libc::c_int = 12;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
/// `NLMSG_MIN_TYPE`: the batch delimiters.
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFPROTO_UNSPEC` / `NFPROTO_IPV4`.
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
/// `sizeof(struct nfgenmsg)`.
const NFGENMSG_LEN: usize = 4;

// enum nf_tables_msg_types
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

// enum nft_table_attributes
const NFTA_TABLE_NAME: u16 = 1;
// enum nft_chain_attributes
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
// enum nft_hook_attributes
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
// enum nft_rule_attributes
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
// enum nft_list_attributes / nft_expr_attributes / nft_data_attributes
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
// enum nft_meta_attributes / nft_meta_keys
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
// enum nft_cmp_attributes / nft_cmp_ops
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
// enum nft_payload_attributes / nft_payload_bases
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
// enum nft_bitwise_attributes
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
// enum nft_rt_attributes / nft_rt_keys
const NFTA_RT_DREG: u16 = 1;
const NFTA_RT_KEY: u16 = 2;
const NFT_RT_TCPMSS: u32 = 3;
// enum nft_byteorder_attributes / nft_byteorder_ops
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFT_BYTEORDER_HTON: u32 = 1;
// enum nft_exthdr_attributes / nft_exthdr_op
const NFTA_EXTHDR_TYPE: u16 = 2;
const NFTA_EXTHDR_OFFSET: u16 = 3;
const NFTA_EXTHDR_LEN: u16 = 4;
const NFTA_EXTHDR_OP: u16 = 6;
const NFTA_EXTHDR_SREG: u16 = 7;
const NFT_EXTHDR_OP_TCPOPT: u32 = 1;
// enum nft_counter_attributes
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
// enum nft_registers
const NFT_REG_1: u32 = 1;
// enum nf_inet_hooks, NF_ACCEPT
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
/// `NF_IP_PRI_MANGLE` (`priority mangle`) and `NF_IP_PRI_NAT_SRC` (`priority srcnat`).
const PRIORITY_MANGLE: i32 = -150;
const PRIORITY_SRCNAT: i32 = 100;

/// `IFNAMSIZ`: interface names are compared as this many bytes, zero-padded.
const IFNAMSIZ: usize = 16;
const IPPROTO_TCP: u8 = 6;
/// TCP SYN in the flags byte (offset 13 of the TCP header).
const TCP_FLAG_SYN: u8 = 0x02;
/// TCP option kind 2 (maximum segment size); its value is 2 bytes at offset 2.
const TCPOPT_MAXSEG: u8 = 2;
/// `NFTNL_UDATA_RULE_COMMENT`: rule user data is libnftnl's TLV list, so `nft list` shows our
/// marker as `comment "out:v4-eth0"`.
const UDATA_RULE_COMMENT: u8 = 0;

/// How long the I/O functions wait for the kernel's answer.
const TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 5,
    tv_usec: 0,
};

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// An interface name the kernel could never have (empty, 16 bytes or more, `/`, `:`,
    /// whitespace, NUL, `.` or `..`).
    #[error("{0:?} is not a valid interface name")]
    BadName(String),
    /// The netlink socket itself failed (including a timeout waiting for the kernel).
    #[error("nf_tables netlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused a message; the whole batch was rolled back.
    #[error("nf_tables refused {message}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// Which message, e.g. `NEWRULE forward "out:v4-eth0"`.
        message: String,
        /// The (positive) errno.
        errno: i32,
    },
    /// An answer that is not well-formed netlink.
    #[error("malformed nf_tables answer: {0}")]
    Wire(#[from] NlmsgError),
}

impl NftError {
    /// The kernel's errno, for [`NftError::Kernel`] and socket errors that carry one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What the table should do: concrete interface names, no wildcards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// Downstream (LAN-side) interfaces whose IPv4 is forwarded out through the CLATs.
    pub downstream: Vec<String>,
    /// The CLAT tun interfaces.
    pub clats: Vec<ClatOut>,
}

/// One CLAT tun interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClatOut {
    /// The tun's name, e.g. `v4-eth0`.
    pub tun: String,
    /// `Some(clat_v4)`: NAT44 mode, masquerade packets leaving `tun` whose source is not the
    /// CLAT's own IPv4 address. `None`: stateless mode, no NAT.
    pub masquerade_from_not: Option<Ipv4Addr>,
}

/// Forwarded traffic through one tun, from the forward chain's counter rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Downstream → tun.
    pub out_packets: u64,
    pub out_bytes: u64,
    /// Tun → downstream.
    pub in_packets: u64,
    pub in_bytes: u64,
}

// --- attribute and message building (pure) --------------------------------------------------

/// A list of attributes being built (the data of a nested attribute, or a message's tail).
#[derive(Debug, Default, Clone)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn bytes(mut self, ty: u16, data: &[u8]) -> Self {
        nlmsg::put_attr(&mut self.0, ty, data);
        self
    }
    fn u32(self, ty: u16, v: u32) -> Self {
        self.bytes(ty, &v.to_be_bytes())
    }
    /// A NUL-terminated string (`NLA_STRING` / `NLA_NUL_STRING`).
    fn str(self, ty: u16, s: &str) -> Self {
        let mut d = Vec::with_capacity(s.len() + 1);
        d.extend_from_slice(s.as_bytes());
        d.push(0);
        self.bytes(ty, &d)
    }
    fn nest(self, ty: u16, inner: Attrs) -> Self {
        self.bytes(NLA_F_NESTED | ty, &inner.0)
    }
    /// `ty` = `{ NFTA_DATA_VALUE: value }`.
    fn data(self, ty: u16, value: &[u8]) -> Self {
        self.nest(ty, Attrs::default().bytes(NFTA_DATA_VALUE, value))
    }
}

/// `struct nfgenmsg`.
fn nfgenmsg(family: u8, res_id: u16) -> [u8; NFGENMSG_LEN] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One nf_tables message of family `ip`.
fn message(msg: u16, flags: u16, seq: u32, attrs: Attrs) -> Vec<u8> {
    Request::new(nft_type(msg), flags, seq)
        .fixed(&nfgenmsg(NFPROTO_IPV4, 0))
        .fixed(&attrs.0)
        .finish()
}

/// A batch: `BATCH_BEGIN`, messages with consecutive sequence numbers, `BATCH_END`.
struct Batch {
    bytes: Vec<u8>,
    seq: u32,
}

impl Batch {
    fn new(seq: u32) -> Self {
        let bytes = Request::new(NFNL_MSG_BATCH_BEGIN, 0, seq)
            .fixed(&nfgenmsg(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES))
            .finish();
        Self { bytes, seq }
    }
    /// Appends one message, acknowledged on its own so an error names it.
    fn push(&mut self, msg: u16, flags: u16, attrs: Attrs) {
        self.seq = self.seq.wrapping_add(1);
        let m = message(msg, NLM_F_ACK | flags, self.seq, attrs);
        self.bytes.extend_from_slice(&m);
    }
    fn finish(mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let end = Request::new(NFNL_MSG_BATCH_END, 0, self.seq)
            .fixed(&nfgenmsg(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES))
            .finish();
        self.bytes.extend_from_slice(&end);
        self.bytes
    }
}

/// Whether the kernel would accept `name` as an interface name (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

fn ifname_bytes(name: &str) -> [u8; IFNAMSIZ] {
    let mut b = [0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// One expression: a `NFTA_LIST_ELEM` of `{ NFTA_EXPR_NAME, NFTA_EXPR_DATA }`.
fn expr(name: &str, data: Option<Attrs>) -> Attrs {
    let mut e = Attrs::default().str(NFTA_EXPR_NAME, name);
    if let Some(d) = data {
        e = e.nest(NFTA_EXPR_DATA, d);
    }
    e
}

/// `meta load <key> => reg 1`.
fn meta(key: u32) -> Attrs {
    expr(
        "meta",
        Some(
            Attrs::default()
                .u32(NFTA_META_DREG, NFT_REG_1)
                .u32(NFTA_META_KEY, key),
        ),
    )
}

/// `cmp <op> reg 1 <value>`.
fn cmp(op: u32, value: &[u8]) -> Attrs {
    expr(
        "cmp",
        Some(
            Attrs::default()
                .u32(NFTA_CMP_SREG, NFT_REG_1)
                .u32(NFTA_CMP_OP, op)
                .data(NFTA_CMP_DATA, value),
        ),
    )
}

/// `payload load <len>b @ <base> + <offset> => reg 1`.
fn payload(base: u32, offset: u32, len: u32) -> Attrs {
    expr(
        "payload",
        Some(
            Attrs::default()
                .u32(NFTA_PAYLOAD_DREG, NFT_REG_1)
                .u32(NFTA_PAYLOAD_BASE, base)
                .u32(NFTA_PAYLOAD_OFFSET, offset)
                .u32(NFTA_PAYLOAD_LEN, len),
        ),
    )
}

/// `bitwise reg 1 = (reg 1 & mask) ^ 0`.
fn bitwise_and(mask: &[u8]) -> Attrs {
    let len = u32::try_from(mask.len()).unwrap_or(u32::MAX);
    expr(
        "bitwise",
        Some(
            Attrs::default()
                .u32(NFTA_BITWISE_SREG, NFT_REG_1)
                .u32(NFTA_BITWISE_DREG, NFT_REG_1)
                .u32(NFTA_BITWISE_LEN, len)
                .data(NFTA_BITWISE_MASK, mask)
                .data(NFTA_BITWISE_XOR, &vec![0; mask.len()]),
        ),
    )
}

/// `iifname`/`oifname` `== name`: two expressions.
fn ifname_is(key: u32, name: &str) -> [Attrs; 2] {
    [meta(key), cmp(NFT_CMP_EQ, &ifname_bytes(name))]
}

/// `iifname <iif> oifname <oif>`.
fn from_to(iif: &str, oif: &str) -> Vec<Attrs> {
    let mut v = Vec::with_capacity(5);
    v.extend(ifname_is(NFT_META_IIFNAME, iif));
    v.extend(ifname_is(NFT_META_OIFNAME, oif));
    v
}

/// `tcp flags syn tcp option maxseg size set rt mtu`, as `nft` encodes it: `meta l4proto tcp`,
/// the SYN bit of the flags byte, the route's MSS (host order) swapped to network order, and
/// the TCP-option write (which only ever lowers the MSS).
fn clamp_mss() -> Vec<Attrs> {
    vec![
        meta(NFT_META_L4PROTO),
        cmp(NFT_CMP_EQ, &[IPPROTO_TCP]),
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1),
        bitwise_and(&[TCP_FLAG_SYN]),
        cmp(NFT_CMP_NEQ, &[0]),
        expr(
            "rt",
            Some(
                Attrs::default()
                    .u32(NFTA_RT_DREG, NFT_REG_1)
                    .u32(NFTA_RT_KEY, NFT_RT_TCPMSS),
            ),
        ),
        expr(
            "byteorder",
            Some(
                Attrs::default()
                    .u32(NFTA_BYTEORDER_SREG, NFT_REG_1)
                    .u32(NFTA_BYTEORDER_DREG, NFT_REG_1)
                    .u32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON)
                    .u32(NFTA_BYTEORDER_LEN, 2)
                    .u32(NFTA_BYTEORDER_SIZE, 2),
            ),
        ),
        expr(
            "exthdr",
            Some(
                Attrs::default()
                    .bytes(NFTA_EXTHDR_TYPE, &[TCPOPT_MAXSEG])
                    .u32(NFTA_EXTHDR_OFFSET, 2)
                    .u32(NFTA_EXTHDR_LEN, 2)
                    .u32(NFTA_EXTHDR_OP, NFT_EXTHDR_OP_TCPOPT)
                    .u32(NFTA_EXTHDR_SREG, NFT_REG_1),
            ),
        ),
    ]
}

fn counter() -> Attrs {
    expr("counter", None)
}

/// Rule user data: libnftnl's comment TLV `{type 0, len, "text\0"}`.
fn comment(text: &str) -> Vec<u8> {
    let len = u8::try_from(text.len() + 1).unwrap_or(u8::MAX);
    let mut u = vec![UDATA_RULE_COMMENT, len];
    u.extend_from_slice(&text.as_bytes()[..usize::from(len) - 1]);
    u.push(0);
    u
}

/// The comment in rule user data, if it carries one.
fn parse_comment(udata: &[u8]) -> Option<&str> {
    let mut rest = udata;
    while let [ty, len, tail @ ..] = rest {
        let value = tail.get(..usize::from(*len))?;
        if *ty == UDATA_RULE_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return std::str::from_utf8(text).ok();
        }
        rest = &tail[usize::from(*len)..];
    }
    None
}

fn rule(batch: &mut Batch, chain: &str, exprs: Vec<Attrs>, note: &str) {
    let list = exprs
        .into_iter()
        .fold(Attrs::default(), |l, e| l.nest(NFTA_LIST_ELEM, e));
    let attrs = Attrs::default()
        .str(NFTA_RULE_TABLE, TABLE)
        .str(NFTA_RULE_CHAIN, chain)
        .nest(NFTA_RULE_EXPRESSIONS, list)
        .bytes(NFTA_RULE_USERDATA, &comment(note));
    batch.push(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, attrs);
}

fn base_chain(batch: &mut Batch, name: &str, kind: &str, hook: u32, priority: i32) {
    let attrs = Attrs::default()
        .str(NFTA_CHAIN_TABLE, TABLE)
        .str(NFTA_CHAIN_NAME, name)
        .nest(
            NFTA_CHAIN_HOOK,
            Attrs::default()
                .u32(NFTA_HOOK_HOOKNUM, hook)
                .bytes(NFTA_HOOK_PRIORITY, &priority.to_be_bytes()),
        )
        .u32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .str(NFTA_CHAIN_TYPE, kind);
    batch.push(NFT_MSG_NEWCHAIN, NLM_F_CREATE, attrs);
}

fn table_attrs() -> Attrs {
    Attrs::default().str(NFTA_TABLE_NAME, TABLE)
}

/// One atomic batch that (re)creates the whole table for `spec`: `BATCH_BEGIN` (sequence
/// number `seq`), `NEWTABLE` (create if missing), `DELTABLE`, `NEWTABLE`, the chains and rules,
/// `BATCH_END`, each message with the next sequence number. Fails only on an interface name
/// the kernel could never have.
pub fn replace_batch(spec: &Spec, seq: u32) -> Result<Vec<u8>, NftError> {
    let names = spec
        .downstream
        .iter()
        .chain(spec.clats.iter().map(|c| &c.tun));
    if let Some(bad) = names.into_iter().find(|n| !valid_ifname(n)) {
        return Err(NftError::BadName(bad.clone()));
    }
    let mut b = Batch::new(seq);
    b.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, table_attrs());
    b.push(NFT_MSG_DELTABLE, 0, table_attrs());
    b.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, table_attrs());

    base_chain(&mut b, FORWARD, "filter", NF_INET_FORWARD, PRIORITY_MANGLE);
    for c in &spec.clats {
        for d in &spec.downstream {
            let mut out = from_to(d, &c.tun);
            out.extend(clamp_mss());
            rule(&mut b, FORWARD, out, &format!("mss:{}", c.tun));
            let mut back = from_to(&c.tun, d);
            back.extend(clamp_mss());
            rule(&mut b, FORWARD, back, &format!("mss:{}", c.tun));
        }
    }
    for c in &spec.clats {
        for d in &spec.downstream {
            let mut out = from_to(d, &c.tun);
            out.push(counter());
            rule(&mut b, FORWARD, out, &format!("out:{}", c.tun));
            let mut back = from_to(&c.tun, d);
            back.push(counter());
            rule(&mut b, FORWARD, back, &format!("in:{}", c.tun));
        }
    }

    let masq: Vec<(&str, Ipv4Addr)> = spec
        .clats
        .iter()
        .filter_map(|c| Some((c.tun.as_str(), c.masquerade_from_not?)))
        .collect();
    if !masq.is_empty() {
        base_chain(
            &mut b,
            POSTROUTING,
            "nat",
            NF_INET_POST_ROUTING,
            PRIORITY_SRCNAT,
        );
        for (tun, own) in masq {
            let mut e = ifname_is(NFT_META_OIFNAME, tun).to_vec();
            e.push(payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4));
            e.push(cmp(NFT_CMP_NEQ, &own.octets()));
            e.push(counter());
            e.push(expr("masq", None));
            rule(&mut b, POSTROUTING, e, &format!("masq:{tun}"));
        }
    }
    Ok(b.finish())
}

/// One batch deleting the table (and nothing else): `BATCH_BEGIN` (`seq`), `DELTABLE`,
/// `BATCH_END`.
pub fn delete_batch(seq: u32) -> Vec<u8> {
    let mut b = Batch::new(seq);
    b.push(NFT_MSG_DELTABLE, 0, table_attrs());
    b.finish()
}

/// `GETTABLE` for our table.
fn get_table_request(seq: u32) -> Vec<u8> {
    message(NFT_MSG_GETTABLE, NLM_F_ACK, seq, table_attrs())
}

/// A `GETRULE` dump of our forward chain.
fn get_rules_request(seq: u32) -> Vec<u8> {
    message(
        NFT_MSG_GETRULE,
        NLM_F_DUMP,
        seq,
        Attrs::default()
            .str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, FORWARD),
    )
}

fn string_attr(data: &[u8]) -> &str {
    let d = data.split(|&b| b == 0).next().unwrap_or(data);
    std::str::from_utf8(d).unwrap_or("?")
}

/// A human-readable name for the message with sequence number `seq` in `batch` (for errors):
/// `NEWRULE forward "out:v4-eth0"`, `DELTABLE autoclat`, `batch`.
pub fn describe(batch: &[u8], seq: u32) -> String {
    let Some(m) = nlmsg::messages(batch)
        .filter_map(Result::ok)
        .find(|m| m.seq == seq)
    else {
        return format!("message {seq}");
    };
    let name = match m.ty {
        NFNL_MSG_BATCH_BEGIN | NFNL_MSG_BATCH_END => return "batch".to_string(),
        t if t >> 8 != NFNL_SUBSYS_NFTABLES => return format!("message type {t:#x}"),
        t => match t & 0xff {
            NFT_MSG_NEWTABLE => "NEWTABLE",
            NFT_MSG_GETTABLE => "GETTABLE",
            NFT_MSG_DELTABLE => "DELTABLE",
            NFT_MSG_NEWCHAIN => "NEWCHAIN",
            NFT_MSG_NEWRULE => "NEWRULE",
            NFT_MSG_GETRULE => "GETRULE",
            _ => "nf_tables message",
        },
    };
    let mut out = name.to_string();
    let rule_or_chain = matches!(m.ty & 0xff, NFT_MSG_NEWRULE | NFT_MSG_GETRULE);
    for (ty, data) in nlmsg::attrs(m.payload, NFGENMSG_LEN).filter_map(Result::ok) {
        match ty {
            // NFTA_TABLE_NAME, NFTA_CHAIN_NAME (chain messages), NFTA_RULE_CHAIN.
            NFTA_TABLE_NAME if m.ty & 0xff <= NFT_MSG_DELTABLE => {
                out = format!("{out} {}", string_attr(data));
            }
            NFTA_CHAIN_NAME if m.ty & 0xff == NFT_MSG_NEWCHAIN => {
                out = format!("{out} {}", string_attr(data));
            }
            NFTA_RULE_CHAIN if rule_or_chain => out = format!("{out} {}", string_attr(data)),
            NFTA_RULE_USERDATA if rule_or_chain => {
                if let Some(c) = parse_comment(data) {
                    out = format!("{out} {c:?}");
                }
            }
            _ => {}
        }
    }
    out
}

/// The packets and bytes of the first `counter` expression of a rule's expression list.
fn rule_counter(exprs: &[u8]) -> Result<Option<(u64, u64)>, NftError> {
    for elem in nlmsg::attrs(exprs, 0) {
        let (ty, elem) = elem?;
        if ty != NFTA_LIST_ELEM {
            continue;
        }
        let mut name = None;
        let mut data = None;
        for a in nlmsg::attrs(elem, 0) {
            match a? {
                (NFTA_EXPR_NAME, d) => name = Some(string_attr(d)),
                (NFTA_EXPR_DATA, d) => data = Some(d),
                _ => {}
            }
        }
        if name != Some("counter") {
            continue;
        }
        let (mut packets, mut bytes) = (0, 0);
        for a in nlmsg::attrs(data.unwrap_or(&[]), 0) {
            let (ty, d) = a?;
            let v = <[u8; 8]>::try_from(d).map(u64::from_be_bytes).ok();
            match (ty, v) {
                (NFTA_COUNTER_PACKETS, Some(v)) => packets = v,
                (NFTA_COUNTER_BYTES, Some(v)) => bytes = v,
                _ => {}
            }
        }
        return Ok(Some((packets, bytes)));
    }
    Ok(None)
}

/// Per-tun counters from the messages of a `GETRULE` dump (one or more datagrams, concatenated):
/// the forward chain's rules marked `out:<tun>` and `in:<tun>`, summed over the downstream
/// interfaces. Other rules are ignored; an `NLMSG_ERROR` in the dump is an error.
pub fn parse_counters(dump: &[u8]) -> Result<HashMap<String, Counters>, NftError> {
    let mut map: HashMap<String, Counters> = HashMap::new();
    for m in nlmsg::messages(dump) {
        let m = m?;
        match m.ty {
            NLMSG_DONE => break,
            NLMSG_ERROR => match m.error() {
                Some(0) => continue,
                errno => {
                    return Err(NftError::Kernel {
                        message: "GETRULE dump".to_string(),
                        errno: errno.unwrap_or(libc::EPROTO),
                    })
                }
            },
            t if t == nft_type(NFT_MSG_NEWRULE) => {}
            _ => continue,
        }
        let (mut table, mut chain, mut note, mut exprs) = (None, None, None, None);
        for a in nlmsg::attrs(m.payload, NFGENMSG_LEN) {
            match a? {
                (NFTA_RULE_TABLE, d) => table = Some(string_attr(d)),
                (NFTA_RULE_CHAIN, d) => chain = Some(string_attr(d)),
                (NFTA_RULE_USERDATA, d) => note = parse_comment(d),
                (NFTA_RULE_EXPRESSIONS, d) => exprs = Some(d),
                _ => {}
            }
        }
        if table.is_some_and(|t| t != TABLE) || chain.is_some_and(|c| c != FORWARD) {
            continue;
        }
        let Some(note) = note else { continue };
        let (out, tun) = if let Some(t) = note.strip_prefix("out:") {
            (true, t)
        } else if let Some(t) = note.strip_prefix("in:") {
            (false, t)
        } else {
            continue;
        };
        let Some((packets, bytes)) = rule_counter(exprs.unwrap_or(&[]))? else {
            continue;
        };
        let c = map.entry(tun.to_string()).or_default();
        if out {
            c.out_packets = c.out_packets.saturating_add(packets);
            c.out_bytes = c.out_bytes.saturating_add(bytes);
        } else {
            c.in_packets = c.in_packets.saturating_add(packets);
            c.in_bytes = c.in_bytes.saturating_add(bytes);
        }
    }
    Ok(map)
}

// --- I/O ---------------------------------------------------------------------------------------

/// A `NETLINK_NETFILTER` socket talking to the kernel, in the calling thread's network
/// namespace, with its receive buffer.
struct Socket {
    sock: NlSocket,
    buf: Vec<u8>,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> NftError {
    move |source| NftError::Io { op, source }
}

impl Socket {
    fn open() -> Result<Self, NftError> {
        let sock = NlSocket::open(NETLINK_NETFILTER, Some(TIMEOUT)).map_err(io_err("socket"))?;
        // Errors without the whole request echoed back; best effort (old kernels lack it).
        let one: libc::c_int = 1;
        let _ = sock.set_option(libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, &one);
        Ok(Self {
            sock,
            buf: vec![0; 64 * 1024],
        })
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
        self.sock.send(bytes).map_err(io_err("sendto"))
    }

    /// One datagram from the kernel (a timeout is an `Io` error with `WouldBlock`).
    fn recv(&mut self) -> Result<&[u8], NftError> {
        let n = self.sock.recv(&mut self.buf).map_err(io_err("recv"))?;
        Ok(&self.buf[..n])
    }
}

/// Sends one batch and reads its answers: `Ok` once every message asking for an ACK got one;
/// the first error names its message.
fn transact(batch: &[u8]) -> Result<(), NftError> {
    let mut pending: Vec<u32> = nlmsg::messages(batch)
        .filter_map(Result::ok)
        .filter(|m| m.flags & NLM_F_ACK != 0)
        .map(|m| m.seq)
        .collect();
    let mut sock = Socket::open()?;
    sock.send(batch)?;
    while !pending.is_empty() {
        let datagram = sock.recv()?;
        for m in nlmsg::messages(datagram) {
            let m = m?;
            match m.error() {
                Some(0) => pending.retain(|&s| s != m.seq),
                Some(errno) => {
                    return Err(NftError::Kernel {
                        message: describe(batch, m.seq),
                        errno,
                    })
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn next_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(1);
    // Room for a whole batch per call; only uniqueness within one socket matters.
    SEQ.fetch_add(1 << 16, Ordering::Relaxed)
}

/// (Re)creates the table for `spec` in one atomic batch.
pub fn apply(spec: &Spec) -> Result<(), NftError> {
    let batch = replace_batch(spec, next_seq())?;
    transact(&batch)?;
    tracing::debug!(
        table = TABLE,
        downstream = ?spec.downstream,
        clats = spec.clats.len(),
        "nftables table replaced"
    );
    Ok(())
}

/// Deletes the table; `Ok(false)` if there was none.
pub fn remove() -> Result<bool, NftError> {
    match transact(&delete_batch(next_seq())) {
        Ok(()) => {
            tracing::debug!(table = TABLE, "nftables table deleted");
            Ok(true)
        }
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the table exists.
pub fn exists() -> Result<bool, NftError> {
    let seq = next_seq();
    let mut sock = Socket::open()?;
    sock.send(&get_table_request(seq))?;
    let mut found = false;
    loop {
        let datagram = sock.recv()?;
        for m in nlmsg::messages(datagram) {
            let m = m?;
            if m.seq != seq {
                continue;
            }
            match m.error() {
                Some(0) => return Ok(found),
                Some(libc::ENOENT) => return Ok(false),
                Some(errno) => {
                    return Err(NftError::Kernel {
                        message: format!("GETTABLE {TABLE}"),
                        errno,
                    })
                }
                None if m.ty == nft_type(NFT_MSG_NEWTABLE) => found = true,
                None => {}
            }
        }
    }
}

/// The per-tun counters of the forward chain (empty when the table does not exist).
pub fn counters() -> Result<HashMap<String, Counters>, NftError> {
    let seq = next_seq();
    let mut sock = Socket::open()?;
    sock.send(&get_rules_request(seq))?;
    let mut dump = Vec::new();
    loop {
        let datagram = sock.recv()?;
        let mut done = false;
        for m in nlmsg::messages(datagram) {
            let m = m?;
            if m.seq != seq {
                continue;
            }
            match (m.ty, m.error()) {
                (NLMSG_DONE, _) => done = true,
                (_, Some(libc::ENOENT)) => return Ok(HashMap::new()),
                (_, Some(errno)) if errno != 0 => {
                    return Err(NftError::Kernel {
                        message: format!("GETRULE {TABLE} {FORWARD}"),
                        errno,
                    })
                }
                _ => dump.extend_from_slice(m.bytes),
            }
            // Messages are 4-aligned in `dump`, as in a datagram.
            while dump.len() % 4 != 0 {
                dump.push(0);
            }
        }
        if done {
            return parse_counters(&dump);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nlmsg::{attrs, messages, Msg};

    fn spec() -> Spec {
        Spec {
            downstream: vec!["br-lan".into(), "docker0".into()],
            clats: vec![
                ClatOut {
                    tun: "v4-up0".into(),
                    masquerade_from_not: Some(Ipv4Addr::new(192, 0, 0, 1)),
                },
                ClatOut {
                    tun: "v4-up1".into(),
                    masquerade_from_not: None,
                },
            ],
        }
    }

    fn attr_map(payload: &[u8], fixed: usize) -> Vec<(u16, &[u8])> {
        attrs(payload, fixed).map(Result::unwrap).collect()
    }

    fn get<'a>(a: &[(u16, &'a [u8])], ty: u16) -> &'a [u8] {
        a.iter().find(|(t, _)| *t == ty).unwrap().1
    }

    fn be32(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    /// `(expression name, its data attributes)` of a rule message.
    type Expr<'a> = (String, Vec<(u16, &'a [u8])>);

    fn expressions<'a>(m: &Msg<'a>) -> Vec<Expr<'a>> {
        let list = get(&attr_map(m.payload, 4), NFTA_RULE_EXPRESSIONS);
        attr_map(list, 0)
            .into_iter()
            .map(|(ty, elem)| {
                assert_eq!(ty, NFTA_LIST_ELEM);
                let e = attr_map(elem, 0);
                let name = string_attr(get(&e, NFTA_EXPR_NAME)).to_string();
                let data = e
                    .iter()
                    .find(|(t, _)| *t == NFTA_EXPR_DATA)
                    .map(|(_, d)| attr_map(d, 0))
                    .unwrap_or_default();
                (name, data)
            })
            .collect()
    }

    fn comment_of(m: &Msg) -> String {
        parse_comment(get(&attr_map(m.payload, 4), NFTA_RULE_USERDATA))
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_replace_batch_has_the_expected_messages() {
        let b = replace_batch(&spec(), 100).unwrap();
        let msgs: Vec<Msg> = messages(&b).map(Result::unwrap).collect();
        // begin, 3 table messages, forward chain, 2 clats x 2 downstream x (2 mss + 2
        // counters), postrouting chain, 1 masquerade rule, end.
        assert_eq!(msgs.len(), 1 + 3 + 1 + 16 + 1 + 1 + 1);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.seq, 100 + i as u32);
        }
        let first = msgs[0];
        let last = msgs[msgs.len() - 1];
        assert_eq!(first.ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(last.ty, NFNL_MSG_BATCH_END);
        for m in [first, last] {
            assert_eq!(m.payload, &[0, 0, 0, 10]);
            assert_eq!(m.flags & NLM_F_ACK, 0);
        }
        let inner = &msgs[1..msgs.len() - 1];
        let types: Vec<u16> = inner.iter().map(|m| m.ty & 0xff).collect();
        let mut want = vec![
            NFT_MSG_NEWTABLE,
            NFT_MSG_DELTABLE,
            NFT_MSG_NEWTABLE,
            NFT_MSG_NEWCHAIN,
        ];
        want.extend([NFT_MSG_NEWRULE; 16]);
        want.extend([NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE]);
        assert_eq!(types, want);
        for m in inner {
            assert_eq!(m.ty >> 8, NFNL_SUBSYS_NFTABLES);
            assert_eq!(&m.payload[..4], &[NFPROTO_IPV4, 0, 0, 0]);
            assert_ne!(m.flags & NLM_F_ACK, 0);
        }
        // NEWTABLE creates without EXCL; rules append.
        assert_eq!(inner[0].flags & (NLM_F_CREATE | 0x200), NLM_F_CREATE);
        assert_eq!(inner[1].flags & NLM_F_CREATE, 0);
        assert_eq!(
            inner[4].flags & (NLM_F_CREATE | NLM_F_APPEND),
            NLM_F_CREATE | NLM_F_APPEND
        );
        for m in &inner[..3] {
            assert_eq!(
                attr_map(m.payload, 4),
                vec![(NFTA_TABLE_NAME, &b"autoclat\0"[..])]
            );
        }
    }

    #[test]
    fn chains_are_base_chains_on_the_right_hooks() {
        let b = replace_batch(&spec(), 1).unwrap();
        let chains: Vec<Msg> = messages(&b)
            .map(Result::unwrap)
            .filter(|m| m.ty == nft_type(NFT_MSG_NEWCHAIN))
            .collect();
        assert_eq!(chains.len(), 2);
        let cases = [
            (&b"forward\0"[..], &b"filter\0"[..], 2u32, -150i32),
            (&b"postrouting\0"[..], &b"nat\0"[..], 4, 100),
        ];
        for (m, (name, kind, hook, prio)) in chains.iter().zip(cases) {
            let a = attr_map(m.payload, 4);
            assert_eq!(get(&a, NFTA_CHAIN_TABLE), b"autoclat\0");
            assert_eq!(get(&a, NFTA_CHAIN_NAME), name);
            assert_eq!(get(&a, NFTA_CHAIN_TYPE), kind);
            assert_eq!(get(&a, NFTA_CHAIN_POLICY), be32(1));
            let h = attr_map(get(&a, NFTA_CHAIN_HOOK), 0);
            assert_eq!(get(&h, NFTA_HOOK_HOOKNUM), be32(hook));
            assert_eq!(get(&h, NFTA_HOOK_PRIORITY), prio.to_be_bytes());
            // The hook is sent as a nested attribute.
            let raw = &m.payload[4..];
            let flagged = attrs_raw_types(raw);
            assert!(flagged.contains(&(NLA_F_NESTED | NFTA_CHAIN_HOOK)));
        }
    }

    /// Attribute types with their flag bits, for checking `NLA_F_NESTED`.
    fn attrs_raw_types(mut rest: &[u8]) -> Vec<u16> {
        let mut v = Vec::new();
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            v.push(u16::from_ne_bytes([rest[2], rest[3]]));
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        v
    }

    #[test]
    fn the_mss_rule_clamps_syns_to_the_route_mtu() {
        let b = replace_batch(&spec(), 1).unwrap();
        let rules: Vec<Msg> = messages(&b)
            .map(Result::unwrap)
            .filter(|m| m.ty == nft_type(NFT_MSG_NEWRULE))
            .collect();
        let first = &rules[0];
        let a = attr_map(first.payload, 4);
        assert_eq!(get(&a, NFTA_RULE_TABLE), b"autoclat\0");
        assert_eq!(get(&a, NFTA_RULE_CHAIN), b"forward\0");
        assert_eq!(comment_of(first), "mss:v4-up0");
        let e = expressions(first);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "meta",
                "cmp",
                "meta",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "bitwise",
                "cmp",
                "rt",
                "byteorder",
                "exthdr"
            ]
        );
        // iifname "br-lan" oifname "v4-up0", as IFNAMSIZ zero-padded data.
        assert_eq!(get(&e[0].1, NFTA_META_KEY), be32(6));
        assert_eq!(get(&e[0].1, NFTA_META_DREG), be32(1));
        let data = |d: &[u8]| get(&attr_map(d, 0), NFTA_DATA_VALUE).to_vec();
        let mut iif = b"br-lan".to_vec();
        iif.resize(16, 0);
        assert_eq!(data(get(&e[1].1, NFTA_CMP_DATA)), iif);
        assert_eq!(get(&e[1].1, NFTA_CMP_OP), be32(0));
        assert_eq!(get(&e[2].1, NFTA_META_KEY), be32(7));
        let mut oif = b"v4-up0".to_vec();
        oif.resize(16, 0);
        assert_eq!(data(get(&e[3].1, NFTA_CMP_DATA)), oif);
        // meta l4proto tcp before the TCP header match.
        assert_eq!(get(&e[4].1, NFTA_META_KEY), be32(16));
        assert_eq!(data(get(&e[5].1, NFTA_CMP_DATA)), [6]);
        assert_eq!(get(&e[6].1, NFTA_PAYLOAD_BASE), be32(2));
        assert_eq!(get(&e[6].1, NFTA_PAYLOAD_OFFSET), be32(13));
        assert_eq!(get(&e[6].1, NFTA_PAYLOAD_LEN), be32(1));
        assert_eq!(data(get(&e[7].1, NFTA_BITWISE_MASK)), [2]);
        assert_eq!(data(get(&e[7].1, NFTA_BITWISE_XOR)), [0]);
        assert_eq!(get(&e[8].1, NFTA_CMP_OP), be32(1));
        assert_eq!(get(&e[9].1, NFTA_RT_KEY), be32(3));
        assert_eq!(get(&e[10].1, NFTA_BYTEORDER_OP), be32(1));
        assert_eq!(get(&e[11].1, NFTA_EXTHDR_TYPE), [2]);
        assert_eq!(get(&e[11].1, NFTA_EXTHDR_OFFSET), be32(2));
        assert_eq!(get(&e[11].1, NFTA_EXTHDR_LEN), be32(2));
        assert_eq!(get(&e[11].1, NFTA_EXTHDR_OP), be32(1));
        assert_eq!(get(&e[11].1, NFTA_EXTHDR_SREG), be32(1));
        // The second rule is the other direction.
        let back = expressions(&rules[1]);
        assert_eq!(data(get(&back[1].1, NFTA_CMP_DATA)), oif);
        assert_eq!(data(get(&back[3].1, NFTA_CMP_DATA)), iif);
    }

    #[test]
    fn counter_and_masquerade_rules() {
        let b = replace_batch(&spec(), 1).unwrap();
        let rules: Vec<Msg> = messages(&b)
            .map(Result::unwrap)
            .filter(|m| m.ty == nft_type(NFT_MSG_NEWRULE))
            .collect();
        let notes: Vec<String> = rules.iter().map(comment_of).collect();
        assert_eq!(
            notes,
            [
                "mss:v4-up0",
                "mss:v4-up0",
                "mss:v4-up0",
                "mss:v4-up0",
                "mss:v4-up1",
                "mss:v4-up1",
                "mss:v4-up1",
                "mss:v4-up1",
                "out:v4-up0",
                "in:v4-up0",
                "out:v4-up0",
                "in:v4-up0",
                "out:v4-up1",
                "in:v4-up1",
                "out:v4-up1",
                "in:v4-up1",
                "masq:v4-up0",
            ]
        );
        let names = |m: &Msg| -> Vec<String> { expressions(m).into_iter().map(|e| e.0).collect() };
        assert_eq!(names(&rules[8]), ["meta", "cmp", "meta", "cmp", "counter"]);
        let masq = &rules[16];
        assert_eq!(
            get(&attr_map(masq.payload, 4), NFTA_RULE_CHAIN),
            b"postrouting\0"
        );
        assert_eq!(
            names(masq),
            ["meta", "cmp", "payload", "cmp", "counter", "masq"]
        );
        let e = expressions(masq);
        assert_eq!(get(&e[0].1, NFTA_META_KEY), be32(7));
        assert_eq!(get(&e[2].1, NFTA_PAYLOAD_BASE), be32(1));
        assert_eq!(get(&e[2].1, NFTA_PAYLOAD_OFFSET), be32(12));
        assert_eq!(get(&e[2].1, NFTA_PAYLOAD_LEN), be32(4));
        assert_eq!(get(&e[3].1, NFTA_CMP_OP), be32(1));
        let value = get(&attr_map(get(&e[3].1, NFTA_CMP_DATA), 0), NFTA_DATA_VALUE);
        assert_eq!(value, [192, 0, 0, 1]);
    }

    #[test]
    fn no_postrouting_chain_without_nat44() {
        let mut s = spec();
        s.clats.retain(|c| c.masquerade_from_not.is_none());
        let b = replace_batch(&s, 1).unwrap();
        let msgs: Vec<Msg> = messages(&b).map(Result::unwrap).collect();
        assert_eq!(
            msgs.iter()
                .filter(|m| m.ty == nft_type(NFT_MSG_NEWCHAIN))
                .count(),
            1
        );
        assert!(!describe(&b, msgs[msgs.len() - 2].seq).contains("masq"));
        // An empty spec is an empty forward chain.
        let b = replace_batch(&Spec::default(), 1).unwrap();
        assert_eq!(messages(&b).count(), 6);
    }

    #[test]
    fn the_delete_batch_deletes_only_our_table() {
        let b = delete_batch(9);
        let msgs: Vec<Msg> = messages(&b).map(Result::unwrap).collect();
        let types: Vec<u16> = msgs.iter().map(|m| m.ty).collect();
        assert_eq!(
            types,
            [
                NFNL_MSG_BATCH_BEGIN,
                nft_type(NFT_MSG_DELTABLE),
                NFNL_MSG_BATCH_END
            ]
        );
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [9, 10, 11]);
        assert_eq!(
            attr_map(msgs[1].payload, 4),
            vec![(NFTA_TABLE_NAME, &b"autoclat\0"[..])]
        );
        assert_eq!(describe(&b, 10), "DELTABLE autoclat");
        assert_eq!(describe(&b, 9), "batch");
        assert_eq!(describe(&b, 99), "message 99");
    }

    #[test]
    fn bad_interface_names_are_refused() {
        for bad in ["", "a-name-of-16-byt", "a/b", "a:b", "a b", ".", ".."] {
            let mut s = spec();
            s.downstream.push(bad.to_string());
            assert!(
                matches!(replace_batch(&s, 1), Err(NftError::BadName(n)) if n == bad),
                "{bad:?}"
            );
        }
        let mut s = spec();
        s.clats[0].tun = "x".repeat(16);
        assert!(replace_batch(&s, 1).is_err());
        s.clats[0].tun = "x".repeat(15);
        assert!(replace_batch(&s, 1).is_ok());
    }

    #[test]
    fn describe_names_a_rule() {
        let b = replace_batch(&spec(), 1).unwrap();
        assert_eq!(describe(&b, 2), "NEWTABLE autoclat");
        assert_eq!(describe(&b, 5), "NEWCHAIN forward");
        assert_eq!(describe(&b, 6), "NEWRULE forward \"mss:v4-up0\"");
    }

    /// A rule as the kernel dumps it: table, chain, handle, expressions with counter values.
    fn dumped_rule(chain: &str, note: Option<&str>, counter: Option<(u64, u64)>) -> Vec<u8> {
        let mut list = Attrs::default()
            .nest(NFTA_LIST_ELEM, meta(NFT_META_IIFNAME))
            .nest(NFTA_LIST_ELEM, cmp(NFT_CMP_EQ, &ifname_bytes("br-lan")));
        if let Some((p, by)) = counter {
            list = list.nest(
                NFTA_LIST_ELEM,
                expr(
                    "counter",
                    Some(
                        Attrs::default()
                            .bytes(NFTA_COUNTER_BYTES, &by.to_be_bytes())
                            .bytes(NFTA_COUNTER_PACKETS, &p.to_be_bytes()),
                    ),
                ),
            );
        }
        let mut a = Attrs::default()
            .str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, chain)
            .bytes(3, &7u64.to_be_bytes())
            .nest(NFTA_RULE_EXPRESSIONS, list);
        if let Some(n) = note {
            a = a.bytes(NFTA_RULE_USERDATA, &comment(n));
        }
        message(NFT_MSG_NEWRULE, 0x2, 5, a)
    }

    #[test]
    fn counters_are_summed_per_tun() {
        let mut dump = Vec::new();
        for r in [
            dumped_rule(FORWARD, Some("mss:v4-up0"), None),
            dumped_rule(FORWARD, Some("out:v4-up0"), Some((3, 300))),
            dumped_rule(FORWARD, Some("out:v4-up0"), Some((4, 400))),
            dumped_rule(FORWARD, Some("in:v4-up0"), Some((5, 5000))),
            dumped_rule(FORWARD, Some("out:v4-up1"), Some((0, 0))),
            dumped_rule(FORWARD, None, Some((9, 9))),
            dumped_rule(POSTROUTING, Some("out:v4-up0"), Some((9, 9))),
        ] {
            dump.extend_from_slice(&r);
        }
        dump.extend_from_slice(
            &Request::new(NLMSG_DONE, 0x2, 5)
                .fixed(&0i32.to_ne_bytes())
                .finish(),
        );
        let c = parse_counters(&dump).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            c["v4-up0"],
            Counters {
                out_packets: 7,
                out_bytes: 700,
                in_packets: 5,
                in_bytes: 5000
            }
        );
        assert_eq!(c["v4-up1"], Counters::default());
        // An error in the dump is an error; a malformed dump too.
        let err = Request::new(NLMSG_ERROR, 0, 5)
            .fixed(&(-libc::EPERM).to_ne_bytes())
            .finish();
        assert_eq!(parse_counters(&err).unwrap_err().errno(), Some(libc::EPERM));
        let mut bad = dump.clone();
        bad[..4].copy_from_slice(&10_000u32.to_ne_bytes());
        assert!(matches!(parse_counters(&bad), Err(NftError::Wire(_))));
        assert!(parse_counters(&[]).unwrap().is_empty());
    }

    #[test]
    fn user_data_comments_round_trip() {
        assert_eq!(comment("in:v4-a"), b"\x00\x08in:v4-a\x00");
        assert_eq!(parse_comment(&comment("out:v4-eth0")), Some("out:v4-eth0"));
        // Another TLV first, then the comment; truncated data is no comment.
        let mut u = vec![1, 1, 0];
        u.extend(comment("x"));
        assert_eq!(parse_comment(&u), Some("x"));
        assert_eq!(parse_comment(&[0, 9, b'a']), None);
        assert_eq!(parse_comment(&[]), None);
    }

    // --- against the kernel, in a private network namespace ---------------------------------

    fn nft(args: &[&str]) -> String {
        let out = std::process::Command::new("nft")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn nft_script(script: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft -f:\n{script}");
    }

    /// The expression lines of `nft --debug=netlink list table ip <table>`, rule after rule.
    fn kernel_expressions(table: &str) -> Vec<String> {
        nft(&["--debug=netlink", "list", "table", "ip", table])
            .lines()
            .filter(|l| l.starts_with("  ["))
            .map(str::to_string)
            .collect()
    }

    /// `spec` in nft syntax, rule for rule in the order `replace_batch` makes them.
    fn nft_syntax(table: &str, spec: &Spec) -> String {
        let mut fwd = String::new();
        for c in &spec.clats {
            for d in &spec.downstream {
                for (i, o) in [(d, &c.tun), (&c.tun, d)] {
                    fwd += &format!(
                        "iifname \"{i}\" oifname \"{o}\" tcp flags syn tcp option maxseg size set rt mtu\n"
                    );
                }
            }
        }
        for c in &spec.clats {
            for d in &spec.downstream {
                for (i, o) in [(d, &c.tun), (&c.tun, d)] {
                    fwd += &format!("iifname \"{i}\" oifname \"{o}\" counter\n");
                }
            }
        }
        let mut post = String::new();
        for c in &spec.clats {
            if let Some(a) = c.masquerade_from_not {
                post += &format!("oifname \"{}\" ip saddr != {a} counter masquerade\n", c.tun);
            }
        }
        format!(
            "table ip {table} {{\n chain forward {{ type filter hook forward priority mangle; policy accept;\n{fwd} }}\n \
             chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n{post} }}\n}}\n"
        )
    }

    /// Runs `body` on a thread of its own in a fresh network namespace (a namespace is per
    /// thread; children spawned from that thread inherit it). `false` if that is not possible.
    fn in_netns(body: impl FnOnce() + Send + 'static) -> bool {
        std::thread::spawn(move || {
            // SAFETY: plain system call; it only changes this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "skipped: unshare(CLONE_NEWNET): {}",
                    io::Error::last_os_error()
                );
                return false;
            }
            body();
            true
        })
        .join()
        .unwrap()
    }

    #[test]
    fn the_kernel_accepts_the_table_and_nft_reads_it() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        if std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no nft binary");
            return;
        }
        in_netns(|| {
            assert!(!exists().unwrap());
            assert!(counters().unwrap().is_empty());
            apply(&spec()).unwrap();
            assert!(exists().unwrap());
            let text = nft(&["list", "table", "ip", "autoclat"]);
            for want in [
                "type filter hook forward priority mangle; policy accept;",
                "type nat hook postrouting priority srcnat; policy accept;",
                "iifname \"br-lan\" oifname \"v4-up0\" tcp flags syn tcp option maxseg size set rt mtu comment \"mss:v4-up0\"",
                "iifname \"v4-up1\" oifname \"docker0\" tcp flags syn tcp option maxseg size set rt mtu",
                "iifname \"docker0\" oifname \"v4-up1\" counter packets 0 bytes 0 comment \"out:v4-up1\"",
                "iifname \"v4-up0\" oifname \"br-lan\" counter packets 0 bytes 0 comment \"in:v4-up0\"",
                "oifname \"v4-up0\" ip saddr != 192.0.0.1 counter packets 0 bytes 0 masquerade comment \"masq:v4-up0\"",
            ] {
                assert!(text.contains(want), "missing {want:?} in:\n{text}");
            }
            assert_eq!(text.matches("maxseg size set rt mtu").count(), 8, "{text}");
            assert_eq!(text.matches("masquerade").count(), 1, "{text}");
            // Expression for expression what nft itself makes of the same rules.
            nft_script(&nft_syntax("reference", &spec()));
            let ours = kernel_expressions(TABLE);
            assert_eq!(ours.len(), 8 * 12 + 8 * 5 + 6, "{ours:#?}");
            assert_eq!(ours, kernel_expressions("reference"));
            nft(&["delete", "table", "ip", "reference"]);

            let c = counters().unwrap();
            let mut keys: Vec<&String> = c.keys().collect();
            keys.sort();
            assert_eq!(keys, ["v4-up0", "v4-up1"]);
            assert!(c.values().all(|c| *c == Counters::default()));

            // Replacing: the new contents only, whatever was there.
            let stateless = Spec {
                downstream: vec!["virbr0".into()],
                clats: vec![ClatOut {
                    tun: "v4-up1".into(),
                    masquerade_from_not: None,
                }],
            };
            apply(&stateless).unwrap();
            apply(&stateless).unwrap();
            let text = nft(&["list", "table", "ip", "autoclat"]);
            assert!(
                !text.contains("v4-up0") && !text.contains("postrouting"),
                "{text}"
            );
            assert_eq!(text.matches("maxseg size set rt mtu").count(), 2, "{text}");
            assert_eq!(counters().unwrap().len(), 1);

            // A refused batch changes nothing and names the message.
            let mut b = Batch::new(500);
            b.push(NFT_MSG_DELTABLE, 0, table_attrs());
            rule(&mut b, "nope", vec![counter()], "x");
            let err = transact(&b.finish()).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
            assert!(err.to_string().contains("NEWRULE nope"), "{err}");
            assert!(exists().unwrap());

            // Removing deletes our table and nothing else.
            nft(&["add", "table", "ip", "other"]);
            nft(&[
                "add",
                "chain",
                "ip",
                "other",
                "c",
                "{ type filter hook input priority 0; policy accept; }",
            ]);
            nft(&["add", "rule", "ip", "other", "c", "counter"]);
            assert!(remove().unwrap());
            assert!(!exists().unwrap());
            let tables = nft(&["list", "tables"]);
            assert!(tables.contains("table ip other"), "{tables}");
            assert!(!tables.contains("autoclat"), "{tables}");
            assert!(!remove().unwrap());
            assert!(nft(&["list", "table", "ip", "other"]).contains("counter packets"));
        });
    }
}
