//! `clatd`'s command line, compatible with Android's clatd:
//! `clatd -i UPLINK -p PREFIX -4 V4ADDR -6 V6ADDR -t TUNFD [-m FWMARK] [-n NETID] [-r RXFD] [-w TXFD] [-g GSOFD] [-c STATSFD]`,
//! plus `-P PPID` (the supervisor) and `-u USER` (whom to run as).

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
    /// An inherited packet socket to receive from (opened by the supervisor).
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
