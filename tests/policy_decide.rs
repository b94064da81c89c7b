//! The policy decision, from Inventory fixtures: every check, their order, and the plan.
#![allow(clippy::unwrap_used)]

use std::net::Ipv6Addr;

use autoclat::config::{parse, Config, FastPathMode};
use autoclat::discovery::{Nat64Prefix, PrefixSource};
use autoclat::policy::{
    choose_clat_net, choose_v6_source, decide, slash64, ClatNet, ClatPlan, Decision, SkipState,
};
use autoclat::watch::{Inventory, OnLinkRoute, Uplink, V4Addr, V6Addr};

fn v6(addr: &str) -> V6Addr {
    V6Addr {
        addr: addr.parse().unwrap(),
        prefix_len: 64,
        tentative: false,
        dad_failed: false,
        deprecated: false,
        temporary: false,
        global: !addr.starts_with("fe80"),
    }
}

fn v4(addr: &str, prefix_len: u8) -> V4Addr {
    V4Addr {
        addr: addr.parse().unwrap(),
        prefix_len,
        global: true,
    }
}

/// An IPv6-only uplink that should get a CLAT: up, carrier, SLAAC address, default route.
fn v6_only(ifindex: u32, name: &str) -> Uplink {
    let mut u = Uplink::new(ifindex, name);
    u.admin_up = true;
    u.carrier = true;
    u.mtu = 1500;
    u.kind = Some("veth".into());
    u.v6_addrs = vec![v6("fe80::1"), v6("2001:db8:1::5")];
    u.v6_default_route = true;
    u
}

/// Our own CLAT interface for `uplink`, carrying the CLAT's IPv4 default route.
fn clat_tun(ifindex: u32, uplink: &str) -> Uplink {
    let mut t = Uplink::new(ifindex, format!("v4-{uplink}"));
    t.admin_up = true;
    t.carrier = true;
    t.mtu = 1472;
    t.kind = Some("tun".into());
    t.alias = Some(format!("autoclat:{uplink}"));
    t.v4_addrs = vec![v4("192.0.0.4", 32)];
    t.v4_default_route = true;
    t
}

fn inventory(links: impl IntoIterator<Item = Uplink>) -> Inventory {
    let mut inv = Inventory::default();
    for l in links {
        inv.links.insert(l.ifindex, l);
    }
    inv
}

fn nat64() -> Option<(Nat64Prefix, PrefixSource)> {
    Some(("2001:db8:64::/96".parse().unwrap(), PrefixSource::Dns64))
}

fn config(text: &str) -> Config {
    parse(text, "test.toml").unwrap()
}

/// Decides for the link named `name` in `inv`.
fn decide_in(cfg: &Config, inv: &Inventory, name: &str) -> Decision {
    decide(cfg, inv, inv.by_name(name).unwrap(), nat64())
}

fn assert_skip(d: &Decision, state: SkipState, reason: &str) {
    assert_eq!(
        d,
        &Decision::Skip {
            state,
            reason: reason.into()
        }
    );
}

#[test]
fn ipv6_only_uplink_runs_with_the_expected_plan() {
    let inv = inventory([v6_only(2, "eth0")]);
    let d = decide_in(&Config::default(), &inv, "eth0");
    assert_eq!(
        d,
        Decision::Run(ClatPlan {
            uplink: "eth0".into(),
            ifindex: 2,
            prefix: "2001:db8:64::/96".parse().unwrap(),
            prefix_source: PrefixSource::Dns64,
            v6_net: "2001:db8:1::".parse().unwrap(),
            v6_covered: true,
            uplink_mtu: 1500,
            route_metric: 2048,
            fast_path: FastPathMode::Auto,
        })
    );
    assert_eq!(d.reason(), None);
    assert_eq!(d.skip_state(), None);
    assert!(d.plan().is_some());
}

#[test]
fn plan_takes_rule_settings_prefix_and_mtu() {
    let cfg = config(
        "[[uplink]]\nmatch = \"wl*\"\nroute_metric = 77\nfast_path = \"off\"\n\
         nat64_prefix = \"2001:db8:100::/40\"\n",
    );
    let mut u = v6_only(7, "wlan0");
    u.mtu = 1400;
    let inv = inventory([u.clone()]);
    let prefix: Nat64Prefix = "2001:db8:100::/40".parse().unwrap();
    let d = decide(&cfg, &inv, &u, Some((prefix, PrefixSource::Static)));
    let plan = d.plan().unwrap();
    assert_eq!(plan.route_metric, 77);
    assert_eq!(plan.fast_path, FastPathMode::Off);
    assert_eq!(plan.uplink_mtu, 1400);
    assert_eq!(plan.prefix, prefix);
    assert_eq!(plan.prefix_source, PrefixSource::Static);
    assert_eq!(plan.ifindex, 7);
}

#[test]
fn loopback_is_disabled() {
    let mut lo = v6_only(1, "lo");
    lo.loopback = true;
    let inv = inventory([lo]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "lo"),
        SkipState::Disabled,
        "loopback interface",
    );
}

#[test]
fn our_own_clat_interface_is_disabled() {
    let inv = inventory([v6_only(2, "eth0"), clat_tun(9, "eth0")]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "v4-eth0"),
        SkipState::Disabled,
        "autoclat's own CLAT interface",
    );
}

#[test]
fn link_state_checks() {
    let mut down = v6_only(2, "eth0");
    down.admin_up = false;
    down.carrier = false;
    let inv = inventory([down]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "link is administratively down",
    );

    let mut no_carrier = v6_only(2, "eth0");
    no_carrier.carrier = false;
    let inv = inventory([no_carrier]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "no carrier",
    );
}

#[test]
fn disabled_by_config_names_the_rule() {
    let cfg =
        config("[[uplink]]\nmatch = \"eth9*\"\nenable = false\n[[uplink]]\nmatch = \"eth*\"\n");
    let inv = inventory([v6_only(2, "eth0"), v6_only(3, "eth90")]);
    assert_skip(
        &decide_in(&cfg, &inv, "eth90"),
        SkipState::Disabled,
        "disabled by rule `eth9*` in config",
    );
    assert!(decide_in(&cfg, &inv, "eth0").plan().is_some());
    // No rule matching: the defaults, which enable.
    let cfg = config("[[uplink]]\nmatch = \"wl*\"\nenable = false\n");
    assert!(decide_in(&cfg, &inv, "eth0").plan().is_some());
}

#[test]
fn global_ipv6_address_checks() {
    let cases: Vec<(Vec<V6Addr>, &str)> = vec![
        (vec![], "no global IPv6 address yet"),
        (vec![v6("fe80::1")], "no global IPv6 address yet"),
        (
            vec![
                v6("fe80::1"),
                V6Addr {
                    tentative: true,
                    ..v6("2001:db8:1::5")
                },
            ],
            "no global IPv6 address yet (2001:db8:1::5 is tentative)",
        ),
        (
            vec![V6Addr {
                dad_failed: true,
                ..v6("2001:db8:1::5")
            }],
            "no global IPv6 address (2001:db8:1::5 failed duplicate address detection)",
        ),
        (
            // The kernel keeps the tentative flag on a DAD-failed address: report the failure.
            vec![V6Addr {
                dad_failed: true,
                tentative: true,
                ..v6("2001:db8:1::5")
            }],
            "no global IPv6 address (2001:db8:1::5 failed duplicate address detection)",
        ),
        (
            // Flagged global but link-local or multicast: still nothing usable.
            vec![
                V6Addr {
                    global: true,
                    ..v6("fe80::2")
                },
                V6Addr {
                    global: true,
                    ..v6("ff02::1")
                },
            ],
            "no global IPv6 address yet",
        ),
        (
            // Not global as the kernel reports it (e.g. site scope).
            vec![V6Addr {
                global: false,
                ..v6("2001:db8:1::5")
            }],
            "no global IPv6 address yet",
        ),
    ];
    for (addrs, reason) in cases {
        let mut u = v6_only(2, "eth0");
        u.v6_addrs = addrs.clone();
        let inv = inventory([u]);
        let d = decide_in(&Config::default(), &inv, "eth0");
        assert_skip(&d, SkipState::Waiting, reason);
    }
}

#[test]
fn deprecated_and_temporary_addresses_still_count_but_are_not_preferred() {
    let mut u = v6_only(2, "eth0");
    u.v6_addrs = vec![V6Addr {
        deprecated: true,
        ..v6("2001:db8:1::5")
    }];
    let inv = inventory([u.clone()]);
    let plan = decide_in(&Config::default(), &inv, "eth0");
    assert_eq!(
        plan.plan().unwrap().v6_net,
        "2001:db8:1::".parse::<Ipv6Addr>().unwrap()
    );

    u.v6_addrs = vec![
        V6Addr {
            temporary: true,
            ..v6("2001:db8:7::99")
        },
        V6Addr {
            deprecated: true,
            ..v6("2001:db8:8::5")
        },
        v6("fd00:1::5"),
        v6("2001:db8:9::5"),
    ];
    let inv = inventory([u]);
    let plan = decide_in(&Config::default(), &inv, "eth0");
    assert_eq!(
        plan.plan().unwrap().v6_net,
        "2001:db8:9::".parse::<Ipv6Addr>().unwrap()
    );
}

#[test]
fn choose_v6_source_preference_order() {
    let dep = V6Addr {
        deprecated: true,
        ..v6("2001:db8:1::1")
    };
    let tmp = V6Addr {
        temporary: true,
        ..v6("2001:db8:2::1")
    };
    let ula = v6("fd12:3456::1");
    let good = v6("2001:db8:3::1");
    let tentative = V6Addr {
        tentative: true,
        ..v6("2001:db8:4::1")
    };
    let pick = |addrs: &[V6Addr]| choose_v6_source(addrs).map(|a| a.addr.to_string());
    assert_eq!(
        pick(&[dep.clone(), tmp.clone(), ula.clone(), good.clone()]),
        Some("2001:db8:3::1".into())
    );
    assert_eq!(
        pick(&[dep.clone(), tmp.clone(), ula.clone()]),
        Some("fd12:3456::1".into())
    );
    assert_eq!(
        pick(&[dep.clone(), tmp.clone()]),
        Some("2001:db8:2::1".into())
    );
    assert_eq!(
        pick(&[dep.clone(), tentative.clone()]),
        Some("2001:db8:1::1".into())
    );
    assert_eq!(pick(&[tentative]), None);
    // Among equals, the first listed: stable.
    assert_eq!(
        pick(&[v6("2001:db8:5::1"), v6("2001:db8:6::1")]),
        Some("2001:db8:5::1".into())
    );
}

#[test]
fn v6_net_is_the_slash64() {
    assert_eq!(
        slash64("2001:db8:1:2:3:4:5:6".parse().unwrap()),
        "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap()
    );
    let mut u = v6_only(2, "eth0");
    u.v6_addrs = vec![V6Addr {
        prefix_len: 48,
        ..v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
    }];
    let inv = inventory([u]);
    let plan = decide_in(&Config::default(), &inv, "eth0");
    assert_eq!(
        plan.plan().unwrap().v6_net,
        "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap()
    );
    assert!(plan.plan().unwrap().v6_covered, "a /48 covers its /64s");
}

fn onlink(oif: u32, net: &str) -> OnLinkRoute {
    OnLinkRoute {
        oif,
        net: net.parse().unwrap(),
        metric: 256,
    }
}

fn net(net: &str, covered: bool) -> Option<ClatNet> {
    Some(ClatNet {
        net: net.parse().unwrap(),
        covered,
    })
}

/// A DHCPv6-only uplink: a global /128 (autoconf off), the RA's on-link /64 as a route.
fn dhcpv6_only(ifindex: u32, name: &str) -> Uplink {
    let mut u = v6_only(ifindex, name);
    u.v6_addrs = vec![
        v6("fe80::1"),
        V6Addr {
            prefix_len: 128,
            ..v6("2001:db8:1::100")
        },
    ];
    u.onlink_v6 = vec![onlink(ifindex, "2001:db8:1::")];
    u
}

#[test]
fn dhcpv6_slash128_uses_the_onlink_slash64_not_covered() {
    let inv = inventory([dhcpv6_only(2, "eth0")]);
    let d = decide_in(&Config::default(), &inv, "eth0");
    let plan = d.plan().unwrap();
    assert_eq!(plan.v6_net, "2001:db8:1::".parse::<Ipv6Addr>().unwrap());
    assert!(!plan.v6_covered);
}

#[test]
fn slash128_without_onlink_slash64_waits_and_says_so() {
    let mut u = dhcpv6_only(2, "eth0");
    // A link-local or multicast "on-link /64" is no candidate.
    u.onlink_v6 = vec![onlink(2, "fe80::"), onlink(2, "ff02::")];
    let inv = inventory([u]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "no on-link /64 on eth0 for the CLAT address (only 2001:db8:1::100/128)",
    );
    // No usable address at all keeps the older, earlier reason.
    let mut u = dhcpv6_only(2, "eth0");
    u.v6_addrs.retain(|a| !a.global);
    let inv = inventory([u]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "no global IPv6 address yet",
    );
}

#[test]
fn clat_net_choice_follows_rfc6724s_spirit() {
    let mut u = v6_only(2, "eth0");
    let slash128 = |a: &str| V6Addr {
        prefix_len: 128,
        ..v6(a)
    };
    let deprecated = |a: V6Addr| V6Addr {
        deprecated: true,
        ..a
    };

    // An address's prefix before a bare on-link route, whatever the order.
    u.v6_addrs = vec![v6("2001:db8:2::5")];
    u.onlink_v6 = vec![onlink(2, "2001:db8:1::"), onlink(2, "2001:db8:2::")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:2::", true));

    // Global before ULA, even a bare on-link global before a ULA address.
    u.v6_addrs = vec![v6("fd00:1::5")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:1::", false));
    u.onlink_v6.clear();
    assert_eq!(choose_clat_net(&u), net("fd00:1::", true));

    // Renumbering with SLAAC: the old prefix's address deprecated, the new one preferred.
    u.v6_addrs = vec![deprecated(v6("2001:db8:a::5")), v6("2001:db8:b::5")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:b::", true));
    // Only deprecated: still used (avoided, not refused).
    u.v6_addrs = vec![deprecated(v6("2001:db8:a::5"))];
    assert_eq!(choose_clat_net(&u), net("2001:db8:a::", true));

    // Renumbering with DHCPv6: the old /128 deprecated; the new on-link /64 has no address yet
    // (not deprecated) or a fresh one.
    u.v6_addrs = vec![deprecated(slash128("2001:db8:a::100"))];
    u.onlink_v6 = vec![onlink(2, "2001:db8:a::"), onlink(2, "2001:db8:b::")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:b::", false));
    u.v6_addrs.push(slash128("2001:db8:b::100"));
    assert_eq!(choose_clat_net(&u), net("2001:db8:b::", false));

    // The kernel's prefix route of a covered /64 is the same candidate, still covered.
    u.v6_addrs = vec![v6("2001:db8:c::5")];
    u.onlink_v6 = vec![onlink(2, "2001:db8:c::")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:c::", true));

    // Stable among equals: the first listed.
    u.v6_addrs = vec![v6("2001:db8:d::5"), v6("2001:db8:c::5")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:d::", true));
    u.v6_addrs = vec![slash128("2001:db8:f::1")];
    u.onlink_v6 = vec![onlink(2, "2001:db8:e::"), onlink(2, "2001:db8:d::")];
    assert_eq!(choose_clat_net(&u), net("2001:db8:e::", false));

    // Tentative addresses cover nothing.
    u.v6_addrs = vec![V6Addr {
        tentative: true,
        ..v6("2001:db8:9::5")
    }];
    u.onlink_v6.clear();
    assert_eq!(choose_clat_net(&u), None);
}

#[test]
fn the_clat_moves_when_its_prefix_is_deprecated() {
    let cfg = Config::default();
    let mut u = v6_only(2, "eth0");
    u.v6_addrs = vec![v6("2001:db8:a::5")];
    let first = decide(&cfg, &inventory([u.clone()]), &u, nat64());
    u.v6_addrs = vec![
        V6Addr {
            deprecated: true,
            ..v6("2001:db8:a::5")
        },
        v6("2001:db8:b::5"),
    ];
    let second = decide(&cfg, &inventory([u.clone()]), &u, nat64());
    assert_eq!(
        first.plan().unwrap().v6_net,
        "2001:db8:a::".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        second.plan().unwrap().v6_net,
        "2001:db8:b::".parse::<Ipv6Addr>().unwrap()
    );
    assert_ne!(first, second, "a different plan restarts the CLAT");
}

#[test]
fn ipv6_default_route_required() {
    let mut u = v6_only(2, "eth0");
    u.v6_default_route = false;
    let inv = inventory([u]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "no IPv6 default route",
    );
}

#[test]
fn native_ipv4_host_check() {
    // Another link with an IPv4 default route: native IPv4 on the host.
    let mut eth1 = v6_only(3, "eth1");
    eth1.v4_addrs = vec![v4("198.51.100.2", 24)];
    eth1.v4_default_route = true;
    let inv = inventory([v6_only(2, "eth0"), eth1.clone()]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "native IPv4: default route via eth1",
    );
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth1"),
        SkipState::Waiting,
        "native IPv4: default route via eth1",
    );

    // An IPv4 address without a default route is not native IPv4 for "host".
    eth1.v4_default_route = false;
    let inv = inventory([v6_only(2, "eth0"), eth1]);
    assert!(decide_in(&Config::default(), &inv, "eth0").plan().is_some());
}

#[test]
fn our_own_ipv4_default_route_is_not_native_ipv4() {
    // eth0's CLAT is running: its v4-eth0 carries an IPv4 default route. That must not make
    // eth0 (or a second IPv6-only uplink) see "native IPv4" and stop its CLAT.
    let inv = inventory([v6_only(2, "eth0"), clat_tun(9, "eth0"), v6_only(3, "wlan0")]);
    assert!(!inv.has_native_v4_default());
    assert!(decide_in(&Config::default(), &inv, "eth0").plan().is_some());
    assert!(decide_in(&Config::default(), &inv, "wlan0")
        .plan()
        .is_some());

    // Without the alias, a link that is not a tunnel would be anyone's, and would count.
    let mut foreign = clat_tun(9, "eth0");
    foreign.alias = None;
    foreign.kind = None;
    let inv = inventory([v6_only(2, "eth0"), foreign]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "native IPv4: default route via v4-eth0",
    );
}

#[test]
fn native_ipv4_link_check() {
    let cfg = config("[[uplink]]\nmatch = \"*\"\nipv4_check = \"link\"\n");
    let mut u = v6_only(2, "eth0");
    u.v4_addrs = vec![v4("198.51.100.2", 24)];
    let inv = inventory([u.clone()]);
    assert_skip(
        &decide_in(&cfg, &inv, "eth0"),
        SkipState::Waiting,
        "native IPv4: 198.51.100.2/24 on eth0",
    );

    // With "link", another link's IPv4 default route does not matter.
    let mut eth1 = v6_only(3, "eth1");
    eth1.v4_addrs = vec![v4("203.0.113.7", 24)];
    eth1.v4_default_route = true;
    let inv = inventory([v6_only(2, "eth0"), eth1]);
    assert!(decide_in(&cfg, &inv, "eth0").plan().is_some());

    // Addresses that are not native IPv4: link-local, not global scope, loopback, and the
    // IPv4 Service Continuity Prefix (a CLAT's or DS-Lite's own).
    for a in [
        v4("169.254.3.4", 16),
        V4Addr {
            global: false,
            ..v4("198.51.100.2", 24)
        },
        v4("127.0.0.2", 8),
        v4("192.0.0.4", 29),
        v4("192.0.0.2", 29),
    ] {
        let mut u = v6_only(2, "eth0");
        u.v4_addrs = vec![a.clone()];
        let inv = inventory([u]);
        assert!(
            decide_in(&cfg, &inv, "eth0").plan().is_some(),
            "{a:?} counted as native"
        );
    }
    // 192.0.0.8 is outside the /29: native.
    u.v4_addrs = vec![v4("192.0.0.8", 24)];
    let inv = inventory([u]);
    assert!(decide_in(&cfg, &inv, "eth0").plan().is_none());
}

#[test]
fn prefix_must_be_known_and_reason_lists_the_order() {
    let inv = inventory([v6_only(2, "eth0")]);
    let u = inv.by_name("eth0").unwrap();
    assert_skip(
        &decide(&Config::default(), &inv, u, None),
        SkipState::Waiting,
        "no NAT64 prefix known (tried static, pref64, dns64)",
    );
    let cfg = config("[discovery]\norder = [\"dns64\", \"pref64\"]\n");
    assert_skip(
        &decide(&cfg, &inv, u, None),
        SkipState::Waiting,
        "no NAT64 prefix known (tried dns64, pref64)",
    );
}

/// The first failing check gives the reason: peel the failures off one at a time, in the
/// documented order, from an uplink on which every check fails.
#[test]
fn checks_apply_in_order() {
    let cfg = config("[[uplink]]\nmatch = \"eth*\"\nenable = false\n");
    let mut u = Uplink::new(2, "eth0");
    u.v6_addrs = vec![V6Addr {
        tentative: true,
        ..v6("2001:db8:1::5")
    }];
    let mut eth1 = v6_only(3, "eth1");
    eth1.v4_default_route = true;
    let mut inv = inventory([u.clone(), eth1]);
    let mut cfg = cfg;
    let mut prefix = None;

    let mut steps: Vec<(SkipState, String)> = Vec::new();
    let mut run = |u: &Uplink, inv: &Inventory, cfg: &Config, prefix| {
        let d = decide(cfg, inv, u, prefix);
        if let Decision::Skip { state, reason } = d {
            steps.push((state, reason));
            false
        } else {
            true
        }
    };

    u.loopback = true;
    assert!(!run(&u, &inv, &cfg, prefix));
    u.loopback = false;
    u.alias = Some("autoclat:eth9".into());
    assert!(!run(&u, &inv, &cfg, prefix));
    u.alias = None;
    assert!(!run(&u, &inv, &cfg, prefix));
    u.admin_up = true;
    assert!(!run(&u, &inv, &cfg, prefix));
    u.carrier = true;
    assert!(!run(&u, &inv, &cfg, prefix));
    cfg = Config::default();
    assert!(!run(&u, &inv, &cfg, prefix));
    u.v6_addrs[0].tentative = false;
    assert!(!run(&u, &inv, &cfg, prefix));
    u.v6_default_route = true;
    assert!(!run(&u, &inv, &cfg, prefix));
    inv.links.get_mut(&3).unwrap().v4_default_route = false;
    assert!(!run(&u, &inv, &cfg, prefix));
    prefix = nat64();
    assert!(run(&u, &inv, &cfg, prefix));

    use SkipState::{Disabled, Waiting};
    let steps: Vec<(SkipState, &str)> = steps.iter().map(|(s, r)| (*s, r.as_str())).collect();
    assert_eq!(
        steps,
        vec![
            (Disabled, "loopback interface"),
            (Disabled, "autoclat's own CLAT interface"),
            (Waiting, "link is administratively down"),
            (Waiting, "no carrier"),
            (Disabled, "disabled by rule `eth*` in config"),
            (
                Waiting,
                "no global IPv6 address yet (2001:db8:1::5 is tentative)"
            ),
            (Waiting, "no IPv6 default route"),
            (Waiting, "native IPv4: default route via eth1"),
            (
                Waiting,
                "no NAT64 prefix known (tried static, pref64, dns64)"
            ),
        ]
    );
}

#[test]
fn two_ipv6_only_uplinks_both_run() {
    let inv = inventory([
        v6_only(2, "eth0"),
        clat_tun(10, "eth0"),
        v6_only(3, "wlan0"),
        clat_tun(11, "wlan0"),
    ]);
    for name in ["eth0", "wlan0"] {
        assert!(
            decide_in(&Config::default(), &inv, name).plan().is_some(),
            "{name}"
        );
    }
    for name in ["v4-eth0", "v4-wlan0"] {
        assert_eq!(
            decide_in(&Config::default(), &inv, name).skip_state(),
            Some(SkipState::Disabled)
        );
    }
}

#[test]
fn decision_serialises_for_status() {
    let d = Decision::Skip {
        state: SkipState::Waiting,
        reason: "no carrier".into(),
    };
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        serde_json::json!({"skip": {"state": "waiting", "reason": "no carrier"}})
    );
    assert_eq!(
        serde_json::to_value(SkipState::Disabled).unwrap(),
        "disabled"
    );
    assert_eq!(SkipState::Waiting.to_string(), "waiting");
    let inv = inventory([v6_only(2, "eth0")]);
    let d = decide_in(&Config::default(), &inv, "eth0");
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["run"]["prefix"], "2001:db8:64::/96");
    assert_eq!(json["run"]["prefix_source"], "dns64");
    assert_eq!(json["run"]["v6_net"], "2001:db8:1::");
    assert_eq!(json["run"]["fast_path"], "auto");
}

/// Issue 8: a NAT64 prefix inside the uplink's own prefix (static, or from DNS64) is refused
/// with the reason, whatever its source.
#[test]
fn a_nat64_prefix_inside_the_uplinks_own_prefix_is_refused() {
    let inv = inventory([v6_only(2, "eth0")]);
    let up = inv.by_name("eth0").unwrap();
    for source in [PrefixSource::Static, PrefixSource::Dns64] {
        let d = decide(
            &Config::default(),
            &inv,
            up,
            Some(("2001:db8:1::/96".parse().unwrap(), source)),
        );
        assert_skip(
            &d,
            SkipState::Waiting,
            &format!(
                "NAT64 prefix ({source}) refused: `2001:db8:1::/96` is inside the uplink's own prefix 2001:db8:1::/64"
            ),
        );
    }
}

/// Issue 8: a VPN over the CLAT (OpenVPN's `default dev tun0 metric 50`, a WireGuard or other IP
/// tunnel default route) is not native IPv4 — the CLAT carries the VPN's own transport and must
/// stay. Native IPv4 on a real uplink still counts.
#[test]
fn a_default_route_through_a_tunnel_is_not_native_ipv4() {
    for kind in ["tun", "wireguard", "ipip", "gre", "sit", "xfrm"] {
        let mut vpn = v6_only(7, "vpn0");
        vpn.kind = Some(kind.into());
        vpn.v6_addrs.clear();
        vpn.v4_addrs = vec![v4("198.51.100.7", 32)];
        vpn.v4_default_route = true;
        let inv = inventory([v6_only(2, "eth0"), clat_tun(9, "eth0"), vpn]);
        assert!(!inv.has_native_v4_default(), "{kind}");
        assert!(
            decide_in(&Config::default(), &inv, "eth0").plan().is_some(),
            "{kind}"
        );
    }
    let mut eth1 = v6_only(3, "eth1");
    eth1.kind = Some("veth".into());
    eth1.v4_addrs = vec![v4("203.0.113.2", 24)];
    eth1.v4_default_route = true;
    let mut vpn = v6_only(7, "tun0");
    vpn.kind = Some("tun".into());
    vpn.v4_default_route = true;
    let inv = inventory([v6_only(2, "eth0"), eth1, vpn]);
    assert_skip(
        &decide_in(&Config::default(), &inv, "eth0"),
        SkipState::Waiting,
        "native IPv4: default route via eth1",
    );
}

/// Issue 8: the plan's MTU is the uplink's IPv6 MTU (an RA's MTU option lowers it below the
/// link MTU), so the tun follows it.
#[test]
fn the_plan_takes_the_uplinks_ipv6_mtu() {
    let mut up = v6_only(2, "eth0");
    up.mtu = 1500;
    up.v6_mtu = Some(1400);
    let inv = inventory([up.clone()]);
    assert_eq!(
        decide_in(&Config::default(), &inv, "eth0")
            .plan()
            .unwrap()
            .uplink_mtu,
        1400
    );
    // Never above the link MTU.
    up.v6_mtu = Some(9000);
    let inv = inventory([up]);
    assert_eq!(
        decide_in(&Config::default(), &inv, "eth0")
            .plan()
            .unwrap()
            .uplink_mtu,
        1500
    );
}

/// Issue 8 / RFC 6724 rule 5.5: of two /64s with addresses, the one the default gateway
/// advertised is the CLAT's, even when the kernel lists the other first.
#[test]
fn the_default_gateways_prefix_is_preferred() {
    use autoclat::discovery::ndopt::RaPrefix;
    use autoclat::watch::inventory::{DefaultRoute, Family, NetEvent};
    use std::time::{Duration, Instant};
    let mut up = v6_only(2, "eth0");
    up.v6_addrs = vec![v6("2001:db8:2::5"), v6("2001:db8:1::5")];
    let mut inv = inventory([up]);
    let now = Instant::now();
    let net_of = |inv: &Inventory| {
        decide_in(&Config::default(), inv, "eth0")
            .plan()
            .unwrap()
            .v6_net
            .to_string()
    };
    assert_eq!(
        net_of(&inv),
        "2001:db8:2::",
        "first listed while nothing is known"
    );
    let gw: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    inv.apply(
        NetEvent::Route {
            routes: vec![DefaultRoute {
                family: Family::V6,
                oif: 2,
                gateway: Some(gw.into()),
                metric: 1024,
                pref_src: None,
            }],
            replace: false,
        },
        now,
    );
    inv.apply(
        NetEvent::RaPrefixes {
            ifindex: 2,
            router: gw,
            prefixes: vec![RaPrefix {
                prefix: "2001:db8:1::".parse().unwrap(),
                len: 64,
                on_link: true,
                autonomous: true,
                valid: Duration::from_secs(600),
                preferred: Duration::from_secs(600),
            }],
        },
        now,
    );
    assert_eq!(net_of(&inv), "2001:db8:1::");
}

#[test]
fn a_router_downstream_interface_never_gets_a_clat() {
    // A LAN bridge with a delegated IPv6 prefix and no IPv4 looks just like an uplink.
    let inv = inventory([v6_only(2, "eth0"), v6_only(3, "br-lan")]);
    let cfg = config("[router]\ndownstream = [\"br-*\"]\n");
    assert_skip(
        &decide_in(&cfg, &inv, "br-lan"),
        SkipState::Disabled,
        "a downstream interface of [router]",
    );
    assert!(matches!(decide_in(&cfg, &inv, "eth0"), Decision::Run(_)));
    // Without [router] the same bridge is an uplink like any other.
    assert!(matches!(
        decide_in(&config(""), &inv, "br-lan"),
        Decision::Run(_)
    ));
}
