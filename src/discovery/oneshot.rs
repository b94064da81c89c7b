//! `autoclat discover IFACE [--dns ADDR]`: one-shot NAT64 prefix discovery on one uplink,
//! trying the sources in the configured order: the static prefix, then PREF64 (a router
//! solicitation, then listening briefly on the ND user-option netlink group), then DNS64.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, TokioSocket};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::discovery::dns::query_dns64;
use crate::discovery::ndopt::{nduseropts_in_datagram, RaOption, RTNLGRP_ND_USEROPT};
use crate::discovery::resolvconf::read_system_nameservers;
use crate::discovery::state::dns_servers;
use crate::discovery::{DiscoveryError, Nat64Prefix, PrefixSource};

/// How `discover_once` looks for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// Sources to try, in order.
    pub order: Vec<PrefixSource>,
    /// The static prefix of the uplink's config rule, if any.
    pub static_prefix: Option<Nat64Prefix>,
    /// `[discovery] dns_servers` (override RDNSS and resolv.conf when non-empty).
    pub dns_servers: Vec<IpAddr>,
    /// How long to wait for a router advertisement after the solicitation.
    pub ra_wait: Duration,
    /// The longest the DNS64 query may take.
    pub dns_timeout: Duration,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        Self {
            order: vec![
                PrefixSource::Static,
                PrefixSource::Pref64,
                PrefixSource::Dns64,
            ],
            static_prefix: None,
            dns_servers: Vec::new(),
            ra_wait: Duration::from_secs(3),
            dns_timeout: Duration::from_secs(5),
        }
    }
}

/// What `discover_once` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryReport {
    pub uplink: String,
    pub prefix: Nat64Prefix,
    pub source: PrefixSource,
    /// Further prefixes DNS64 returned (RFC 7050 allows several; the first is used).
    pub others: Vec<Nat64Prefix>,
    /// PREF64 lifetime or DNS TTL; none for a static prefix. Serialised as whole seconds.
    #[serde(serialize_with = "as_secs")]
    pub lifetime: Option<Duration>,
    /// Where it came from: the router or DNS server.
    pub origin: Option<String>,
    /// The sources tried before this one and why they gave nothing.
    pub attempts: Vec<String>,
}

impl fmt::Display for DiscoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({}", self.uplink, self.prefix, self.source)?;
        if let Some(o) = &self.origin {
            write!(f, " from {o}")?;
        }
        if let Some(l) = self.lifetime {
            write!(f, ", lifetime {}s", l.as_secs())?;
        }
        write!(f, ")")?;
        for o in &self.others {
            write!(f, "\n  also offered: {o}")?;
        }
        Ok(())
    }
}

fn as_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// Discover the NAT64 prefix of uplink `ifname` once. `dns`, if given, is the only DNS server
/// asked (the `--dns` flag).
pub async fn discover_once(
    ifname: &str,
    dns: Option<IpAddr>,
    options: &DiscoverOptions,
) -> Result<DiscoveryReport, DiscoveryError> {
    let ifindex = nix::net::if_::if_nametoindex(ifname)
        .map_err(|_| DiscoveryError::NoSuchInterface(ifname.to_string()))?;
    let configured: Vec<IpAddr> = match dns {
        Some(a) => vec![a],
        None => options.dns_servers.clone(),
    };
    let mut attempts = Vec::new();
    let mut rdnss: Vec<Ipv6Addr> = Vec::new();
    let mut solicited = false;
    let report = |prefix, source, others, lifetime, origin, attempts| DiscoveryReport {
        uplink: ifname.to_string(),
        prefix,
        source,
        others,
        lifetime,
        origin,
        attempts,
    };
    for source in &options.order {
        match source {
            PrefixSource::Static => match options.static_prefix {
                Some(p) => {
                    return Ok(report(p, *source, Vec::new(), None, None, attempts));
                }
                None => attempts.push("static: no nat64_prefix configured".to_string()),
            },
            PrefixSource::Pref64 => match solicit_pref64(ifname, ifindex, options.ra_wait).await {
                Ok(ra) => {
                    rdnss = ra.rdnss;
                    if let Some((p, lifetime, router)) = ra.pref64 {
                        let origin = router.map(|r| format!("router {r}"));
                        return Ok(report(
                            p,
                            *source,
                            Vec::new(),
                            Some(lifetime),
                            origin,
                            attempts,
                        ));
                    }
                    attempts.push(format!(
                        "pref64: {} within {:?}",
                        if ra.saw_ra {
                            "router advertisement carried no PREF64"
                        } else {
                            "no router advertisement options seen (is accept_ra on?)"
                        },
                        options.ra_wait
                    ));
                }
                Err(e) => attempts.push(format!("pref64: {e}")),
            },
            PrefixSource::Dns64 => {
                if !solicited && configured.is_empty() {
                    // PREF64 is not wanted, but the RDNSS servers come with the same RA.
                    solicited = true;
                    match solicit_pref64(ifname, ifindex, options.ra_wait).await {
                        Ok(ra) => rdnss = ra.rdnss,
                        Err(e) => attempts.push(format!("rdnss: {e}")),
                    }
                }
                let servers = dns_servers(
                    ifname,
                    ifindex,
                    &rdnss,
                    &read_system_nameservers(),
                    &configured,
                );
                tracing::debug!(uplink = ifname, ?servers, "DNS64 discovery");
                match query_dns64(ifname, &servers, options.dns_timeout).await {
                    Ok(a) => {
                        return Ok(report(
                            a.prefix,
                            *source,
                            a.others,
                            Some(a.ttl),
                            Some(format!("DNS server {}", a.server)),
                            attempts,
                        ))
                    }
                    Err(e) => attempts.push(format!("dns64: {e}")),
                }
            }
        }
    }
    Err(DiscoveryError::NothingFound {
        ifname: ifname.to_string(),
        attempts,
    })
}

/// What one listening window on the ND user-option group brought.
#[derive(Debug, Default)]
struct RaHarvest {
    pref64: Option<(Nat64Prefix, Duration, Option<Ipv6Addr>)>,
    rdnss: Vec<Ipv6Addr>,
    saw_ra: bool,
}

/// After the first option of an RA arrives, wait this long for its other options (the
/// kernel sends one message per option, back to back) before giving up on a PREF64.
const RA_SETTLE: Duration = Duration::from_millis(300);

/// Send a router solicitation on the uplink and collect PREF64 and RDNSS options for up to
/// `wait`.
async fn solicit_pref64(
    ifname: &str,
    ifindex: u32,
    wait: Duration,
) -> Result<RaHarvest, DiscoveryError> {
    // Subscribe before soliciting so that the answer cannot be missed.
    let mut nl =
        TokioSocket::new(NETLINK_ROUTE).map_err(|e| DiscoveryError::io("netlink socket", e))?;
    nl.socket_mut()
        .bind_auto()
        .map_err(|e| DiscoveryError::io("netlink bind", e))?;
    nl.socket_mut()
        .add_membership(RTNLGRP_ND_USEROPT)
        .map_err(|e| DiscoveryError::io("joining RTNLGRP_ND_USEROPT", e))?;
    if let Err(e) = send_router_solicitation(ifname, ifindex) {
        // Without a solicitation a periodic RA may still arrive in the window.
        tracing::warn!(uplink = ifname, error = %e, "cannot send router solicitation");
    }
    let mut harvest = RaHarvest::default();
    let mut deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(harvest);
        }
        let datagram = match tokio::time::timeout(left, nl.recv_from_full()).await {
            Err(_) => return Ok(harvest),
            Ok(Ok((d, _))) => d,
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
            Ok(Err(e)) => return Err(DiscoveryError::io("netlink receive", e)),
        };
        for msg in nduseropts_in_datagram(&datagram) {
            let msg = match msg {
                Ok(m) if m.ifindex == ifindex && m.icmp_type == 134 => m,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(uplink = ifname, error = %e, "ignoring malformed RA option");
                    continue;
                }
            };
            if !harvest.saw_ra {
                harvest.saw_ra = true;
                deadline = deadline.min(Instant::now() + RA_SETTLE);
            }
            for opt in msg.options {
                match opt {
                    RaOption::Pref64 { prefix, lifetime } if !lifetime.is_zero() => {
                        harvest.pref64 = Some((prefix, lifetime, msg.source));
                        return Ok(harvest);
                    }
                    RaOption::Rdnss { servers, lifetime } if !lifetime.is_zero() => {
                        for s in servers {
                            if !harvest.rdnss.contains(&s) {
                                harvest.rdnss.push(s);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// RFC 4861 §4.1 router solicitation to all-routers (ff02::2) on the uplink, hop limit 255.
/// No source link-layer option: the kernel picks the source, which may be unspecified.
fn send_router_solicitation(ifname: &str, ifindex: u32) -> Result<(), DiscoveryError> {
    let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .map_err(|e| DiscoveryError::io("ICMPv6 raw socket", e))?;
    sock.bind_device(Some(ifname.as_bytes()))
        .map_err(|e| DiscoveryError::io(format!("binding ICMPv6 socket to {ifname}"), e))?;
    sock.set_multicast_hops_v6(255)
        .map_err(|e| DiscoveryError::io("IPV6_MULTICAST_HOPS", e))?;
    sock.set_multicast_if_v6(ifindex)
        .map_err(|e| DiscoveryError::io("IPV6_MULTICAST_IF", e))?;
    // Type 133, code 0, checksum (the kernel fills it in for ICMPv6 raw sockets), reserved.
    let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
    let to = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2), 0, 0, ifindex);
    sock.send_to(&rs, &SockAddr::from(SocketAddr::V6(to)))
        .map_err(|e| DiscoveryError::io(format!("sending router solicitation on {ifname}"), e))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// `discover -c` and `run` read rules alike: `[!...]` is the daemon's negated class (the
    /// glob-match crate used before read `!` and `{a,b}` differently).
    #[test]
    fn discover_uses_the_daemons_rule_lookup() {
        let config = crate::config::parse(
            "[[uplink]]\nmatch = \"eth[!0]\"\nnat64_prefix = \"2001:db8:1::/96\"\n\n[[uplink]]\nmatch = \"{eth0,wl}\"\nnat64_prefix = \"2001:db8:2::/96\"\n",
            "t.toml",
        )
        .expect("valid config");
        for name in ["eth0", "eth1", "wl", "{eth0,wl}"] {
            assert_eq!(
                config.discover_options(name).static_prefix,
                config.rule_for(name).nat64_prefix,
                "{name}"
            );
        }
        assert_eq!(
            config
                .discover_options("eth1")
                .static_prefix
                .map(|p| p.to_string()),
            Some("2001:db8:1::/96".to_owned())
        );
        assert_eq!(config.discover_options("eth0").static_prefix, None);
    }

    #[test]
    fn options_from_config_pick_first_matching_rule() {
        let config: Config = toml::from_str(
            r#"
            [discovery]
            order = ["pref64", "dns64"]
            dns_servers = ["2001:db8::53"]
            [[uplink]]
            match = "wl*"
            nat64_prefix = "2001:db8:1::/96"
            [[uplink]]
            match = "eth*"
            nat64_prefix = "2001:db8:2::/96"
            [[uplink]]
            match = "eth0"
            nat64_prefix = "2001:db8:3::/96"
            "#,
        )
        .unwrap();
        let o = config.discover_options("eth0");
        assert_eq!(o.static_prefix, Some("2001:db8:2::/96".parse().unwrap()));
        assert_eq!(o.order, vec![PrefixSource::Pref64, PrefixSource::Dns64]);
        assert_eq!(
            o.dns_servers,
            vec!["2001:db8::53".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(config.discover_options("usb0").static_prefix, None);
    }

    #[test]
    fn report_display() {
        let r = DiscoveryReport {
            uplink: "eth0".into(),
            prefix: "2001:db8:64::/96".parse().unwrap(),
            source: PrefixSource::Dns64,
            others: vec!["2001:db8:100::/40".parse().unwrap()],
            lifetime: Some(Duration::from_secs(300)),
            origin: Some("DNS server [2001:db8::53]:53".into()),
            attempts: vec![],
        };
        assert_eq!(
            r.to_string(),
            "eth0: 2001:db8:64::/96 (dns64 from DNS server [2001:db8::53]:53, lifetime 300s)\n  also offered: 2001:db8:100::/40"
        );
    }
}
