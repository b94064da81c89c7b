//! `clatd`'s command line, compatible with Android's clatd:
//! `clatd -i UPLINK -p PREFIX -4 V4ADDR -6 V6ADDR -t TUNFD [-m FWMARK] [-n NETID] [-r RXFD] [-w TXFD] [-g GSOFD] [-c STATSFD]`,
//! plus `-P PPID` (the supervisor), `-u USER` (whom to run as) and `-s CLAT_PREFIX` (stateless
//! mode with a dedicated CLAT prefix, RFC 6877 §6.3).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use clap::Parser;

use crate::nat64::Nat64Prefix;

/// The flags as given.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "clatd",
    about = "464XLAT customer-side translator (RFC 6877) for one uplink",
    disable_version_flag = true
)]
pub struct ClatdArgs {
    /// The IPv6 uplink interface.
    #[arg(short = 'i', value_name = "UPLINK")]
    pub uplink: String,
    /// The NAT64 prefix: `64:ff9b::` (meaning /96) or `ADDR/LEN` with an RFC 6052 length.
    #[arg(short = 'p', value_name = "PREFIX")]
    pub prefix: Nat64Prefix,
    /// The CLAT's IPv4 address (on the tun), e.g. 192.0.0.4.
    #[arg(short = '4', value_name = "V4ADDR")]
    pub v4: Ipv4Addr,
    /// The CLAT's IPv6 address on the uplink.
    #[arg(short = '6', value_name = "V6ADDR")]
    pub v6: Ipv6Addr,
    /// The inherited tun descriptor (IFF_TUN | IFF_NO_PI).
    #[arg(short = 't', value_name = "TUNFD", value_parser = parse_fd)]
    pub tun_fd: RawFd,
    /// Firewall mark for sent packets (decimal or 0x-hex).
    #[arg(short = 'm', value_name = "FWMARK", value_parser = parse_u32_auto)]
    pub fwmark: Option<u32>,
    /// Android network id; accepted for compatibility, only logged.
    #[arg(short = 'n', value_name = "NETID", value_parser = parse_u32_auto)]
    pub netid: Option<u32>,
    /// An inherited packet socket to receive from (opened by the supervisor): `SOCK_DGRAM`, or
    /// `SOCK_RAW` with `PACKET_VNET_HDR` (GRO-merged packets then come with their segment size).
    #[arg(short = 'r', value_name = "RXFD", value_parser = parse_fd)]
    pub rx_fd: Option<RawFd>,
    /// An inherited raw IPv6 socket to send on (opened by the supervisor).
    #[arg(short = 'w', value_name = "TXFD", value_parser = parse_fd)]
    pub tx_fd: Option<RawFd>,
    /// An inherited packet socket with `PACKET_VNET_HDR` on the uplink, to send TCP
    /// super-packets from a virtio-header tun unsegmented (opened by the supervisor).
    #[arg(short = 'g', value_name = "GSOFD", value_parser = parse_fd)]
    pub gso_fd: Option<RawFd>,
    /// An inherited counter page (a sealed memfd made by the supervisor) on which the
    /// translator keeps its counters for `autoclat status`.
    #[arg(short = 'c', value_name = "STATSFD", value_parser = parse_fd)]
    pub stats_fd: Option<RawFd>,
    /// The supervisor's pid: exit at once if our parent is another process (the supervisor
    /// died before we started: we would be an orphan).
    #[arg(short = 'P', value_name = "PPID", value_parser = parse_pid)]
    pub parent: Option<i32>,
    /// Stateless mode (RFC 6877 §6.3): a /64 routed to this host into which every downstream
    /// IPv4 source other than `-4` is mapped (RFC 6052), e.g. `2001:db8:1:ff00::/64`. Without
    /// it only packets from `-4` are translated.
    #[arg(short = 's', value_name = "CLAT_PREFIX", value_parser = parse_clat_prefix)]
    pub clat_prefix: Option<Nat64Prefix>,
    /// When started as root, run as this user once the descriptors are set up
    /// [default: autoclat-clatd if it exists, else nobody].
    #[arg(short = 'u', value_name = "USER")]
    pub user: Option<String>,
}

/// A combination of flags that parses but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// Interface names are 1..=15 bytes without `/` or whitespace.
    #[error("-i {0:?}: not a valid interface name")]
    Uplink(String),
    /// The IPv4 address must be a unicast address.
    #[error("-4 {0}: not a unicast IPv4 address")]
    V4(Ipv4Addr),
    /// The IPv6 address must be a unicast address.
    #[error("-6 {0}: not a unicast IPv6 address")]
    V6(Ipv6Addr),
    /// The CLAT's IPv6 address cannot lie inside the NAT64 prefix.
    #[error("-6 {0}: lies inside the NAT64 prefix {1}")]
    V6InPrefix(Ipv6Addr, Nat64Prefix),
    /// The CLAT prefix cannot lie inside, or contain, the NAT64 prefix: an address would be
    /// both a downstream host's and a far-side one.
    #[error("-s {0}: overlaps the NAT64 prefix {1}")]
    ClatPrefixOverlap(Nat64Prefix, Nat64Prefix),
    /// Two flags name the same descriptor.
    #[error("-{0} and -{1} name the same descriptor {2}")]
    SameFd(char, char, RawFd),
}

impl ClatdArgs {
    /// Checks that clap cannot express.
    pub fn validate(&self) -> Result<(), ArgsError> {
        let u = &self.uplink;
        if u.is_empty()
            || u.len() > 15
            || u.contains('/')
            || u.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ArgsError::Uplink(u.clone()));
        }
        if self.v4.is_unspecified() || self.v4.is_multicast() || self.v4.is_broadcast() {
            return Err(ArgsError::V4(self.v4));
        }
        if self.v6.is_unspecified() || self.v6.is_multicast() || self.v6.is_loopback() {
            return Err(ArgsError::V6(self.v6));
        }
        if self.prefix.contains(self.v6) {
            return Err(ArgsError::V6InPrefix(self.v6, self.prefix));
        }
        if let Some(cp) = self.clat_prefix {
            if cp.contains(self.prefix.addr()) || self.prefix.contains(cp.addr()) {
                return Err(ArgsError::ClatPrefixOverlap(cp, self.prefix));
            }
        }
        let fds = [
            ('t', Some(self.tun_fd)),
            ('r', self.rx_fd),
            ('w', self.tx_fd),
            ('g', self.gso_fd),
            ('c', self.stats_fd),
        ];
        for (i, (a, fa)) in fds.iter().enumerate() {
            for (b, fb) in &fds[i + 1..] {
                if let (Some(x), Some(y)) = (fa, fb) {
                    if x == y {
                        return Err(ArgsError::SameFd(*a, *b, *x));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The CLAT prefix of `-s`: an IPv6 /64 with the RFC 6052 u-octet free (any other length is
/// refused, since downstream addresses are mapped with the /64 rule).
pub fn parse_clat_prefix(s: &str) -> Result<Nat64Prefix, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!(
            "`{s}` is not an IPv6 /64 (expected e.g. `2001:db8:1:ff00::/64`)"
        ));
    };
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv6 /64 (expected e.g. `2001:db8:1:ff00::/64`)"))?;
    if len != "64" {
        return Err(format!(
            "`{s}`: the CLAT prefix must be a /64 (stateless mode maps IPv4 addresses with the \
             RFC 6052 /64 rule)"
        ));
    }
    let p = Nat64Prefix::new(addr, 64).map_err(|e| format!("`{s}`: {e}"))?;
    let seg = addr.segments();
    if seg[0] & 0xff00 == 0xff00 || seg[0] & 0xffc0 == 0xfe80 || u128::from(addr) == 0 {
        return Err(format!("`{s}`: not a global unicast prefix"));
    }
    Ok(p)
}

/// A descriptor number: a non-negative int.
fn parse_fd(s: &str) -> Result<RawFd, String> {
    match s.parse::<RawFd>() {
        Ok(fd) if fd >= 0 => Ok(fd),
        _ => Err(format!("`{s}` is not a descriptor number")),
    }
}

/// A process id: a positive int.
fn parse_pid(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{s}` is not a process id")),
    }
}

/// A u32 in decimal or `0x` hexadecimal (Android passes marks either way).
pub fn parse_u32_auto(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    r.map_err(|_| format!("`{s}` is not a 32-bit unsigned number"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<ClatdArgs, clap::Error> {
        let base = [
            "clatd",
            "-i",
            "eth0",
            "-p",
            "64:ff9b::",
            "-4",
            "192.0.0.4",
            "-6",
            "2001:db8:1::c1a7",
            "-t",
            "7",
        ];
        ClatdArgs::try_parse_from(base.iter().chain(extra))
    }

    #[test]
    fn clat_prefix_is_optional() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.clat_prefix, None);
        a.validate().unwrap();
    }

    #[test]
    fn clat_prefix_64_parses() {
        let a = parse(&["-s", "2001:db8:1:ff00::/64"]).unwrap();
        assert_eq!(
            a.clat_prefix.map(|p| p.to_string()).as_deref(),
            Some("2001:db8:1:ff00::/64")
        );
        a.validate().unwrap();
    }

    #[test]
    fn clat_prefix_other_than_a_64_is_refused() {
        for bad in [
            "2001:db8:1:ff00::/56",
            "2001:db8:1:ff00::/96",
            "2001:db8:1:ff00::",
            "2001:db8:1:ff00::1/64",
            "2001:db8:1:ff00:100::/64",
            "fe80::/64",
            "ff02::/64",
            "nonsense/64",
        ] {
            let e = parse(&["-s", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        let e = parse_clat_prefix("2001:db8:1:ff00::/48").unwrap_err();
        assert!(e.contains("must be a /64"), "{e}");
    }

    #[test]
    fn clat_prefix_overlapping_the_nat64_prefix_is_refused() {
        let mut a = parse(&["-s", "2001:db8:64::/64"]).unwrap();
        a.prefix = "2001:db8:64::/96".parse().unwrap();
        assert!(matches!(
            a.validate(),
            Err(ArgsError::ClatPrefixOverlap(..))
        ));
        a.clat_prefix = Some("2001:db8:65::/64".parse().unwrap());
        a.validate().unwrap();
    }
}
