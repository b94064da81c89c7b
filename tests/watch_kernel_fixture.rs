//! Replays real kernel netlink messages (captured by `watch_fixtures/capture.py` in a namespace)
//! through the pure conversion and the inventory, checking the state after each step.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use autoclat::discovery::Nat64Prefix;
use autoclat::watch::convert::{message_events, nduseropt_messages, RTM_NEWNDUSEROPT};
use autoclat::watch::{Family, Inventory, NetEvent, Uplink};
use netlink_packet_core::NetlinkMessage;
use netlink_packet_route::RouteNetlinkMessage;

const FIXTURE: &str = include_str!("watch_fixtures/kernel_events.txt");

struct Msg {
    label: String,
    kind: u16,
    bytes: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn messages() -> Vec<Msg> {
    FIXTURE
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Msg {
                label: f[0].to_string(),
                kind: f[1].parse().unwrap(),
                bytes: hex(f[3]),
            }
        })
        .collect()
}

fn events(m: &Msg) -> Vec<NetEvent> {
    if m.kind == RTM_NEWNDUSEROPT {
        // A parse failure shows up as a missing PREF64/RDNSS in the test that looks for them.
        return nduseropt_messages(&m.bytes)
            .into_iter()
            .filter_map(|o| o.ok().map(NetEvent::RaOptions))
            .collect();
    }
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m.bytes)
        .unwrap_or_else(|e| panic!("{}: kernel message does not parse: {e}", m.label));
    message_events(&msg)
}

/// Replays the fixture step by step; calls `check(label, inventory)` after each step's messages.
fn replay(now: Instant, mut check: impl FnMut(&str, &Inventory)) {
    let msgs = messages();
    let mut inv = Inventory::default();
    let mut i = 0;
    while i < msgs.len() {
        let label = msgs[i].label.clone();
        while i < msgs.len() && msgs[i].label == label {
            for ev in events(&msgs[i]) {
                inv.apply(ev, now);
            }
            i += 1;
        }
        check(&label, &inv);
    }
}

fn w4a(inv: &Inventory) -> &Uplink {
    inv.by_name("w4a").expect("w4a known")
}

fn has_v6(l: &Uplink, a: &str) -> bool {
    let a: Ipv6Addr = a.parse().unwrap();
    l.v6_addrs.iter().any(|x| x.addr == a)
}

#[test]
fn every_kernel_message_of_the_fixture_parses() {
    for m in messages() {
        if m.kind == RTM_NEWNDUSEROPT {
            let parsed = nduseropt_messages(&m.bytes);
            assert_eq!(parsed.len(), 1);
            let opt = parsed[0]
                .as_ref()
                .expect("real kernel ND user option parses");
            assert_eq!(opt.icmp_type, 134);
            assert_eq!(
                opt.options.len(),
                1,
                "the kernel sends one option per message"
            );
            assert!(opt.source.is_some_and(|s| s.segments()[0] == 0xfe80));
        } else {
            // Panics with the step's label if a message does not parse.
            let _ = events(&m);
        }
    }
}

#[test]
fn links_addresses_and_routes_follow_the_kernel() {
    let mut seen = Vec::new();
    replay(Instant::now(), |label, inv| {
        seen.push(label.to_string());
        match label {
            "veth_add" => {
                let a = w4a(inv);
                assert_eq!(a.kind.as_deref(), Some("veth"));
                assert!(!a.admin_up && !a.carrier && !a.loopback);
                assert_eq!(a.mtu, 1500);
                assert!(inv.by_name("w4b").is_some());
            }
            "up" => {
                let a = w4a(inv);
                assert!(a.admin_up && a.carrier);
                // `ip link set alias` sends no event of its own; the next RTM_NEWLINK has it.
                assert_eq!(a.alias.as_deref(), Some("autoclat:test"));
                assert!(a.is_ours());
            }
            "v6addr" => {
                let a = w4a(inv);
                let x = a
                    .v6_addrs
                    .iter()
                    .find(|x| x.addr == "2001:db8:1::5".parse::<Ipv6Addr>().unwrap())
                    .expect("global address");
                assert_eq!(x.prefix_len, 64);
                assert!(x.global && !x.tentative && !x.dad_failed && !x.deprecated);
                let ll = a.v6_addrs.iter().find(|x| x.addr.segments()[0] == 0xfe80);
                assert!(ll.is_some_and(|l| !l.global), "link-local is not global");
                assert!(!a.v6_default_route);
            }
            "v6route" => {
                let a = w4a(inv);
                assert!(a.v6_default_route && !a.v4_default_route);
                assert_eq!(a.default_routes.len(), 1);
                let r = &a.default_routes[0];
                assert_eq!(r.family, Family::V6);
                assert_eq!(r.metric, 100);
                assert_eq!(r.gateway, Some("2001:db8:1::1".parse().unwrap()));
            }
            "v4addr" => {
                let a = w4a(inv);
                assert_eq!(a.v4_addrs.len(), 1);
                assert_eq!(a.v4_addrs[0].addr, Ipv4Addr::new(198, 51, 100, 2));
                assert_eq!(a.v4_addrs[0].prefix_len, 24);
                assert!(a.v4_addrs[0].global);
            }
            "v4route" => {
                assert!(w4a(inv).v4_default_route);
                // w4a carries our alias, so its route is not "native IPv4".
                assert!(w4a(inv).is_ours() && !inv.has_native_v4_default());
            }
            "v4route_del" => assert!(!w4a(inv).v4_default_route && w4a(inv).v6_default_route),
            "v4addr_del" => assert!(w4a(inv).v4_addrs.is_empty()),
            "v6route_del" => assert!(!w4a(inv).v6_default_route),
            "v6addr_del" => assert!(!has_v6(w4a(inv), "2001:db8:1::5")),
            "down" => {
                let a = w4a(inv);
                assert!(!a.admin_up && !a.carrier);
                assert!(a.v6_addrs.is_empty(), "IPv6 addresses go with the link");
            }
            "mp4" => {
                let b = inv.by_name("w4b").unwrap();
                assert!(w4a(inv).v4_default_route && b.v4_default_route);
                assert_eq!(
                    b.default_routes[0].gateway,
                    Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)))
                );
            }
            "mp4_replace" => {
                assert!(!w4a(inv).v4_default_route, "replaced away from w4a");
                assert!(inv.by_name("w4b").unwrap().v4_default_route);
            }
            "mp4_del" => {
                assert!(!inv.by_name("w4b").unwrap().v4_default_route);
                assert!(!inv.has_native_v4_default());
            }
            "v4_silent" => {
                // The kernel flushed the default route with the link's last address, silently.
                assert!(!w4a(inv).v4_default_route);
                assert!(w4a(inv).default_routes.is_empty());
            }
            "veth_del" => assert!(inv.by_name("w4a").is_none() && inv.by_name("w4b").is_none()),
            _ => {}
        }
    });
    for step in [
        "veth_add",
        "up",
        "v6route",
        "mp4_replace",
        "v4_silent",
        "veth_del",
    ] {
        assert!(seen.iter().any(|s| s == step), "fixture has step {step}");
    }
}

#[test]
fn pref64_and_rdnss_from_real_router_advertisements() {
    let now = Instant::now();
    let prefix: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
    let dns: Ipv6Addr = "2001:db8:1::53".parse().unwrap();
    let mut checked = 0;
    replay(now, |label, inv| match label {
        "ra" => {
            let a = w4a(inv);
            let p = a.pref64().expect("PREF64 learnt");
            assert_eq!(p.prefix, prefix);
            assert_eq!(p.expires, now + Duration::from_secs(600));
            assert_eq!(a.rdnss.len(), 1);
            assert_eq!(a.rdnss[0].server, dns);
            assert_eq!(a.rdnss[0].expires, now + Duration::from_secs(300));
            assert_eq!(inv.next_expiry(), Some(now + Duration::from_secs(300)));
            checked += 1;
        }
        "ra_withdraw" => {
            let a = w4a(inv);
            assert!(a.pref64().is_none(), "lifetime 0 withdraws the prefix");
            assert!(a.rdnss.is_empty(), "lifetime 0 withdraws the server");
            checked += 1;
        }
        _ => {}
    });
    assert_eq!(checked, 2);
}
