//! The uplinks people really have (issue 8), in the netns topology (netns-tests/README.md):
//! VPNs over the CLAT, a restarted daemon on a PREF64-only network, PREF64 against DNS64, two
//! routers, a flapping router, hostile RAs. Root only; they skip otherwise. Waits are bounded
//! generously and nothing asserts on timing.

#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const REAL_CLATD: &str = "[daemon]\nclatd_path = \"\"\n";

/// The VPN's inner addresses: the server end and the client end (documentation range).
const VPN_SERVER: &str = "203.0.113.65";
const VPN_CLIENT: &str = "203.0.113.66";

fn pid_of(u: &Value) -> u64 {
    u["pid"].as_u64().unwrap_or(0)
}

fn running_with(d: &Daemon, prefix: &str, source: &str) -> Value {
    d.wait_uplink("up0", &format!("running on {prefix} from {source}"), |u| {
        u["state"] == "running" && u["prefix"] == prefix && u["prefix_source"] == source
    })
}

/// How many CLATs the daemon has brought up so far (its log says each).
fn clats_started(d: &Daemon) -> usize {
    d.log_text().matches("CLAT up: ").count()
}

/// For `secs` seconds, once a second: the CLAT on up0 stays running with the same translator,
/// and `ping` of `dst` inside the client namespace answers. Returns the replies counted.
fn hold_for(topo: &Topology, d: &Daemon, secs: u32, pid: u64, dst: &str) -> u32 {
    let dst: IpAddr = dst.parse().unwrap();
    let mut replies = 0;
    for i in 0..secs {
        let t = Instant::now();
        let u = d.uplink("up0").unwrap();
        assert_eq!(u["state"], "running", "second {i}: {u}");
        assert_eq!(pid_of(&u), pid, "second {i}: the CLAT was restarted: {u}");
        if ping(&topo.cli, dst, Duration::from_millis(900)) {
            replies += 1;
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    replies
}

/// Issue 8, item 1: an OpenVPN-style tun VPN whose UDP transport reaches an IPv4-only
/// endpoint through the CLAT: the client adds `ENDPOINT/32 dev v4-up0` and `default dev vpn0
/// metric 50`. The CLAT stays up (a tunnel's default route is not native IPv4) and carries the
/// VPN for 30 s. Native IPv4 on the real uplink then still stops it.
#[test]
fn a_tun_vpn_over_the_clat_keeps_it_up() {
    if skip_unless_root("a_tun_vpn_over_the_clat_keeps_it_up") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        native_ipv4: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let d = topo.start_autoclat(REAL_CLATD);
    let u = running_with(&d, DEFAULT_PREFIX, "dns64");
    let pid = pid_of(&u);
    let tun = u["v4_iface"].as_str().unwrap().to_owned();

    // The VPN server: socat between UDP 1194 on server4 and a tun.
    let vpn = format!("vpn{}", &topo.id[..5.min(topo.id.len())]);
    topo.spawn(
        Ns::Server,
        "vpn-server",
        &[
            "socat",
            &format!("UDP4-LISTEN:1194,bind={SERVER4},reuseaddr"),
            &format!("TUN:{VPN_SERVER}/30,tun-name={vpn},tun-type=tun,iff-no-pi,iff-up"),
        ],
    );
    // Its client, as OpenVPN sets it up: the endpoint through the CLAT, the VPN as default.
    topo.exec_ok(
        Ns::Client,
        &["ip", "route", "add", &format!("{SERVER4}/32"), "dev", &tun],
    );
    topo.spawn(
        Ns::Client,
        "vpn-client",
        &[
            "socat",
            &format!("UDP4:{SERVER4}:1194"),
            &format!("TUN:{VPN_CLIENT}/30,tun-name={vpn},tun-type=tun,iff-no-pi,iff-up"),
        ],
    );
    wait_for(WAIT, "the VPN's tun", || topo.link(Ns::Client, &vpn));
    topo.exec_ok(
        Ns::Client,
        &["ip", "route", "add", "default", "dev", &vpn, "metric", "50"],
    );
    assert!(
        wait_until(WAIT, || ping(
            &topo.cli,
            VPN_SERVER.parse().unwrap(),
            Duration::from_secs(1)
        )),
        "no ping through the VPN over the CLAT"
    );
    let replies = hold_for(&topo, &d, 30, pid, VPN_SERVER);
    assert!(replies >= 25, "only {replies} of 30 pings through the VPN");
    assert!(!d.log_text().contains("native IPv4"), "{}", d.log_text());

    // Native IPv4 on the real uplink still counts.
    topo.add_native_ipv4("up0");
    let w = d.wait_state("up0", "waiting");
    assert!(
        w["reason"]
            .as_str()
            .unwrap()
            .contains("native IPv4: default route via up0"),
        "{w}"
    );
}

/// Issue 8, item 1: WireGuard (userspace, `wireguard-go`) with `wg-quick`'s policy routing —
/// the default route in table 51820 for everything without the fwmark, the tunnel's own
/// packets (fwmark 51820) through the main table and so the CLAT to an IPv4-only endpoint. The
/// CLAT stays and carries the tunnel for 30 s.
#[test]
fn wireguard_with_wg_quick_policy_routing_over_the_clat() {
    if skip_unless_root("wireguard_with_wg_quick_policy_routing_over_the_clat") {
        return;
    }
    if run(&["which", "wireguard-go", "wg"]).status.code() != Some(0) {
        panic!("wireguard-go and wg (Debian wireguard-go, wireguard-tools) are needed");
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat(REAL_CLATD);
    let u = running_with(&d, DEFAULT_PREFIX, "dns64");
    let pid = pid_of(&u);

    let id = &topo.id[..7.min(topo.id.len())];
    let (wgc, wgs) = (format!("wc{id}"), format!("ws{id}"));
    let key = |name: &str| {
        let k = run_ok(&["wg", "genkey"]).trim().to_owned();
        let path = topo.dir.join(format!("{name}.key"));
        std::fs::write(&path, &k).unwrap();
        let out = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        (
            path,
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        )
    };
    let (ckey, cpub) = key(&wgc);
    let (skey, spub) = key(&wgs);
    for (ns, name) in [(Ns::Server, &wgs), (Ns::Client, &wgc)] {
        topo.spawn(
            ns,
            &format!("wireguard-go-{name}"),
            &["wireguard-go", "-f", name],
        );
        wait_for(WAIT, "the WireGuard tun", || topo.link(ns, name));
    }
    topo.exec_ok(
        Ns::Server,
        &[
            "wg",
            "set",
            &wgs,
            "private-key",
            skey.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &cpub,
            "allowed-ips",
            &format!("{VPN_CLIENT}/32"),
        ],
    );
    let vpn_server = format!("{VPN_SERVER}/32");
    let vpn_client = format!("{VPN_CLIENT}/32");
    topo.exec_ok(Ns::Server, &["ip", "addr", "add", &vpn_server, "dev", &wgs]);
    topo.exec_ok(Ns::Server, &["ip", "link", "set", &wgs, "up"]);
    topo.exec_ok(
        Ns::Server,
        &["ip", "route", "add", &vpn_client, "dev", &wgs],
    );
    topo.exec_ok(
        Ns::Client,
        &[
            "wg",
            "set",
            &wgc,
            "private-key",
            ckey.to_str().unwrap(),
            "fwmark",
            "51820",
            "peer",
            &spub,
            "endpoint",
            &format!("{SERVER4}:51820"),
            "allowed-ips",
            "0.0.0.0/0",
            "persistent-keepalive",
            "5",
        ],
    );
    // What wg-quick does for AllowedIPs = 0.0.0.0/0.
    for args in [
        vec!["addr", "add", vpn_client.as_str(), "dev", &wgc],
        vec!["link", "set", &wgc, "up"],
        vec![
            "-4",
            "route",
            "add",
            "0.0.0.0/0",
            "dev",
            &wgc,
            "table",
            "51820",
        ],
        vec![
            "-4", "rule", "add", "not", "fwmark", "51820", "table", "51820",
        ],
        vec![
            "-4",
            "rule",
            "add",
            "table",
            "main",
            "suppress_prefixlength",
            "0",
        ],
    ] {
        let mut v = vec!["ip"];
        v.extend(args);
        topo.exec_ok(Ns::Client, &v);
    }
    assert!(
        wait_until(WAIT, || ping(
            &topo.cli,
            VPN_SERVER.parse().unwrap(),
            Duration::from_secs(1)
        )),
        "no ping through WireGuard over the CLAT"
    );
    let replies = hold_for(&topo, &d, 30, pid, VPN_SERVER);
    assert!(
        replies >= 25,
        "only {replies} of 30 pings through WireGuard"
    );
    assert!(!d.log_text().contains("native IPv4"), "{}", d.log_text());
}

/// Issue 8, item 3: a network that gives PREF64 only in RAs, and never unasked (the responder
/// answers router solicitations only): a daemon started after the link is configured, and
/// started again, solicits the PREF64 and has its CLAT.
#[test]
fn a_restarted_daemon_solicits_the_pref64() {
    if skip_unless_root("a_restarted_daemon_solicits_the_pref64") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    // The kernel's own solicitations at link-up are long answered by radvd (no PREF64).
    let (_responder, answered) = topo.start_rs_responder(DEFAULT_PREFIX, 1800);
    std::thread::sleep(Duration::from_millis(300));
    let before = answered.load(Ordering::Relaxed);
    let mut d = topo.start_autoclat("");
    running_with(&d, DEFAULT_PREFIX, "pref64");
    assert!(
        answered.load(Ordering::Relaxed) > before,
        "no solicitation seen"
    );
    assert!(d.log_text().contains("router solicitation 1 of 3 sent"));
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
    drop(d);

    let seen = answered.load(Ordering::Relaxed);
    let d = topo.start_autoclat("");
    running_with(&d, DEFAULT_PREFIX, "pref64");
    assert!(
        answered.load(Ordering::Relaxed) > seen,
        "the restart solicited nothing"
    );
}

/// Issue 8, item 4 (RFC 9872): DNS64 answers first; the RA's PREF64 then confirms the same
/// prefix: same translator, `prefix_source = pref64`. A PREF64 that disagrees wins over DNS64.
#[test]
fn pref64_is_preferred_over_dns64() {
    if skip_unless_root("pref64_is_preferred_over_dns64") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let first = running_with(&d, DEFAULT_PREFIX, "dns64");
    let ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    let confirmed = running_with(&d, DEFAULT_PREFIX, "pref64");
    assert_eq!(
        pid_of(&first),
        pid_of(&confirmed),
        "restarted for the same prefix"
    );
    ra.stop();
    topo.send_pref64(DEFAULT_PREFIX, 0);
    let _ra = topo.start_pref64_sender("2001:db8:100::/56", 1800, Duration::from_secs(2));
    running_with(&d, "2001:db8:100::/56", "pref64");
}

/// Issue 8, RFC 9872: two routers on the link advertise different PREF64s; the one that is
/// the client's default gateway counts, whichever advertises last.
#[test]
fn two_routers_the_default_gateways_pref64_counts() {
    if skip_unless_root("two_routers_the_default_gateways_pref64_counts") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let gw = topo.gateway_ll();
    // From the gateway, an RA that keeps it the default router (lifetime 1800 s, as radvd's).
    let mut from_gw = pref64_ra(&DEFAULT_PREFIX.parse().unwrap(), 1800);
    from_gw[6..8].copy_from_slice(&1800u16.to_be_bytes());
    let _gateway = topo.start_ra_loop(gw, move |_| from_gw.clone(), Duration::from_secs(1));
    let _other = topo.start_pref64_sender_from(
        PREF64_SENDER_LL,
        "2001:db8:100::/56",
        1800,
        Duration::from_millis(300),
    );
    let d = topo.start_autoclat("");
    let u = running_with(&d, DEFAULT_PREFIX, "pref64");
    // Many more RAs from the other router change nothing.
    std::thread::sleep(Duration::from_secs(3));
    let later = d.uplink("up0").unwrap();
    assert_eq!(later["prefix"], DEFAULT_PREFIX, "{later}");
    assert_eq!(pid_of(&later), pid_of(&u));
}

/// Issue 8, item 5: RAs alternating two PREF64s (about 100 a second for 10 s, as reported):
/// a handful of CLAT restarts, not one per change; status shows the hold-down.
#[test]
fn a_pref64_flap_storm_restarts_the_clat_a_handful_of_times() {
    if skip_unless_root("a_pref64_flap_storm_restarts_the_clat_a_handful_of_times") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    running_with(&d, DEFAULT_PREFIX, "pref64");
    ra.stop();
    let a = pref64_ra(&DEFAULT_PREFIX.parse().unwrap(), 1800);
    let b = pref64_ra(&"2001:db8:100::/56".parse().unwrap(), 1800);
    let storm = topo.start_ra_loop(
        PREF64_SENDER_LL,
        move |n| if n % 2 == 0 { b.clone() } else { a.clone() },
        Duration::from_millis(10),
    );
    let mut held = false;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Some(u) = d.uplink("up0") {
            held |= u["reason"]
                .as_str()
                .is_some_and(|r| r.contains("held down"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    storm.stop();
    let starts = clats_started(&d);
    assert!(starts <= 6, "{starts} CLATs started in 10 s of flapping");
    assert!(held, "status never showed the hold-down");
    assert!(pid_alive(d.pid()));
}

/// Issue 8, item 6: 5,000 RAs with 89 RDNSS servers each (445,000 addresses): bounded memory,
/// `status` answers, the CLAT keeps running.
#[test]
fn an_rdnss_flood_keeps_memory_bounded_and_status_responsive() {
    if skip_unless_root("an_rdnss_flood_keeps_memory_bounded_and_status_responsive") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let _ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    running_with(&d, DEFAULT_PREFIX, "pref64");
    let flood = topo.start_ra_loop(
        PREF64_SENDER_LL,
        |n| {
            let mut ra = vec![134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            ra.extend_from_slice(&[25, (1 + 2 * 89) as u8, 0, 0, 0xff, 0xff, 0xff, 0xff]);
            for j in 0..89u16 {
                let a = Ipv6Addr::new(0x2001, 0xdb8, 0x53, (n & 0xffff) as u16, 0, 0, 0, j + 1);
                ra.extend_from_slice(&a.octets());
            }
            ra
        },
        Duration::ZERO,
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        d.uplink("up0").expect("status answers during the flood");
        std::thread::sleep(Duration::from_millis(500));
    }
    flood.stop();
    let u = d.uplink("up0").expect("status answers after the flood");
    assert_eq!(u["state"], "running", "{u}");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib < 64 * 1024, "RSS {rss_kib} KiB after the flood");
}

/// Issue 8, item 6: PREF64 values no NAT64 can have, or inside the uplink's own /64, are
/// refused with a logged reason; a real one afterwards is taken.
#[test]
fn bogus_pref64s_are_refused() {
    if skip_unless_root("bogus_pref64s_are_refused") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    for (bad, why) in [
        ("ff02::/96", "multicast"),
        ("fe80::/96", "link-local"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        (
            "2001:db8:1::/96",
            "inside the uplink's own prefix 2001:db8:1::/64",
        ),
    ] {
        topo.send_pref64(bad, 1800);
        assert!(
            wait_until(WAIT, || d
                .log_text()
                .lines()
                .any(|l| l.contains("PREF64 refused") && l.contains(why))),
            "{bad} not refused: {}",
            d.log_text()
        );
        let u = d.uplink("up0").unwrap();
        assert_eq!(u["state"], "waiting", "{bad}: {u}");
        assert!(u["prefix"].is_null(), "{bad}: {u}");
    }
    let _ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    running_with(&d, DEFAULT_PREFIX, "pref64");
}

/// Issue 8, path MTU of the uplink: an RA's MTU option (1400) lowers the uplink's IPv6 MTU, and
/// the tun follows it minus the translation overhead (1372); a later change is followed too.
#[test]
fn the_tun_mtu_follows_the_ras_mtu_option() {
    if skip_unless_root("the_tun_mtu_follows_the_ras_mtu_option") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let with_mtu = |mtu: u32| {
        let mut ra = pref64_ra(&DEFAULT_PREFIX.parse().unwrap(), 1800);
        ra.extend_from_slice(&[5, 1, 0, 0]);
        ra.extend_from_slice(&mtu.to_be_bytes());
        ra
    };
    let ra1400 = with_mtu(1400);
    let sender = topo.start_ra_loop(
        PREF64_SENDER_LL,
        move |_| ra1400.clone(),
        Duration::from_secs(1),
    );
    let d = topo.start_autoclat("");
    let u = running_with(&d, DEFAULT_PREFIX, "pref64");
    let tun = u["v4_iface"].as_str().unwrap().to_owned();
    let mtu_of = |name: &str| topo.link(Ns::Client, name).map(|l| l["mtu"].as_u64());
    assert!(
        wait_until(WAIT, || mtu_of(&tun) == Some(Some(1372))),
        "tun MTU {:?}, uplink IPv6 MTU {}",
        mtu_of(&tun),
        topo.exec_ok(Ns::Client, &["sysctl", "-n", "net.ipv6.conf.up0.mtu"])
    );
    sender.stop();
    let ra1300 = with_mtu(1300);
    let _sender = topo.start_ra_loop(
        PREF64_SENDER_LL,
        move |_| ra1300.clone(),
        Duration::from_secs(1),
    );
    assert!(
        wait_until(WAIT, || {
            let u = d.uplink("up0").unwrap();
            u["state"] == "running"
                && u["v4_iface"]
                    .as_str()
                    .is_some_and(|t| mtu_of(t) == Some(Some(1272)))
        }),
        "tun MTU not 1272 after the RA's MTU went to 1300: {:?}",
        d.uplink("up0")
    );
}

/// Issue 8, source prefix choice (RFC 6724 rule 5.5): a second router (not a default gateway)
/// advertises another autonomous /64 after radvd's, so the kernel lists its address first;
/// the CLAT still lives in the default gateway's /64.
#[test]
fn the_clat_lives_in_the_default_gateways_prefix() {
    if skip_unless_root("the_clat_lives_in_the_default_gateways_prefix") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    // Router lifetime 0, one prefix information option 2001:db8:2::/64 with L and A.
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ra.extend_from_slice(&[3, 4, 64, 0xc0]);
    ra.extend_from_slice(&1800u32.to_be_bytes());
    ra.extend_from_slice(&1800u32.to_be_bytes());
    ra.extend_from_slice(&[0; 4]);
    ra.extend_from_slice(&"2001:db8:2::".parse::<Ipv6Addr>().unwrap().octets());
    let _other = topo.start_ra_loop(
        PREF64_SENDER_LL,
        move |_| ra.clone(),
        Duration::from_secs(1),
    );
    let in_other = || {
        topo.addrs(Ns::Client, "-6", "up0")
            .iter()
            .any(|(a, _)| a.starts_with("2001:db8:2:"))
    };
    assert!(
        wait_until(WAIT, in_other),
        "no address from the second router's prefix"
    );
    let d = topo.start_autoclat("");
    let u = d.wait_uplink("up0", "running in the gateway's /64", |u| {
        u["state"] == "running"
            && u["v6"]
                .as_str()
                .is_some_and(|v| v.starts_with("2001:db8:1:0:"))
    });
    // And it stays there.
    std::thread::sleep(Duration::from_secs(3));
    let later = d.uplink("up0").unwrap();
    assert_eq!(later["v6"], u["v6"], "{later}");
}

/// Issue 8, quiet on dual-stack hosts: while the uplink has native IPv4, failing DNS64 queries
/// are not warnings; once the prefix is all a CLAT waits for, they are. A fixed
/// `/etc/resolv.conf` is noticed at once (no RDNSS on this network) and the CLAT starts.
#[test]
fn dns64_failures_are_quiet_when_no_clat_is_needed_and_resolv_conf_is_followed() {
    if skip_unless_root(
        "dns64_failures_are_quiet_when_no_clat_is_needed_and_resolv_conf_is_followed",
    ) {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        rdnss: false,
        native_ipv4: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    // `ip netns exec` shows this file as the namespace's /etc/resolv.conf: a server nobody runs.
    let resolv = format!("/etc/netns/{}/resolv.conf", topo.cli);
    std::fs::write(&resolv, "nameserver 2001:db8:1::99\n").unwrap();
    topo.add_native_ipv4("up0");
    let d = topo.start_autoclat("[discovery]\norder = [\"dns64\"]\n");
    let failures = |d: &Daemon, level: &str| {
        d.log_text()
            .lines()
            .filter(|l| l.contains(level) && l.contains("DNS64 discovery failed"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || failures(&d, "DEBUG") >= 2),
        "no DNS64 attempts: {}",
        d.log_text()
    );
    assert_eq!(failures(&d, "WARN"), 0, "{}", d.log_text());
    topo.remove_native_ipv4("up0");
    assert!(
        wait_until(Duration::from_secs(30), || failures(&d, "WARN") >= 1),
        "a failing DNS64 where it is all a CLAT waits for is a warning: {}",
        d.log_text()
    );
    std::fs::write(&resolv, "nameserver 2001:db8:1::1\n").unwrap();
    running_with(&d, DEFAULT_PREFIX, "dns64");
    assert!(d.log_text().contains("resolver configuration changed"));
}
