//! The pure decision: does this uplink need a CLAT, with which parameters, or why not.
//! (README "When an uplink gets a CLAT".)
//!
//! The checks run in a fixed order and the first that fails is the reason shown to the operator:
//!
//! 1. not loopback, not one of autoclat's own CLAT interfaces, not a `[router]` downstream
//!    interface                                                    (else `Disabled`)
//! 2. administratively up, then carrier                            (else `Waiting`)
//! 3. the config rule for the name enables it                      (else `Disabled`)
//! 4. a usable global IPv6 address, a /64 for the CLAT address (see [`choose_clat_net`]),
//!    then an IPv6 default route                                   (else `Waiting`)
//! 5. no native IPv4, as the rule's `ipv4_check` defines it        (else `Waiting`)
//! 6. a NAT64 prefix is known, and not inside the uplink's own prefixes (else `Waiting`)
//!
//! `Disabled` means only a change of configuration (or of what the interface is) can make it
//! run; `Waiting` means the network may still change so that it does.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::config::{Config, FastPathMode, Ipv4Check};
use crate::nat64::{Nat64Prefix, PrefixSource};
use crate::watch::{Inventory, Uplink, V4Addr, V6Addr};

/// What to do with one uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The uplink needs a CLAT with these parameters.
    Run(ClatPlan),
    /// No CLAT, and why not.
    Skip { state: SkipState, reason: String },
}

/// Why an uplink has no CLAT, coarsely: for `autoclat status`'s `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipState {
    /// A condition that the network may still change (carrier, addresses, routes, prefix).
    Waiting,
    /// Excluded by configuration or by what the interface is (loopback, our own CLAT).
    Disabled,
}

impl std::fmt::Display for SkipState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipState::Waiting => "waiting",
            SkipState::Disabled => "disabled",
        })
    }
}

/// Everything the controller needs to start (or to compare against) one CLAT. Two plans that
/// differ mean the running CLAT must be restarted (README: "a change of prefix or of the chosen
/// IPv6 source prefix restarts that CLAT").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClatPlan {
    pub uplink: String,
    pub ifindex: u32,
    pub prefix: Nat64Prefix,
    pub prefix_source: PrefixSource,
    /// The /64 network (host bits zero) the CLAT's IPv6 address is made in
    /// ([`choose_clat_net`]).
    pub v6_net: Ipv6Addr,
    /// Whether an address of the uplink covers `v6_net` (its prefix, ≤ 64, contains it): the
    /// uplink then answers neighbour solicitation for the CLAT address through an anycast
    /// membership; otherwise (a DHCPv6 `/128` in an on-link /64) autoclat answers them itself.
    pub v6_covered: bool,
    pub uplink_mtu: u32,
    pub route_metric: u32,
    pub fast_path: FastPathMode,
}

impl Decision {
    /// The plan, if the uplink should run a CLAT.
    pub fn plan(&self) -> Option<&ClatPlan> {
        match self {
            Decision::Run(p) => Some(p),
            Decision::Skip { .. } => None,
        }
    }

    /// Why not, if it should not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Run(_) => None,
            Decision::Skip { reason, .. } => Some(reason),
        }
    }

    /// The skip state, if it should not run.
    pub fn skip_state(&self) -> Option<SkipState> {
        match self {
            Decision::Run(_) => None,
            Decision::Skip { state, .. } => Some(*state),
        }
    }
}

fn waiting(reason: impl Into<String>) -> Decision {
    Decision::Skip {
        state: SkipState::Waiting,
        reason: reason.into(),
    }
}

fn disabled(reason: impl Into<String>) -> Decision {
    Decision::Skip {
        state: SkipState::Disabled,
        reason: reason.into(),
    }
}

/// Decides whether `uplink` needs a CLAT. `prefix` is the NAT64 prefix the discovery chose for
/// it (by the configured order), with its source; the inventory is the whole host, for the
/// host-wide native-IPv4 check.
pub fn decide(
    config: &Config,
    inventory: &Inventory,
    uplink: &Uplink,
    prefix: Option<(Nat64Prefix, PrefixSource)>,
) -> Decision {
    decide_with_own_tuns(config, inventory, uplink, prefix, &[])
}

/// [`decide`], also told the interface indexes of the CLAT tuns the daemon runs: they are its
/// own even before the kernel reports their `autoclat:` alias, so their IPv4 default routes are
/// never native IPv4.
pub fn decide_with_own_tuns(
    config: &Config,
    inventory: &Inventory,
    uplink: &Uplink,
    prefix: Option<(Nat64Prefix, PrefixSource)>,
    own_tuns: &[u32],
) -> Decision {
    let ours = |l: &Uplink| l.is_ours() || own_tuns.contains(&l.ifindex);
    if uplink.loopback {
        return disabled("loopback interface");
    }
    if ours(uplink) {
        return disabled("autoclat's own CLAT interface");
    }
    // A LAN bridge with IPv6 (from prefix delegation) and no IPv4 looks like an uplink; its
    // IPv4 comes through the CLATs instead.
    if config
        .router
        .as_ref()
        .is_some_and(|r| r.is_downstream(&uplink.name))
    {
        return disabled("a downstream interface of [router]");
    }

    if !uplink.admin_up {
        return waiting("link is administratively down");
    }
    if !uplink.carrier {
        return waiting("no carrier");
    }

    let rule = config.rule_for(&uplink.name);
    if !rule.enable {
        return disabled(format!("disabled by rule `{}` in config", rule.match_glob));
    }

    if choose_v6_source(&uplink.v6_addrs).is_none() {
        return waiting(no_v6_address_reason(&uplink.v6_addrs));
    }
    let Some(clat_net) = choose_clat_net(uplink) else {
        return waiting(no_clat_net_reason(uplink));
    };
    if !uplink.v6_default_route {
        return waiting("no IPv6 default route");
    }

    match rule.ipv4_check {
        Ipv4Check::Host => {
            let via = inventory
                .links
                .values()
                .find(|l| l.v4_default_route && !ours(l) && !l.is_tunnel());
            if let Some(l) = via {
                return waiting(format!("native IPv4: default route via {}", l.name));
            }
        }
        Ipv4Check::Link => {
            if let Some(a) = uplink.v4_addrs.iter().find(|a| is_native_v4(a)) {
                return waiting(format!(
                    "native IPv4: {}/{} on {}",
                    a.addr, a.prefix_len, uplink.name
                ));
            }
        }
    }

    let Some((prefix, prefix_source)) = prefix else {
        let tried: Vec<String> = config
            .discovery
            .order
            .iter()
            .map(ToString::to_string)
            .collect();
        return waiting(format!(
            "no NAT64 prefix known (tried {})",
            tried.join(", ")
        ));
    };

    if let Err(e) = prefix.check_for_uplink(uplink.own_v6_prefixes()) {
        return waiting(format!("NAT64 prefix ({prefix_source}) refused: {e}"));
    }

    Decision::Run(ClatPlan {
        uplink: uplink.name.clone(),
        ifindex: uplink.ifindex,
        prefix,
        prefix_source,
        v6_net: clat_net.net,
        v6_covered: clat_net.covered,
        // The IPv6 path MTU of the uplink: an RA's MTU option lowers it below the link's.
        uplink_mtu: uplink.v6_mtu.map_or(uplink.mtu, |m| m.min(uplink.mtu)),
        route_metric: rule.route_metric,
        fast_path: rule.fast_path,
    })
}

/// The /64 network of an address.
pub fn slash64(addr: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & (u128::MAX << 64))
}

/// An address the CLAT can build on: global, finished DAD successfully, and really global (a
/// link-local or multicast address flagged global by mistake is not).
fn usable_global(a: &V6Addr) -> bool {
    let seg0 = a.addr.segments()[0];
    let link_local = seg0 & 0xffc0 == 0xfe80;
    let multicast = seg0 & 0xff00 == 0xff00;
    a.global
        && !a.tentative
        && !a.dad_failed
        && !link_local
        && !multicast
        && !a.addr.is_loopback()
        && !a.addr.is_unspecified()
}

/// The global IPv6 address whose /64 the CLAT uses: usable ones only, preferring (in this order
/// of importance) non-deprecated, non-temporary (a privacy address's /64 is the same, but it
/// comes and goes), and non-ULA addresses; among equals the first the kernel listed, so the
/// choice is stable while nothing changes.
pub fn choose_v6_source(addrs: &[V6Addr]) -> Option<&V6Addr> {
    addrs.iter().filter(|a| usable_global(a)).min_by_key(|a| {
        let ula = a.addr.segments()[0] & 0xfe00 == 0xfc00;
        (a.deprecated, a.temporary, ula)
    })
}

/// The /64 a CLAT address is made in, and how the uplink answers for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClatNet {
    /// The /64 network (host bits zero).
    pub net: Ipv6Addr,
    /// An address of the uplink covers it (prefix length ≤ 64): anycast works there.
    pub covered: bool,
}

/// The /64 the CLAT's IPv6 address is made in: the /64 of a usable global address whose prefix
/// (≤ 64) covers it (SLAAC, or a manual /64), or an on-link /64 route of the uplink (the RA's
/// on-link prefix next to a DHCPv6 `/128`). Among several, in RFC 6724's spirit and in this
/// order of importance: not deprecated (a /64 whose usable addresses are all deprecated is; a
/// bare on-link /64 without addresses is not), advertised by the default gateway (RFC 6724
/// rule 5.5, from the RAs the daemon reads), global before ULA, the prefix of an address
/// before a bare on-link route, one with a non-temporary address before one with only privacy
/// addresses; among equals the first listed (addresses, then routes, in the kernel's order),
/// so the choice is stable while nothing changes. None when there is no candidate.
pub fn choose_clat_net(uplink: &Uplink) -> Option<ClatNet> {
    let usable: Vec<&V6Addr> = uplink
        .v6_addrs
        .iter()
        .filter(|a| usable_global(a))
        .collect();
    let in_net = |net: Ipv6Addr| {
        usable
            .iter()
            .filter(move |a| slash64(a.addr) == net)
            .copied()
    };
    let mut nets: Vec<(Ipv6Addr, bool)> = Vec::new();
    for a in usable.iter().filter(|a| a.prefix_len <= 64) {
        let net = slash64(a.addr);
        if !nets.iter().any(|(n, _)| *n == net) {
            nets.push((net, true));
        }
    }
    for net in uplink.onlink_v6_nets() {
        let seg0 = net.segments()[0];
        let unusable = seg0 & 0xffc0 == 0xfe80 || seg0 & 0xff00 == 0xff00;
        if !unusable && !nets.iter().any(|(n, _)| *n == net) {
            nets.push((net, false));
        }
    }
    nets.iter()
        .enumerate()
        .min_by_key(|(i, (net, covered))| {
            let covering = || in_net(*net).filter(|a| *covered && a.prefix_len <= 64);
            let deprecated = in_net(*net).next().is_some() && in_net(*net).all(|a| a.deprecated);
            let ula = net.segments()[0] & 0xfe00 == 0xfc00;
            let only_temporary = *covered && covering().all(|a| a.temporary);
            // RFC 6724 rule 5.5: the prefix the next hop (default gateway) advertised.
            let from_gateway = uplink.advertised_by_gateway(*net);
            (deprecated, !from_gateway, ula, !covered, only_temporary, *i)
        })
        .map(|(_, &(net, covered))| ClatNet { net, covered })
}

fn no_clat_net_reason(uplink: &Uplink) -> String {
    let have: Vec<String> = uplink
        .v6_addrs
        .iter()
        .filter(|a| usable_global(a))
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    format!(
        "no on-link /64 on {} for the CLAT address (only {})",
        uplink.name,
        have.join(", ")
    )
}

fn no_v6_address_reason(addrs: &[V6Addr]) -> String {
    let candidates = || addrs.iter().filter(|a| a.global);
    if let Some(a) = candidates().find(|a| a.tentative && !a.dad_failed) {
        format!("no global IPv6 address yet ({} is tentative)", a.addr)
    } else if let Some(a) = candidates().find(|a| a.dad_failed) {
        format!(
            "no global IPv6 address ({} failed duplicate address detection)",
            a.addr
        )
    } else {
        "no global IPv6 address yet".to_string()
    }
}

/// Whether an IPv4 address on the uplink is native IPv4 for `ipv4_check = "link"`: global
/// scope, and not link-local (169.254/16, RFC 3927), loopback, or the IPv4 Service Continuity
/// Prefix 192.0.0.0/29 (RFC 7335: a CLAT's or DS-Lite's own address, never native).
fn is_native_v4(a: &V4Addr) -> bool {
    let o = a.addr.octets();
    let service_continuity = o[0] == 192 && o[1] == 0 && o[2] == 0 && o[3] < 8;
    a.global
        && !a.addr.is_link_local()
        && !a.addr.is_loopback()
        && !a.addr.is_unspecified()
        && !service_continuity
        && a.addr != Ipv4Addr::BROADCAST
}
