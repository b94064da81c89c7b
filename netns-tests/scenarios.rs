//! Scenario tests of the autoclat daemon in the netns topology (netns-tests/README.md), against its
//! command-line contract (README "Operation"): `autoclat run --config`, `autoclat status --json`,
//! `autoclat check-config`. The translator is the fake `fake_clatd` unless a test asks for the
//! real one. Root only; they skip otherwise. Tests wait for states with generous bounds and
//! never assert on timing.

#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use autoclat::discovery::Nat64Prefix;
use common::*;
use serde_json::Value;

/// The fields every uplink entry of `status --json` carries (README "autoclat status").
const STATUS_FIELDS: &[&str] = &[
    "uplink",
    "ifindex",
    "state",
    "reason",
    "prefix",
    "prefix_source",
    "v4",
    "v6",
    "v4_iface",
    "v4_ifindex",
    "pid",
    "restarts",
    "fast_path",
    "counters",
];

fn assert_contract_fields(u: &Value) {
    for f in STATUS_FIELDS {
        assert!(u.get(f).is_some(), "status entry lacks {f:?}: {u}");
    }
    let state = u["state"].as_str().unwrap_or("");
    assert!(
        ["running", "waiting", "backoff", "repairing", "disabled"].contains(&state),
        "unknown state in {u}"
    );
    assert!(u["fast_path"].is_boolean(), "fast_path is not a bool: {u}");
    assert!(u["counters"].is_object(), "counters is not an object: {u}");
}

fn same_prefix(a: &str, b: &str) -> bool {
    match (a.parse::<Nat64Prefix>(), b.parse::<Nat64Prefix>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The expected `v4-` name for an uplink (when it fits IFNAMSIZ).
fn v4_name(uplink: &str) -> Option<String> {
    let n = format!("v4-{uplink}");
    (n.len() <= 15).then_some(n)
}

/// Waits until `uplink` runs a CLAT with `prefix` from `source`, then checks everything the
/// controller must have done: the entry's fields, the `v4-` link with the IPv4 address, the
/// default route with metric 2048, the child `clatd-<uplink>`, and the fake translator's report.
fn assert_clat_running(
    topo: &Topology,
    d: &Daemon,
    uplink: &str,
    prefix: &str,
    source: &str,
) -> Value {
    let u = d.wait_uplink(
        uplink,
        &format!("running with {prefix} from {source}"),
        |u| {
            u["state"] == "running"
                && u["prefix"].as_str().is_some_and(|p| same_prefix(p, prefix))
                && u["prefix_source"] == source
        },
    );
    assert_contract_fields(&u);
    assert!(u["reason"].is_null(), "running with a reason: {u}");
    let up_link = topo.link(Ns::Client, uplink).unwrap();
    assert_eq!(u["ifindex"], up_link["ifindex"], "ifindex of {uplink}");

    let v4: Ipv4Addr = u["v4"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        v4.octets()[..3],
        [192, 0, 0],
        "v4 {v4} outside 192.0.0.0/29"
    );
    assert!(v4.octets()[3] < 8, "v4 {v4} outside 192.0.0.0/29");
    let v6: Ipv6Addr = u["v6"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        v6.segments()[..4],
        [0x2001, 0xdb8, 1, 0],
        "v6 {v6} outside the uplink /64"
    );

    let iface = u["v4_iface"].as_str().unwrap().to_owned();
    if let Some(want) = v4_name(uplink) {
        assert_eq!(iface, want);
    }
    let link = topo
        .link(Ns::Client, &iface)
        .unwrap_or_else(|| panic!("{iface} does not exist"));
    assert_eq!(u["v4_ifindex"], link["ifindex"], "v4_ifindex");
    assert!(
        link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{iface} is not up: {link}"
    );
    let addrs: Vec<String> = topo
        .addrs(Ns::Client, "-4", &iface)
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(
        addrs.contains(&v4.to_string()),
        "{iface} lacks {v4}: {addrs:?}"
    );
    let routes = topo.default_routes("-4");
    assert!(
        routes
            .iter()
            .any(|r| r["dev"] == iface.as_str() && r["metric"] == 2048),
        "no IPv4 default route via {iface} metric 2048: {routes:?}"
    );

    let pid = u["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("running without a pid: {u}"));
    assert!(pid_alive(pid as u32), "child {pid} is not alive");
    let cmdline = proc_cmdline(pid as u32).unwrap();
    assert_eq!(
        cmdline[0],
        format!("clatd-{uplink}"),
        "argv[0] of the child"
    );
    let report = wait_for(WAIT, "the fake translator's report", || d.fake_report(pid));
    assert_eq!(
        report["ok"], true,
        "the translator was given something wrong: {report}"
    );
    assert_eq!(report["uplink"], uplink);
    assert!(
        same_prefix(report["prefix"].as_str().unwrap(), prefix),
        "-p in {report}"
    );
    assert_eq!(
        report["v4"].as_str().unwrap().parse::<Ipv4Addr>().unwrap(),
        v4
    );
    assert_eq!(
        report["v6"].as_str().unwrap().parse::<Ipv6Addr>().unwrap(),
        v6
    );
    assert_eq!(report["tun_name"], iface.as_str());
    u
}

/// Waits until `uplink` has no CLAT left: no `v4-` link, no IPv4 default route via one, the
/// old child gone.
fn wait_clat_gone(topo: &Topology, uplink: &str, old_pid: Option<u64>) {
    let name = v4_name(uplink).unwrap();
    let gone = wait_until(WAIT, || {
        topo.link(Ns::Client, &name).is_none()
            && !topo
                .default_routes("-4")
                .iter()
                .any(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("v4-")))
            && old_pid.is_none_or(|p| !pid_alive(p as u32))
    });
    assert!(
        gone,
        "CLAT of {uplink} not removed: links {:?}, IPv4 default routes {:?}",
        topo.link_names_with_prefix(Ns::Client, "v4-"),
        topo.default_routes("-4")
    );
}

fn pid_of(u: &Value) -> u64 {
    u["pid"].as_u64().unwrap()
}

#[test]
fn zero_touch_start_when_the_uplink_comes_up() {
    if skip_unless_root("zero_touch_start_when_the_uplink_comes_up") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        uplinks_up: false,
        ..TopologyOptions::default()
    });
    let d = topo.start_autoclat("");
    let u = d.wait_uplink("up0", "known and waiting while down", |u| {
        u["state"] == "waiting"
    });
    assert!(!u["reason"].is_null(), "waiting without a reason: {u}");
    assert!(topo.link(Ns::Client, "v4-up0").is_none());
    topo.set_link("up0", true);
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
}

#[test]
fn dns64_only_network() {
    if skip_unless_root("dns64_only_network") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
}

#[test]
fn pref64_only_network() {
    if skip_unless_root("pref64_only_network") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let _ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    let d = topo.start_autoclat("");
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "pref64");
}

#[test]
fn pref64_prefix_change_restarts_the_clat_and_a_56_works() {
    if skip_unless_root("pref64_prefix_change_restarts_the_clat_and_a_56_works") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    let d = topo.start_autoclat("");
    let first = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "pref64");
    ra.stop();
    topo.send_pref64(DEFAULT_PREFIX, 0);
    let _ra = topo.start_pref64_sender("2001:db8:100::/56", 1800, Duration::from_secs(2));
    let second = assert_clat_running(&topo, &d, "up0", "2001:db8:100::/56", "pref64");
    assert_ne!(
        pid_of(&first),
        pid_of(&second),
        "the CLAT was not restarted"
    );
    assert!(
        wait_until(WAIT, || !pid_alive(pid_of(&first) as u32)),
        "the old translator is still alive"
    );
}

#[test]
fn pref64_withdrawn_stops_the_clat() {
    if skip_unless_root("pref64_withdrawn_stops_the_clat") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    let ra = topo.start_pref64_sender(DEFAULT_PREFIX, 1800, Duration::from_secs(2));
    let d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "pref64");
    ra.stop();
    topo.send_pref64(DEFAULT_PREFIX, 0);
    let w = d.wait_state("up0", "waiting");
    assert!(!w["reason"].is_null(), "waiting without a reason: {w}");
    wait_clat_gone(&topo, "up0", Some(pid_of(&u)));
}

#[test]
fn static_non_96_prefix() {
    if skip_unless_root("static_non_96_prefix") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        nat64_prefix: "2001:db8:100::/56".into(),
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let d = topo.start_autoclat(
        r#"
[[uplink]]
match = "up0"
nat64_prefix = "2001:db8:100::/56"
"#,
    );
    assert_clat_running(&topo, &d, "up0", "2001:db8:100::/56", "static");
}

#[test]
fn native_ipv4_appears_and_disappears() {
    if skip_unless_root("native_ipv4_appears_and_disappears") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        native_ipv4: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    topo.add_native_ipv4("up0");
    let w = d.wait_state("up0", "waiting");
    let reason = w["reason"].as_str().unwrap_or("");
    assert!(
        reason.to_lowercase().contains("ipv4"),
        "reason does not mention IPv4: {w}"
    );
    // Our own default route is gone; the native one stays.
    let name = v4_name("up0").unwrap();
    assert!(
        wait_until(WAIT, || topo.link(Ns::Client, &name).is_none()
            && !pid_alive(pid_of(&u) as u32)),
        "CLAT not taken down"
    );
    let routes = topo.default_routes("-4");
    assert!(routes.iter().all(|r| r["dev"] == "up0"), "{routes:?}");
    topo.remove_native_ipv4("up0");
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
}

#[test]
fn link_down_and_up() {
    if skip_unless_root("link_down_and_up") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    topo.set_link("up0", false);
    let w = d.wait_state("up0", "waiting");
    assert!(!w["reason"].is_null(), "waiting without a reason: {w}");
    wait_clat_gone(&topo, "up0", Some(pid_of(&u)));
    topo.set_link("up0", true);
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
}

#[test]
fn killed_translator_is_restarted() {
    if skip_unless_root("killed_translator_is_restarted") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    let old = pid_of(&u);
    // SAFETY: SIGKILL to the translator the daemon started in our namespace.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    let again = d.wait_uplink("up0", "a new translator and restarts >= 1", |u| {
        u["state"] == "running"
            && u["pid"].as_u64().is_some_and(|p| p != old)
            && u["restarts"].as_u64().is_some_and(|r| r >= 1)
    });
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    assert!(pid_alive(pid_of(&again) as u32));
}

#[test]
fn sigterm_leaves_nothing_behind() {
    if skip_unless_root("sigterm_leaves_nothing_behind") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let before = topo.snapshot(Ns::Client);
    let mut d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    d.sigterm();
    let st = d.wait_exit(WAIT).expect("autoclat did not exit on SIGTERM");
    assert!(st.success(), "autoclat exited {st} on SIGTERM");
    assert!(!pid_alive(pid_of(&u) as u32), "translator left running");
    assert!(topo.link_names_with_prefix(Ns::Client, "v4-").is_empty());
    assert!(
        !topo
            .default_routes("-4")
            .iter()
            .any(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("v4-"))),
        "IPv4 route via a v4- link left"
    );
    let left = topo.ns_pids(Ns::Client);
    assert!(
        left.is_empty(),
        "processes left in the client namespace: {left:?}"
    );
    assert_same_snapshot(&before, &topo.snapshot(Ns::Client), "after SIGTERM");
}

#[test]
fn sigkill_then_restart_cleans_leftovers() {
    if skip_unless_root("sigkill_then_restart_cleans_leftovers") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let mut d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    let (old_pid, old_ifindex) = (pid_of(&u), u["v4_ifindex"].as_u64().unwrap());
    d.sigkill();
    d.wait_exit(WAIT).expect("autoclat survived SIGKILL");
    drop(d);
    let d2 = topo.start_autoclat("");
    let u2 = assert_clat_running(&topo, &d2, "up0", DEFAULT_PREFIX, "dns64");
    assert!(
        wait_until(WAIT, || !pid_alive(old_pid as u32)),
        "the old translator {old_pid} was not cleaned up"
    );
    assert_ne!(
        u2["v4_ifindex"].as_u64().unwrap(),
        old_ifindex,
        "the old v4- link was kept"
    );
    let names = topo.link_names_with_prefix(Ns::Client, "v4-");
    assert_eq!(names, vec!["v4-up0".to_string()], "exactly one v4- link");
    let translators = topo.client_pids_named("clatd-up0");
    assert_eq!(
        translators,
        vec![pid_of(&u2) as u32],
        "exactly one translator"
    );
    let routes: Vec<Value> = topo
        .default_routes("-4")
        .into_iter()
        .filter(|r| r["dev"] == "v4-up0")
        .collect();
    assert_eq!(
        routes.len(),
        1,
        "one IPv4 default route via v4-up0: {routes:?}"
    );
}

/// Regression (issue "One owner per CLAT"): a SIGKILLed daemon left `proxy_delay` at 0 and the
/// next run took that 0 for the original. The original is journalled before the change, so
/// the next run restores the distinctive value, and its own stop leaves it so.
#[test]
fn sigkill_keeps_the_true_proxy_delay() {
    if skip_unless_root("sigkill_keeps_the_true_proxy_delay") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let sysctl = "net.ipv6.neigh.up0.proxy_delay";
    let read = || {
        topo.exec_ok(Ns::Client, &["sysctl", "-n", sysctl])
            .trim()
            .to_owned()
    };
    // The kernel keeps it in jiffies: 37 reads back as 36.
    topo.exec_ok(Ns::Client, &["sysctl", "-qw", &format!("{sysctl}=37")]);
    let distinctive = read();
    assert_ne!(distinctive, "0");
    let mut d = topo.start_autoclat("");
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    assert_eq!(read(), "0", "proxy_delay is 0 while the CLAT runs");
    d.sigkill();
    d.wait_exit(WAIT).expect("autoclat survived SIGKILL");
    drop(d);
    assert_eq!(read(), "0", "a killed daemon restores nothing");
    let mut d2 = topo.start_autoclat("");
    assert_clat_running(&topo, &d2, "up0", DEFAULT_PREFIX, "dns64");
    assert_eq!(read(), "0");
    d2.sigterm();
    let st = d2
        .wait_exit(WAIT)
        .expect("autoclat did not exit on SIGTERM");
    assert!(st.success(), "{st}");
    assert_eq!(
        read(),
        distinctive,
        "the original value, not the killed run's 0"
    );
}

/// A third party deletes the CLAT's route: it is put back and counted, the translator untouched.
#[test]
fn a_deleted_route_is_repaired_and_counted() {
    if skip_unless_root("a_deleted_route_is_repaired_and_counted") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    assert_eq!(u["repairs"], 0, "{u}");
    topo.exec_ok(
        Ns::Client,
        &["ip", "-4", "route", "del", "default", "dev", "v4-up0"],
    );
    let r = d.wait_uplink("up0", "running with one repair", |u| {
        u["state"] == "running" && u["repairs"] == 1
    });
    assert_eq!(r["pid"], u["pid"], "the translator was not restarted");
    assert!(topo
        .default_routes("-4")
        .iter()
        .any(|r| r["dev"] == "v4-up0" && r["metric"] == 2048));
}

#[test]
fn two_uplinks_at_once() {
    if skip_unless_root("two_uplinks_at_once") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        uplinks: vec!["up0".into(), "up1".into()],
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    topo.wait_slaac("up1");
    let d = topo.start_autoclat("");
    // The default route of each is checked loosely: two IPv4 default routes of equal metric
    // cannot coexist, so only one uplink's route needs metric 2048 via its own v4- link.
    let u0 = d.wait_state("up0", "running");
    let u1 = d.wait_state("up1", "running");
    for (u, name) in [(&u0, "up0"), (&u1, "up1")] {
        assert_contract_fields(u);
        let iface = format!("v4-{name}");
        assert_eq!(u["v4_iface"], iface.as_str());
        assert!(topo.link(Ns::Client, &iface).is_some(), "{iface} missing");
        assert!(pid_alive(pid_of(u) as u32));
        assert_eq!(
            proc_cmdline(pid_of(u) as u32).unwrap()[0],
            format!("clatd-{name}")
        );
        let r = wait_for(WAIT, "report", || d.fake_report(pid_of(u)));
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["uplink"], name);
    }
    assert_ne!(u0["v4"], u1["v4"], "both CLATs got the same IPv4 address");
    assert_ne!(u0["v6"], u1["v6"], "both CLATs got the same IPv6 address");
    assert!(
        topo.default_routes("-4")
            .iter()
            .any(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("v4-"))),
        "no IPv4 default route via a CLAT"
    );
}

#[test]
fn policy_disables_an_uplink() {
    if skip_unless_root("policy_disables_an_uplink") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        uplinks: vec!["up0".into(), "up1".into()],
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    topo.wait_slaac("up1");
    let d = topo.start_autoclat(
        r#"
[[uplink]]
match = "up1"
enable = false
"#,
    );
    assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    let u1 = d.wait_state("up1", "disabled");
    assert_contract_fields(&u1);
    assert!(!u1["reason"].is_null(), "disabled without a reason: {u1}");
    assert!(
        u1["pid"].is_null(),
        "a disabled uplink has a translator: {u1}"
    );
    assert!(topo.link(Ns::Client, "v4-up1").is_none());
    assert!(topo.client_pids_named("clatd-up1").is_empty());
}

/// Bad configurations: `check-config` exits 2 naming file:line:col; `run` exits 2 and changes
/// nothing. A good one passes `check-config`.
#[test]
fn bad_config_is_refused_with_its_location() {
    if skip_unless_root("bad_config_is_refused_with_its_location") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        nat64: false,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let cases: &[(&str, &str, usize)] = &[
        (
            "syntax.toml",
            "[daemon]\nlog_format = \"text\"\n[uplink\n",
            3,
        ),
        ("unknown-key.toml", "[daemon]\nbogus = 1\n", 2),
        (
            "bad-prefix.toml",
            "[[uplink]]\nmatch = \"up0\"\nnat64_prefix = \"2001:db8::/33\"\n",
            3,
        ),
        ("bad-enum.toml", "[[uplink]]\nipv4_check = \"maybe\"\n", 2),
    ];
    let good = topo.dir.join("good.toml");
    std::fs::write(&good, "[[uplink]]\nmatch = \"up*\"\nroute_metric = 2048\n").unwrap();
    let out = topo
        .autoclat_timeout(&["check-config", good.to_str().unwrap()], WAIT)
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "good config refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let before = topo.snapshot(Ns::Client);
    for (name, text, line) in cases {
        let path = topo.dir.join(name);
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        let out = topo
            .autoclat_timeout(&["check-config", p], WAIT)
            .unwrap_or_else(|| panic!("check-config {name} hung"));
        let text_out = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "check-config {name}: {text_out}"
        );
        let loc = format!("{p}:{line}:");
        let at = text_out
            .find(&loc)
            .unwrap_or_else(|| panic!("{name}: no {loc}COL in {text_out}"));
        let col = &text_out[at + loc.len()..];
        assert!(
            col.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{name}: no column after {loc} in {text_out}"
        );

        let out = topo
            .autoclat_timeout(&["run", "--config", p], WAIT)
            .unwrap_or_else(|| panic!("run with {name} did not exit"));
        assert_eq!(
            out.status.code(),
            Some(2),
            "run with {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_same_snapshot(&before, &topo.snapshot(Ns::Client), "after refused configs");
    assert!(
        topo.ns_pids(Ns::Client).is_empty(),
        "run with a bad config left a process"
    );
}

// ---------------------------------------------------------------------------------------------
// Traffic through the real translator (`clatd` built beside autoclat). These need the real
// clatd and fail until it translates.

const REAL_CLATD: &str = "[daemon]\nclatd_path = \"\"\n";

#[test]
fn ping_udp_and_tcp_through_the_clat() {
    if skip_unless_root("ping_udp_and_tcp_through_the_clat") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        echo_servers: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let d = topo.start_autoclat(REAL_CLATD);
    d.wait_state("up0", "running");
    let server = IpAddr::V4(SERVER4);
    assert!(
        wait_until(WAIT, || ping(&topo.cli, server, Duration::from_secs(1))),
        "no ping reply from {server} through the CLAT"
    );
    let echo = wait_for(WAIT, "UDP echo through the CLAT", || {
        udp_echo(
            &topo.cli,
            (SERVER4, 7).into(),
            b"udp via clat".to_vec(),
            Duration::from_secs(1),
        )
        .ok()
    });
    assert_eq!(echo, b"udp via clat");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let echo = wait_for(WAIT, "TCP echo through the CLAT", || {
        tcp_echo(
            &topo.cli,
            (SERVER4, 7).into(),
            payload.clone(),
            Duration::from_secs(5),
        )
        .ok()
    });
    assert_eq!(echo, payload);
}

/// PMTU through the CLAT: with a 1280-byte IPv4 link between the NAT64 and server4, a large
/// DF datagram from the client draws "fragmentation needed" (translated by tayga to a Packet
/// Too Big and back by the CLAT), the client's path MTU drops, and bulk TCP still gets through.
#[test]
fn pmtu_through_the_clat() {
    if skip_unless_root("pmtu_through_the_clat") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        echo_servers: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let d = topo.start_autoclat(REAL_CLATD);
    let u = d.wait_state("up0", "running");
    let iface = u["v4_iface"].as_str().unwrap().to_owned();
    let clat_mtu = topo.link(Ns::Client, &iface).unwrap()["mtu"]
        .as_u64()
        .unwrap();
    assert_eq!(clat_mtu, 1500 - 28, "v4- MTU is the uplink's minus 28");
    topo.exec_ok(Ns::Router, &["ip", "link", "set", "v4srv", "mtu", "1280"]);
    topo.exec_ok(Ns::Server, &["ip", "link", "set", "eth0", "mtu", "1280"]);
    let dst = std::net::SocketAddrV4::new(SERVER4, 7);
    let mut last = 0;
    let lowered = wait_until(WAIT, || {
        last = udp_path_mtu(&topo.cli, dst, 1400).unwrap_or(0);
        last > 0 && last <= 1280
    });
    assert!(
        lowered,
        "path MTU to {SERVER4} through the CLAT stayed at {last}"
    );
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let echo = wait_for(WAIT, "bulk TCP echo over the 1280-byte path", || {
        tcp_echo(
            &topo.cli,
            (SERVER4, 7).into(),
            payload.clone(),
            Duration::from_secs(5),
        )
        .ok()
    });
    assert_eq!(echo, payload);
}

/// `setpriv` prefix that runs autoclat as root without the capabilities eBPF needs (CAP_BPF,
/// CAP_PERFMON, CAP_SYS_ADMIN gone from the bounding set, so also after exec), keeping
/// CAP_NET_ADMIN and CAP_NET_RAW for the tun, addresses, routes and packet sockets.
const WITHOUT_BPF_PRIVILEGE: &[&str] = &[
    "setpriv",
    "--bounding-set",
    "-bpf,-perfmon,-sys_admin",
    "--",
];

/// `fast_path = "on"` where the kernel refuses eBPF: the uplink is not started (state backoff,
/// the reason names the fast path), nothing of the attempt is left on the system, and SIGTERM
/// leaves the namespace as it was. `"auto"` in the same place runs the CLAT in userspace,
/// `fast_path_reason` says why, and IPv4 works through the real translator.
#[test]
fn fast_path_on_fails_and_auto_falls_back_without_bpf_privilege() {
    if skip_unless_root("fast_path_on_fails_and_auto_falls_back_without_bpf_privilege") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        echo_servers: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let before = topo.snapshot(Ns::Client);

    let mut d = topo.start_autoclat_under(
        WITHOUT_BPF_PRIVILEGE,
        &format!("{REAL_CLATD}[[uplink]]\nmatch = \"up0\"\nfast_path = \"on\"\n"),
    );
    let u = d.wait_uplink("up0", "backoff because the fast path cannot attach", |u| {
        u["state"] == "backoff"
            && u["reason"]
                .as_str()
                .is_some_and(|r| r.contains("fast_path = \"on\""))
    });
    eprintln!("fast_path = on without BPF privilege: {u}");
    assert_contract_fields(&u);
    assert!(u["pid"].is_null(), "a failed uplink has a translator: {u}");
    assert_eq!(u["fast_path"], false, "{u}");
    // Between retries the failed attempt has been undone: no tun, address, route or child.
    assert!(
        wait_until(WAIT, || topo.snapshot(Ns::Client) == before
            && topo.client_pids_named("clatd-up0").is_empty()),
        "the failed start left something behind:\n{:#?}",
        topo.snapshot(Ns::Client)
            .symmetric_difference(&before)
            .collect::<Vec<_>>()
    );
    d.sigterm();
    let st = d.wait_exit(WAIT).expect("autoclat did not exit on SIGTERM");
    assert!(st.success(), "autoclat exited {st} on SIGTERM");
    assert_same_snapshot(
        &before,
        &topo.snapshot(Ns::Client),
        "after SIGTERM (fast_path on)",
    );
    assert!(topo.ns_pids(Ns::Client).is_empty(), "processes left behind");

    let d = topo.start_autoclat_under(
        WITHOUT_BPF_PRIVILEGE,
        &format!("{REAL_CLATD}[[uplink]]\nmatch = \"up0\"\nfast_path = \"auto\"\n"),
    );
    let u = d.wait_state("up0", "running");
    assert_eq!(u["fast_path"], false, "fast path claimed without BPF: {u}");
    eprintln!("fast_path = auto without BPF privilege: {u}");
    let why = u["fast_path_reason"].as_str().unwrap_or_default();
    assert!(
        !why.is_empty() && why != "disabled by config",
        "auto fell back without saying why: {u}"
    );
    let server = IpAddr::V4(SERVER4);
    assert!(
        wait_until(WAIT, || ping(&topo.cli, server, Duration::from_secs(1))),
        "no ping reply from {server} through the userspace CLAT"
    );
    let echo = wait_for(WAIT, "TCP echo through the userspace CLAT", || {
        tcp_echo(
            &topo.cli,
            (SERVER4, 7).into(),
            b"no bpf here".to_vec(),
            Duration::from_secs(5),
        )
        .ok()
    });
    assert_eq!(echo, b"no bpf here");
}

/// Seven uplinks at once: more than one reconcile pass of starts (the daemon starts four per
/// pass; the netlink events of the new CLATs would also bring it back, so this does not prove
/// the immediate re-run on its own) and more uplinks than the six distinct CLAT IPv4 addresses
/// of 192.0.0.0/29. Every uplink runs its own translator
/// on its own `v4-` link; the first six get distinct addresses, the seventh shares one.
#[test]
fn seven_uplinks_all_start() {
    if skip_unless_root("seven_uplinks_all_start") {
        return;
    }
    let names: Vec<String> = (0..7).map(|i| format!("up{i}")).collect();
    let topo = Topology::new(TopologyOptions {
        uplinks: names.clone(),
        ..TopologyOptions::default()
    });
    for n in &names {
        topo.wait_slaac(n);
    }
    let d = topo.start_autoclat("");
    let ups: Vec<Value> = names.iter().map(|n| d.wait_state(n, "running")).collect();
    let mut v4s = std::collections::BTreeSet::new();
    let mut pids = std::collections::BTreeSet::new();
    for (u, name) in ups.iter().zip(&names) {
        assert_contract_fields(u);
        let iface = format!("v4-{name}");
        assert_eq!(u["v4_iface"], iface.as_str());
        assert!(topo.link(Ns::Client, &iface).is_some(), "{iface} missing");
        let v4: Ipv4Addr = u["v4"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            v4.octets()[..3],
            [192, 0, 0],
            "{name}: {v4} outside 192.0.0.0/29"
        );
        assert!(v4.octets()[3] < 8, "{name}: {v4} outside 192.0.0.0/29");
        v4s.insert(v4);
        assert!(pids.insert(pid_of(u)), "{name}: translator pid shared");
        let r = wait_for(WAIT, "report", || d.fake_report(pid_of(u)));
        assert_eq!(r["ok"], true, "{r}");
    }
    assert_eq!(v4s.len(), 6, "distinct CLAT IPv4 addresses: {v4s:?}");
}

/// The ambient capabilities of `config/autoclat.service` (the unit's `AmbientCapabilities=`),
/// in setpriv's spelling.
fn unit_ambient_capabilities() -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/autoclat.service"
    ))
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The daemon as the unit runs it: not root (uid `nobody` here, `autoclat` in the package),
/// with exactly the unit's ambient capabilities and nothing else in its bounding set. A CLAT
/// with the eBPF fast path on starts (tun, addresses, routes, `proxy_delay` sysctl, packet
/// sockets, BPF programs), IPv4 works through it, and SIGTERM removes everything.
#[test]
fn unprivileged_daemon_with_the_units_capabilities_runs_a_fast_path_clat() {
    if skip_unless_root("unprivileged_daemon_with_the_units_capabilities_runs_a_fast_path_clat") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        echo_servers: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let before = topo.snapshot(Ns::Client);
    // nobody must reach the control socket's directory and read the configuration.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&topo.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let caps = std::env::var("AUTOCLAT_TEST_CAPS").unwrap_or_else(|_| unit_ambient_capabilities());
    eprintln!("ambient capabilities: {caps}");
    let bounding = format!("-all,{caps}");
    // In a private mount namespace, what the unit's sandbox does to /proc/sys
    // (ProtectKernelTunables=yes, ReadWritePaths=/proc/sys/net): read-only but for the network
    // sysctls. And udev makes /dev/net/tun 0666 on Debian (50-udev-default.rules); where it
    // is not (this container: 0600), the namespace gets a 0666 node of its own.
    let tun_node = topo.dir.join("tun");
    let shim = format!(
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && \
         mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net && \
         if [ \"$(stat -c %a /dev/net/tun)\" != 666 ]; then \
         mknod -m 0666 {n} c 10 200 && mount --bind {n} /dev/net/tun; fi && exec \"$@\"",
        n = tun_node.display()
    );
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &shim,
        "sh",
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps",
        &caps,
        "--ambient-caps",
        &caps,
        "--bounding-set",
        &bounding,
        "--",
    ];
    let mut d = topo.start_autoclat_under(
        &wrapper,
        &format!("{REAL_CLATD}[[uplink]]\nmatch = \"up0\"\nfast_path = \"on\"\n"),
    );
    let u = d.wait_state("up0", "running");
    eprintln!("unprivileged daemon: {u}");
    assert_eq!(u["fast_path"], true, "{u}");
    let pid = d.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    // `ip netns exec` execs unshare, sh, setpriv and autoclat in turn: the same pid.
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "the daemon is not running as nobody: {uid_line}"
    );
    // The sysctl the daemon writes through the read-only /proc/sys's writable net part.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &topo.cli, "cat"])
        .arg("/proc/sys/net/ipv6/neigh/up0/proxy_delay")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "proxy_delay"
    );
    let server = IpAddr::V4(SERVER4);
    assert!(
        wait_until(WAIT, || ping(&topo.cli, server, Duration::from_secs(1))),
        "no ping reply from {server} through the CLAT"
    );
    let echo = wait_for(WAIT, "TCP echo through the fast path", || {
        tcp_echo(
            &topo.cli,
            (SERVER4, 7).into(),
            b"least privilege".to_vec(),
            Duration::from_secs(5),
        )
        .ok()
    });
    assert_eq!(echo, b"least privilege");
    d.sigterm();
    let st = d.wait_exit(WAIT).expect("autoclat did not exit on SIGTERM");
    assert!(st.success(), "autoclat exited {st} on SIGTERM");
    assert_same_snapshot(
        &before,
        &topo.snapshot(Ns::Client),
        "after SIGTERM of the unprivileged daemon",
    );
}

/// Issue 10 end to end: under a (stand-in) service manager the daemon sends `READY=1`,
/// `STATUS=` with the summary, `WATCHDOG=1` at half of `WATCHDOG_USEC`; the up hook runs with
/// the CLAT's environment and, while it sleeps, `status` still answers; the hook is killed at
/// its timeout; taking the uplink down runs the down hook; SIGTERM sends `STOPPING=1`.
#[test]
fn notify_watchdog_and_hooks_with_a_running_clat() {
    if skip_unless_root("notify_watchdog_and_hooks_with_a_running_clat") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixDatagram;
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let dir = topo.dir.clone();
    let notify_path = dir.join("notify.sock");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let messages = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match manager.recv(&mut buf) {
                    Ok(n) => messages
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
    let got = |m: &str| messages.lock().unwrap().iter().filter(|x| *x == m).count();
    let script = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let up = script(
        "up",
        &format!(
            "env | grep '^AUTOCLAT_' | sort > {d}/up.env; echo $$ > {d}/up.pid; exec sleep 60",
            d = dir.display()
        ),
    );
    let down = script(
        "down",
        &format!(
            "env | grep '^AUTOCLAT_' | sort > {}/down.env",
            dir.display()
        ),
    );
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let mut d = topo.start_autoclat_under(
        &["env", &notify_env, "WATCHDOG_USEC=1000000"],
        &format!(
            "[hooks]\nup = \"{}\"\ndown = \"{}\"\ntimeout = 5\n",
            up.display(),
            down.display()
        ),
    );
    let u = d.wait_state("up0", "running");
    assert!(
        wait_until(WAIT, || got("READY=1") == 1),
        "no READY=1: {:?}",
        messages.lock().unwrap()
    );
    assert!(
        wait_until(WAIT, || messages.lock().unwrap().iter().any(|m| m
            .starts_with("STATUS=")
            && m.contains("1 CLAT running (up0)"))),
        "no STATUS= summary: {:?}",
        messages.lock().unwrap()
    );
    assert!(
        wait_until(WAIT, || got("WATCHDOG=1") >= 3),
        "no WATCHDOG=1 every 0.5 s: {:?}",
        messages.lock().unwrap()
    );
    // The up hook: its environment names this CLAT, and while it sleeps status answers.
    let env = wait_for(WAIT, "the up hook", || {
        // The shell creates the file before `env | sort` has written it: wait for its end.
        std::fs::read_to_string(dir.join("up.env"))
            .ok()
            .filter(|e| e.contains("AUTOCLAT_V6="))
    });
    for (k, v) in [
        ("AUTOCLAT_EVENT", "up".to_string()),
        ("AUTOCLAT_UPLINK", "up0".to_string()),
        ("AUTOCLAT_TUN", u["v4_iface"].as_str().unwrap().to_string()),
        ("AUTOCLAT_V4", u["v4"].as_str().unwrap().to_string()),
        ("AUTOCLAT_V6", u["v6"].as_str().unwrap().to_string()),
        ("AUTOCLAT_PREFIX", u["prefix"].as_str().unwrap().to_string()),
        (
            "AUTOCLAT_PREFIX_SOURCE",
            u["prefix_source"].as_str().unwrap().to_string(),
        ),
    ] {
        assert!(
            env.lines().any(|l| l == format!("{k}={v}")),
            "{k}={v} in {env}"
        );
    }
    let hook_pid: u32 = wait_for(WAIT, "the up hook's pid", || {
        std::fs::read_to_string(dir.join("up.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    assert!(pid_alive(hook_pid), "the up hook should still sleep");
    let st = d.status_json();
    assert!(
        pid_alive(hook_pid),
        "status answered only after the hook ended"
    );
    assert!(st["uplinks"].as_array().is_some());
    // Killed at its 5 s timeout (not after its 60 s), and logged.
    assert!(
        wait_until(WAIT, || !pid_alive(hook_pid)),
        "the hanging hook was not killed"
    );
    assert!(
        wait_until(WAIT, || d.log_text().contains("killed")),
        "the kill is not logged"
    );
    // Down hook when the CLAT stops.
    topo.exec_ok(Ns::Client, &["ip", "link", "set", "up0", "down"]);
    let env = wait_for(WAIT, "the down hook", || {
        // The shell creates the file before `env | sort` has written it: wait for its end.
        std::fs::read_to_string(dir.join("down.env"))
            .ok()
            .filter(|e| e.contains("AUTOCLAT_V6="))
    });
    assert!(env.contains("AUTOCLAT_EVENT=down"), "{env}");
    assert!(env.contains("AUTOCLAT_UPLINK=up0"), "{env}");
    d.sigterm();
    let st = d.wait_exit(WAIT).expect("autoclat did not exit on SIGTERM");
    assert!(st.success());
    assert!(
        wait_until(WAIT, || got("STOPPING=1") == 1),
        "no STOPPING=1: {:?}",
        messages.lock().unwrap()
    );
}

/// Issue 9: one daemon per network namespace. A second `autoclat run` with another control
/// socket exits 1 naming the lock and touches nothing: the first daemon, its translator and its
/// CLAT stay as they were.
#[test]
fn a_second_daemon_in_the_same_namespace_exits_and_touches_nothing() {
    if skip_unless_root("a_second_daemon_in_the_same_namespace_exits_and_touches_nothing") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let d = topo.start_autoclat("");
    let u = assert_clat_running(&topo, &d, "up0", DEFAULT_PREFIX, "dns64");
    let mut second = topo.start_autoclat("");
    let st = second
        .wait_exit(WAIT)
        .expect("the second daemon did not exit");
    assert_eq!(st.code(), Some(1), "{st}: {}", second.log_text());
    assert!(
        second.log_text().contains("autoclat-lock"),
        "the error does not name the lock: {}",
        second.log_text()
    );
    assert!(
        pid_alive(pid_of(&u) as u32),
        "the first daemon's translator was touched"
    );
    let again = d.wait_state("up0", "running");
    assert_eq!(again["pid"], u["pid"]);
    assert_eq!(again["v4_ifindex"], u["v4_ifindex"]);
}

/// Issue 9: `clatd_path` is run with the daemon's privileges, so a translator that someone
/// other than root could replace (here: in a world-writable directory) is refused, with that
/// reason in `status`, and nothing is created.
#[test]
fn a_translator_others_could_replace_is_refused() {
    if skip_unless_root("a_translator_others_could_replace_is_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let fake = dir.path().join("clatd");
    std::fs::copy(fake_clatd_path(), &fake).unwrap();
    let d = topo.start_autoclat(&format!("[daemon]\nclatd_path = \"{}\"\n", fake.display()));
    let u = d.wait_state("up0", "backoff");
    let reason = u["reason"].as_str().unwrap_or("");
    assert!(reason.contains("writable by others"), "{u}");
    assert!(
        topo.link(Ns::Client, "v4-up0").is_none(),
        "a tun was created"
    );
}
