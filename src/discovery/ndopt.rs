//! RA options forwarded by the kernel on the ND user-option netlink group (RTNLGRP_ND_USEROPT):
//! parsing of `struct nduseroptmsg` and of the PREF64 (RFC 8781) and RDNSS (RFC 8106) options.
//!
//! The kernel forwards only the RA options it does not process itself, PREF64 and RDNSS among
//! them, and it sends one `RTM_NEWNDUSEROPT` message per option. A malformed option therefore
//! makes the whole message an error without hiding any other option. Pure: bytes in, values out.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::discovery::{Nat64Prefix, PrefixError};

/// `RTM_NEWNDUSEROPT` (linux/rtnetlink.h).
pub const RTM_NEWNDUSEROPT: u16 = 68;
/// The ND user-option multicast group (linux/rtnetlink.h `RTNLGRP_ND_USEROPT`).
pub const RTNLGRP_ND_USEROPT: u32 = 20;
/// `NDUSEROPT_SRCADDR` (linux/rtnetlink.h): the RA's source address.
pub const NDUSEROPT_SRCADDR: u16 = 1;
/// ND option type of RFC 8781 PREF64.
pub const ND_OPT_PREF64: u8 = 38;
/// ND option type of RFC 8106 RDNSS.
pub const ND_OPT_RDNSS: u8 = 25;

/// `sizeof(struct nduseroptmsg)`.
const HEADER_LEN: usize = 16;
const AF_INET6: u8 = 10;

/// Why an ND user-option message could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdOptError {
    /// Fewer bytes than a field or structure needs.
    #[error("nduseroptmsg truncated: {0}")]
    Truncated(&'static str),
    /// Only IPv6 (AF_INET6) RAs carry ND options.
    #[error("nduseroptmsg has address family {0}, expected AF_INET6 (10)")]
    Family(u8),
    /// An option with length 0 would loop forever (RFC 4861 §4.6: such a packet is discarded).
    #[error("ND option type {kind} at offset {offset} has length 0")]
    ZeroLengthOption { kind: u8, offset: usize },
    /// An option claims more bytes than the message holds.
    #[error(
        "ND option type {kind} at offset {offset} is {len} bytes long but only {available} remain"
    )]
    OptionOverrun {
        kind: u8,
        offset: usize,
        len: usize,
        available: usize,
    },
    /// RFC 8781 §4: the length of a PREF64 option must be 2 (16 bytes).
    #[error("PREF64 option has length {0} (units of 8 bytes), RFC 8781 requires 2")]
    BadPref64Length(u8),
    /// RFC 8781 §4: Prefix Length Codes 6 and 7 are reserved.
    #[error("PREF64 option has prefix length code {0}, only 0..=5 are defined")]
    BadPlc(u8),
    /// The prefix bits do not form a usable RFC 6052 prefix (e.g. the u-octet is set).
    #[error("PREF64 option carries an unusable prefix: {0}")]
    BadPref64Prefix(PrefixError),
    /// RFC 8106 §5.1: the length of an RDNSS option is odd and at least 3.
    #[error("RDNSS option has length {0} (units of 8 bytes), RFC 8106 requires an odd value >= 3")]
    BadRdnssLength(u8),
    /// A netlink attribute after the options is shorter than its header or overruns the message.
    #[error("netlink attribute type {kind} at offset {offset} is malformed (length {len})")]
    BadAttribute {
        kind: u16,
        offset: usize,
        len: usize,
    },
    /// The NDUSEROPT_SRCADDR attribute does not carry 16 bytes.
    #[error("NDUSEROPT_SRCADDR carries {0} bytes, expected 16")]
    BadSourceAddr(usize),
}

/// One RA option the kernel forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaOption {
    /// RFC 8781 PREF64; a zero lifetime withdraws the prefix.
    Pref64 {
        prefix: Nat64Prefix,
        lifetime: Duration,
    },
    /// RFC 8106 RDNSS; a zero lifetime withdraws the servers.
    Rdnss {
        servers: Vec<Ipv6Addr>,
        lifetime: Duration,
    },
    /// Any other option type (ignored).
    Other { kind: u8 },
}

/// One `RTM_NEWNDUSEROPT` message: the options of one RA on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdUserOpt {
    pub ifindex: u32,
    /// The ICMPv6 type the options came in (134 = router advertisement).
    pub icmp_type: u8,
    /// The RA's source address (NDUSEROPT_SRCADDR), if given.
    pub source: Option<Ipv6Addr>,
    pub options: Vec<RaOption>,
}

/// Parse the payload of an `RTM_NEWNDUSEROPT` message (the bytes after `struct nlmsghdr`).
///
/// Layout (linux/rtnetlink.h, host byte order): `family u8, pad1 u8, opts_len u16,
/// ifindex i32, icmp_type u8, icmp_code u8, pad2 u16, pad3 u32`, then `opts_len` bytes of ND
/// options, then netlink attributes.
pub fn parse_nduseropt(msg: &[u8]) -> Result<NdUserOpt, NdOptError> {
    let header = msg.get(..HEADER_LEN).ok_or(NdOptError::Truncated(
        "shorter than struct nduseroptmsg (16 bytes)",
    ))?;
    let family = header[0];
    if family != AF_INET6 {
        return Err(NdOptError::Family(family));
    }
    let opts_len = usize::from(u16::from_ne_bytes([header[2], header[3]]));
    let ifindex = i32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    let icmp_type = header[8];
    let opts = msg
        .get(HEADER_LEN..HEADER_LEN + opts_len)
        .ok_or(NdOptError::Truncated(
            "options shorter than nduseropt_opts_len",
        ))?;
    let options = parse_options(opts)?;
    // Attributes start at the next 4-byte boundary after the options (NLMSG_ALIGN).
    let attrs_start = (HEADER_LEN + opts_len + 3) & !3;
    let source = parse_source_attr(msg.get(attrs_start..).unwrap_or(&[]), attrs_start)?;
    Ok(NdUserOpt {
        ifindex: u32::try_from(ifindex).unwrap_or(0),
        icmp_type,
        source,
        options,
    })
}

/// Parse a sequence of ND options (RFC 4861 §4.6 TLVs, length in units of 8 bytes).
pub fn parse_options(mut bytes: &[u8]) -> Result<Vec<RaOption>, NdOptError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while !bytes.is_empty() {
        let (kind, len_units) = match bytes {
            [k, l, ..] => (*k, *l),
            _ => {
                return Err(NdOptError::Truncated(
                    "ND option shorter than its 2-byte header",
                ))
            }
        };
        if len_units == 0 {
            return Err(NdOptError::ZeroLengthOption { kind, offset });
        }
        let len = usize::from(len_units) * 8;
        let Some(opt) = bytes.get(..len) else {
            return Err(NdOptError::OptionOverrun {
                kind,
                offset,
                len,
                available: bytes.len(),
            });
        };
        out.push(match kind {
            ND_OPT_PREF64 => parse_pref64(opt)?,
            ND_OPT_RDNSS => parse_rdnss(opt)?,
            _ => RaOption::Other { kind },
        });
        bytes = &bytes[len..];
        offset += len;
    }
    Ok(out)
}

/// RFC 8781 §4. `opt` is the whole option, its length already checked against the buffer.
fn parse_pref64(opt: &[u8]) -> Result<RaOption, NdOptError> {
    if opt[1] != 2 || opt.len() != 16 {
        return Err(NdOptError::BadPref64Length(opt[1]));
    }
    let word = u16::from_be_bytes([opt[2], opt[3]]);
    let scaled_lifetime = word >> 3;
    let plc = (word & 0x7) as u8;
    let len = match plc {
        0 => 96,
        1 => 64,
        2 => 56,
        3 => 48,
        4 => 40,
        5 => 32,
        _ => return Err(NdOptError::BadPlc(plc)),
    };
    let mut addr = [0u8; 16];
    addr[..12].copy_from_slice(&opt[4..16]);
    // Bits beyond the prefix length are ignored on receipt; `from_address` clears them.
    let prefix = Nat64Prefix::from_address(Ipv6Addr::from(addr), len)
        .map_err(NdOptError::BadPref64Prefix)?;
    Ok(RaOption::Pref64 {
        prefix,
        lifetime: Duration::from_secs(u64::from(scaled_lifetime) * 8),
    })
}

/// RFC 8106 §5.1.
fn parse_rdnss(opt: &[u8]) -> Result<RaOption, NdOptError> {
    let len_units = opt[1];
    if len_units < 3 || len_units % 2 == 0 {
        return Err(NdOptError::BadRdnssLength(len_units));
    }
    let lifetime = u32::from_be_bytes([opt[4], opt[5], opt[6], opt[7]]);
    let servers = opt[8..]
        .chunks_exact(16)
        .map(|c| {
            let mut a = [0u8; 16];
            a.copy_from_slice(c);
            Ipv6Addr::from(a)
        })
        .collect();
    Ok(RaOption::Rdnss {
        servers,
        // 0xffffffff means infinity (RFC 8106 §5.1); Duration holds it as ~136 years.
        lifetime: Duration::from_secs(u64::from(lifetime)),
    })
}

/// Walk the netlink attributes after the options and return NDUSEROPT_SRCADDR, if present.
fn parse_source_attr(attrs: &[u8], base: usize) -> Result<Option<Ipv6Addr>, NdOptError> {
    let mut source = None;
    for a in crate::nlmsg::attrs(attrs, 0) {
        let (kind, payload) = a.map_err(|e| match e {
            crate::nlmsg::NlmsgError::BadAttribute { kind, offset, len } => {
                NdOptError::BadAttribute {
                    kind,
                    offset: base + offset,
                    len,
                }
            }
            crate::nlmsg::NlmsgError::BadLength { .. } => NdOptError::Truncated("attribute"),
        })?;
        if kind == NDUSEROPT_SRCADDR {
            let bytes: [u8; 16] = payload
                .try_into()
                .map_err(|_| NdOptError::BadSourceAddr(payload.len()))?;
            source = Some(Ipv6Addr::from(bytes));
        }
    }
    Ok(source)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(opts_len: u16, ifindex: i32) -> Vec<u8> {
        let mut v = vec![AF_INET6, 0];
        v.extend_from_slice(&opts_len.to_ne_bytes());
        v.extend_from_slice(&ifindex.to_ne_bytes());
        v.extend_from_slice(&[134, 0, 0, 0, 0, 0, 0, 0]);
        v
    }

    fn src_attr(addr: Ipv6Addr) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&20u16.to_ne_bytes());
        v.extend_from_slice(&NDUSEROPT_SRCADDR.to_ne_bytes());
        v.extend_from_slice(&addr.octets());
        v
    }

    fn message(opts: &[u8], src: Option<Ipv6Addr>) -> Vec<u8> {
        let mut m = header(opts.len() as u16, 7);
        m.extend_from_slice(opts);
        if let Some(s) = src {
            m.extend(src_attr(s));
        }
        m
    }

    /// PREF64 for 2001:db8:64::/96 with lifetime 600 s (scaled 75), PLC 0.
    const PREF64_96: [u8; 16] = [
        38, 2, 0x02, 0x58, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x64, 0, 0, 0, 0, 0, 0,
    ];

    fn rdnss(lifetime: u32, servers: &[Ipv6Addr]) -> Vec<u8> {
        let len = 1 + 2 * servers.len();
        let mut v = vec![25, len as u8, 0, 0];
        v.extend_from_slice(&lifetime.to_be_bytes());
        for s in servers {
            v.extend_from_slice(&s.octets());
        }
        v
    }

    fn ll() -> Ipv6Addr {
        "fe80::1".parse().unwrap()
    }

    #[test]
    fn pref64_96_with_source() {
        let m = parse_nduseropt(&message(&PREF64_96, Some(ll()))).unwrap();
        assert_eq!(m.ifindex, 7);
        assert_eq!(m.icmp_type, 134);
        assert_eq!(m.source, Some(ll()));
        assert_eq!(
            m.options,
            vec![RaOption::Pref64 {
                prefix: "2001:db8:64::/96".parse().unwrap(),
                lifetime: Duration::from_secs(600),
            }]
        );
    }

    #[test]
    fn pref64_every_plc() {
        // The 12 prefix bytes 2001:0db8:0102:0304:00|05:0607; bits beyond each length are
        // ignored on receipt (RFC 8781 §4), so every PLC takes its own leading part.
        let cases = [
            (0u16, "2001:db8:102:304:5:607::/96"),
            (1, "2001:db8:102:304::/64"),
            (2, "2001:db8:102:300::/56"),
            (3, "2001:db8:102::/48"),
            (4, "2001:db8:100::/40"),
            (5, "2001:db8::/32"),
        ];
        for (plc, expected) in cases {
            let mut opt = vec![38, 2];
            opt.extend_from_slice(&((1u16 << 3) | plc).to_be_bytes());
            opt.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 0, 5, 6, 7]);
            let m = parse_nduseropt(&message(&opt, None)).unwrap();
            assert_eq!(
                m.options,
                vec![RaOption::Pref64 {
                    prefix: expected.parse().unwrap(),
                    lifetime: Duration::from_secs(8),
                }],
                "plc {plc}"
            );
        }
    }

    #[test]
    fn pref64_max_and_zero_lifetime() {
        let mut opt = PREF64_96;
        opt[2] = 0xff;
        opt[3] = 0xf8; // scaled 8191, PLC 0
        let m = parse_nduseropt(&message(&opt, None)).unwrap();
        assert!(matches!(&m.options[0],
            RaOption::Pref64 { lifetime, .. } if *lifetime == Duration::from_secs(8191 * 8)));
        opt[2] = 0;
        opt[3] = 0;
        let m = parse_nduseropt(&message(&opt, None)).unwrap();
        assert!(matches!(&m.options[0],
            RaOption::Pref64 { lifetime, .. } if lifetime.is_zero()));
    }

    #[test]
    fn pref64_reserved_plc_rejected() {
        for plc in [6u8, 7] {
            let mut opt = PREF64_96;
            opt[3] = (opt[3] & !7) | plc;
            assert_eq!(
                parse_nduseropt(&message(&opt, None)),
                Err(NdOptError::BadPlc(plc))
            );
        }
    }

    #[test]
    fn pref64_bad_length_rejected() {
        let mut opt = PREF64_96.to_vec();
        opt[1] = 3;
        opt.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_nduseropt(&message(&opt, None)),
            Err(NdOptError::BadPref64Length(3))
        );
        let mut short = PREF64_96[..8].to_vec();
        short[1] = 1;
        assert_eq!(
            parse_nduseropt(&message(&short, None)),
            Err(NdOptError::BadPref64Length(1))
        );
    }

    #[test]
    fn pref64_u_octet_rejected() {
        let mut opt = PREF64_96;
        opt[4 + 8] = 0xff; // byte 8 of the prefix, inside a /96
        assert!(matches!(
            parse_nduseropt(&message(&opt, None)),
            Err(NdOptError::BadPref64Prefix(PrefixError::UOctet(_)))
        ));
    }

    #[test]
    fn rdnss_one_and_two_servers() {
        let a: Ipv6Addr = "2001:db8:1::53".parse().unwrap();
        let b: Ipv6Addr = "fe80::53".parse().unwrap();
        let m = parse_nduseropt(&message(&rdnss(1800, &[a]), Some(ll()))).unwrap();
        assert_eq!(
            m.options,
            vec![RaOption::Rdnss {
                servers: vec![a],
                lifetime: Duration::from_secs(1800)
            }]
        );
        let m = parse_nduseropt(&message(&rdnss(0, &[a, b]), None)).unwrap();
        assert_eq!(
            m.options,
            vec![RaOption::Rdnss {
                servers: vec![a, b],
                lifetime: Duration::ZERO
            }]
        );
    }

    #[test]
    fn rdnss_bad_lengths_rejected() {
        // Length 1 (no address) and length 4 (even).
        let mut opt = rdnss(60, &[]);
        assert_eq!(
            parse_nduseropt(&message(&opt, None)),
            Err(NdOptError::BadRdnssLength(1))
        );
        opt = rdnss(60, &["2001:db8::1".parse().unwrap()]);
        opt[1] = 4;
        opt.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_nduseropt(&message(&opt, None)),
            Err(NdOptError::BadRdnssLength(4))
        );
    }

    #[test]
    fn several_options_and_unknown_types() {
        let a: Ipv6Addr = "2001:db8:1::53".parse().unwrap();
        let mut opts = vec![31, 1, 0, 0, 0, 0, 0, 0]; // DNSSL-ish, ignored
        opts.extend_from_slice(&PREF64_96);
        opts.extend(rdnss(30, &[a]));
        let m = parse_nduseropt(&message(&opts, None)).unwrap();
        assert_eq!(m.options.len(), 3);
        assert_eq!(m.options[0], RaOption::Other { kind: 31 });
        assert!(matches!(m.options[1], RaOption::Pref64 { .. }));
        assert!(matches!(m.options[2], RaOption::Rdnss { .. }));
    }

    #[test]
    fn zero_length_option_rejected() {
        let opts = [38u8, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_nduseropt(&message(&opts, None)),
            Err(NdOptError::ZeroLengthOption {
                kind: 38,
                offset: 0
            })
        );
    }

    #[test]
    fn overrunning_option_rejected() {
        // A PREF64 claiming 16 bytes inside an 8-byte options area.
        let opts = &PREF64_96[..8];
        assert_eq!(
            parse_nduseropt(&message(opts, None)),
            Err(NdOptError::OptionOverrun {
                kind: 38,
                offset: 0,
                len: 16,
                available: 8
            })
        );
        // A second option that overruns after a good one.
        let mut opts = PREF64_96.to_vec();
        opts.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_nduseropt(&message(&opts, None)),
            Err(NdOptError::OptionOverrun {
                kind: 25,
                offset: 16,
                len: 24,
                available: 8
            })
        );
    }

    #[test]
    fn option_header_split_rejected() {
        let opts = [38u8];
        assert!(matches!(
            parse_nduseropt(&message(&opts, None)),
            Err(NdOptError::Truncated(_))
        ));
    }

    #[test]
    fn truncated_header_and_options() {
        assert!(matches!(
            parse_nduseropt(&[10, 0, 16, 0]),
            Err(NdOptError::Truncated(_))
        ));
        // opts_len says 16 but only 8 bytes follow.
        let mut m = header(16, 3);
        m.extend_from_slice(&PREF64_96[..8]);
        assert!(matches!(parse_nduseropt(&m), Err(NdOptError::Truncated(_))));
    }

    #[test]
    fn wrong_family_rejected() {
        let mut m = message(&PREF64_96, None);
        m[0] = 2;
        assert_eq!(parse_nduseropt(&m), Err(NdOptError::Family(2)));
    }

    #[test]
    fn malformed_attributes_rejected() {
        let mut m = message(&PREF64_96, None);
        // Attribute claiming 40 bytes with only 20 present.
        let mut attr = src_attr(ll());
        attr[0..2].copy_from_slice(&40u16.to_ne_bytes());
        m.extend(attr);
        assert!(matches!(
            parse_nduseropt(&m),
            Err(NdOptError::BadAttribute {
                kind: 1,
                len: 40,
                ..
            })
        ));
        // SRCADDR with 4 bytes of payload.
        let mut m = message(&PREF64_96, None);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NDUSEROPT_SRCADDR.to_ne_bytes());
        m.extend_from_slice(&[0xfe, 0x80, 0, 0]);
        assert_eq!(parse_nduseropt(&m), Err(NdOptError::BadSourceAddr(4)));
    }

    #[test]
    fn unknown_attribute_skipped() {
        let mut m = message(&PREF64_96, None);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&9u16.to_ne_bytes());
        m.extend_from_slice(&[1, 2, 3, 4]);
        m.extend(src_attr(ll()));
        assert_eq!(parse_nduseropt(&m).unwrap().source, Some(ll()));
    }
}

/// One prefix information option (RFC 4861 §4.6.2) of a router advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaPrefix {
    /// The prefix, host bits cleared.
    pub prefix: Ipv6Addr,
    pub len: u8,
    pub on_link: bool,
    pub autonomous: bool,
    pub valid: Duration,
    pub preferred: Duration,
}

/// The prefix information options of a whole router advertisement (the ICMPv6 message from
/// its type byte on). The kernel hands these to nobody, so the daemon reads RAs itself to know
/// which router advertised which prefix (RFC 6724 rule 5.5).
pub fn ra_prefixes(ra: &[u8]) -> Result<Vec<RaPrefix>, NdOptError> {
    const RA_HEADER: usize = 16;
    if ra.first() != Some(&134) {
        return Ok(Vec::new());
    }
    let mut opts = ra
        .get(RA_HEADER..)
        .ok_or(NdOptError::Truncated("shorter than a router advertisement"))?;
    let mut out = Vec::new();
    while opts.len() >= 2 {
        let (kind, units) = (opts[0], usize::from(opts[1]));
        let len = units * 8;
        if len == 0 || len > opts.len() {
            return Err(NdOptError::Truncated("RA option length"));
        }
        if kind == 3 && len == 32 {
            let o = &opts[..32];
            let plen = o[2].min(128);
            let u32_at = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&o[16..32]);
            let mask = if plen == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(plen))
            };
            out.push(RaPrefix {
                prefix: Ipv6Addr::from(u128::from_be_bytes(addr) & mask),
                len: plen,
                on_link: o[3] & 0x80 != 0,
                autonomous: o[3] & 0x40 != 0,
                valid: Duration::from_secs(u64::from(u32_at(4))),
                preferred: Duration::from_secs(u64::from(u32_at(8))),
            });
        }
        opts = &opts[len..];
    }
    Ok(out)
}

/// The `RTM_NEWNDUSEROPT` messages in one netlink datagram, parsed; other message types are
/// skipped. A malformed netlink header ends the walk with an error entry.
pub fn nduseropts_in_datagram(datagram: &[u8]) -> Vec<Result<NdUserOpt, NdOptError>> {
    crate::nlmsg::messages(datagram)
        .filter_map(|m| match m {
            Ok(m) if m.ty == RTM_NEWNDUSEROPT => Some(parse_nduseropt(m.payload)),
            Ok(_) => None,
            Err(_) => Some(Err(NdOptError::Truncated(
                "netlink message length overruns the datagram",
            ))),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod datagram_tests {
    use super::*;

    #[test]
    fn prefix_information_options_of_an_ra() {
        let mut ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        // A source link-layer address option (skipped), then a PIO /64 L+A.
        ra.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        ra.extend_from_slice(&[3, 4, 64, 0xc0]);
        ra.extend_from_slice(&86400u32.to_be_bytes());
        ra.extend_from_slice(&0u32.to_be_bytes());
        ra.extend_from_slice(&[0; 4]);
        ra.extend_from_slice(&"2001:db8:2::1".parse::<Ipv6Addr>().unwrap().octets());
        let got = ra_prefixes(&ra).unwrap();
        assert_eq!(
            got,
            vec![RaPrefix {
                prefix: "2001:db8:2::".parse().unwrap(),
                len: 64,
                on_link: true,
                autonomous: true,
                valid: Duration::from_secs(86400),
                preferred: Duration::ZERO,
            }]
        );
        // A zero-length option is an error, not a loop; not an RA is nothing.
        let mut bad = ra.clone();
        bad[17] = 0;
        assert!(ra_prefixes(&bad).is_err());
        assert!(ra_prefixes(&[133, 0, 0, 0]).unwrap().is_empty());
    }

    fn nlmsg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((crate::nlmsg::NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&[0; 10]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn walks_messages_and_skips_others() {
        let mut payload = vec![10, 0];
        payload.extend_from_slice(&16u16.to_ne_bytes());
        payload.extend_from_slice(&3i32.to_ne_bytes());
        payload.extend_from_slice(&[134, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[
            38, 2, 0x02, 0x58, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x64, 0, 0, 0, 0, 0, 0,
        ]);
        let mut d = nlmsg(16, &[0; 16]); // RTM_NEWLINK-ish, skipped
        d.extend(nlmsg(RTM_NEWNDUSEROPT, &payload));
        let got = nduseropts_in_datagram(&d);
        assert_eq!(got.len(), 1);
        let m = got[0].as_ref().unwrap();
        assert_eq!(m.ifindex, 3);
        assert!(matches!(m.options[0], RaOption::Pref64 { .. }));
        // A length that overruns.
        let mut bad = nlmsg(RTM_NEWNDUSEROPT, &payload);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(
            nduseropts_in_datagram(&bad)[..],
            [Err(NdOptError::Truncated(_))]
        ));
    }
}
