//! Sanity tests of the netns test topology itself (netns-tests/README.md): SLAAC, DNS64, the NAT64 path,
//! our PREF64 router advertisements, native IPv4, two uplinks, and the fake translator. They
//! need root and skip otherwise; they do not need autoclat's daemon.

#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn client_gets_slaac_address_and_default_route() {
    if skip_unless_root("client_gets_slaac_address_and_default_route") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    let addr = topo.wait_slaac("up0");
    assert_eq!(addr.segments()[..4], [0x2001, 0xdb8, 1, 0]);
    let routes = topo.default_routes("-6");
    assert!(
        routes
            .iter()
            .any(|r| r["dev"] == "up0" && r["protocol"] == "ra"),
        "no RA default route: {routes:?}"
    );
    // The client is a host: no IPv4 default route, forwarding off.
    assert!(topo.default_routes("-4").is_empty());
    let fwd = topo.exec_ok(
        Ns::Client,
        &["sysctl", "-n", "net.ipv6.conf.all.forwarding"],
    );
    assert_eq!(fwd.trim(), "0");
}

#[test]
fn dns64_synthesises_ipv4only_arpa_and_test_names() {
    if skip_unless_root("dns64_synthesises_ipv4only_arpa_and_test_names") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    topo.wait_slaac("up0");
    let answers = dns_aaaa(
        &topo.cli,
        ROUTER_V6,
        "ipv4only.arpa",
        Duration::from_secs(3),
    )
    .unwrap();
    let want = [
        topo.nat64("192.0.0.170".parse().unwrap()),
        topo.nat64("192.0.0.171".parse().unwrap()),
    ];
    for w in want {
        assert!(answers.contains(&w), "{w} missing from {answers:?}");
    }
    let server = dns_aaaa(&topo.cli, ROUTER_V6, "server.test", Duration::from_secs(3)).unwrap();
    assert_eq!(server, vec![topo.nat64(SERVER4)]);
}

#[test]
fn nat64_path_reaches_server4() {
    if skip_unless_root("nat64_path_reaches_server4") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        echo_servers: true,
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let dst = topo.nat64(SERVER4);
    assert_eq!(dst.to_string(), "2001:db8:64::c633:640a");
    assert!(
        wait_until(WAIT, || ping(
            &topo.cli,
            IpAddr::V6(dst),
            Duration::from_secs(1)
        )),
        "no echo reply from {dst} through tayga"
    );
    let echo = wait_for(WAIT, "TCP echo through tayga", || {
        tcp_echo(
            &topo.cli,
            (dst, 7).into(),
            b"hello tcp".to_vec(),
            Duration::from_secs(2),
        )
        .ok()
    });
    assert_eq!(echo, b"hello tcp");
    let echo = wait_for(WAIT, "UDP echo through tayga", || {
        udp_echo(
            &topo.cli,
            (dst, 7).into(),
            b"hello udp".to_vec(),
            Duration::from_secs(1),
        )
        .ok()
    });
    assert_eq!(echo, b"hello udp");
}

#[test]
fn non_96_prefix_works_for_dns64_and_nat64() {
    if skip_unless_root("non_96_prefix_works_for_dns64_and_nat64") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        nat64_prefix: "2001:db8:100::/56".into(),
        ..TopologyOptions::default()
    });
    topo.wait_slaac("up0");
    let dst = topo.nat64(SERVER4);
    let server = dns_aaaa(&topo.cli, ROUTER_V6, "server.test", Duration::from_secs(3)).unwrap();
    assert_eq!(server, vec![dst]);
    assert!(
        wait_until(WAIT, || ping(
            &topo.cli,
            IpAddr::V6(dst),
            Duration::from_secs(1)
        )),
        "no echo reply from {dst} through tayga with a /56"
    );
}

#[test]
fn pref64_ra_reaches_the_client_kernel() {
    if skip_unless_root("pref64_ra_reaches_the_client_kernel") {
        return;
    }
    let topo = Topology::new(TopologyOptions::pref64_only());
    topo.wait_slaac("up0");
    // radvd sends RDNSS but no PREF64: nothing to see until we send.
    let seen = capture_pref64(&topo.cli, Duration::from_millis(500), || ());
    assert!(seen.is_empty(), "PREF64 seen without sending: {seen:?}");
    for (prefix, lifetime) in [
        ("2001:db8:64::/96", 1800),
        ("2001:db8:100::/56", 600),
        ("2001:db8:64::/96", 0),
    ] {
        let topo_ref = &topo;
        let p = prefix.to_string();
        let seen = std::thread::scope(|s| {
            let h = s.spawn(|| capture_pref64(&topo_ref.cli, Duration::from_secs(2), || ()));
            std::thread::sleep(Duration::from_millis(300));
            topo_ref.send_pref64(&p, lifetime);
            h.join().unwrap()
        });
        let want: autoclat::discovery::Nat64Prefix = prefix.parse().unwrap();
        assert!(
            seen.iter().any(|(p, l)| *p == want && *l == lifetime),
            "PREF64 {prefix} lifetime {lifetime} not delivered: {seen:?}"
        );
    }
    // Router lifetime 0 from a distinct source leaves radvd's default route alone.
    assert!(topo.has_default6("up0"));
    // The background sender works too.
    let topo_ref = &topo;
    let seen = std::thread::scope(|s| {
        let h = s.spawn(|| capture_pref64(&topo_ref.cli, Duration::from_secs(2), || ()));
        let sender =
            topo_ref.start_pref64_sender("2001:db8:64::/96", 1800, Duration::from_millis(500));
        let seen = h.join().unwrap();
        sender.stop();
        seen
    });
    assert!(seen.len() >= 2, "background sender sent {} RAs", seen.len());
}

#[test]
fn native_ipv4_and_two_uplinks() {
    if skip_unless_root("native_ipv4_and_two_uplinks") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        uplinks: vec!["up0".into(), "up1".into()],
        native_ipv4: true,
        ..TopologyOptions::default()
    });
    let a0 = topo.wait_slaac("up0");
    let a1 = topo.wait_slaac("up1");
    assert_ne!(a0, a1);
    topo.add_native_ipv4("up0");
    assert!(topo.default_routes("-4").iter().any(|r| r["dev"] == "up0"));
    assert!(
        wait_until(WAIT, || ping(
            &topo.cli,
            IpAddr::V4(NATIVE4_ROUTER),
            Duration::from_secs(1)
        )),
        "native IPv4 to the router does not work"
    );
    // Path MTU discovery over the native path (checks the helper the CLAT PMTU test uses).
    let dst = std::net::SocketAddrV4::new(SERVER4, 7);
    assert_eq!(udp_path_mtu(&topo.cli, dst, 1400).unwrap(), 1500);
    topo.exec_ok(Ns::Router, &["ip", "link", "set", "v4srv", "mtu", "1280"]);
    let mut last = 0;
    assert!(
        wait_until(WAIT, || {
            last = udp_path_mtu(&topo.cli, dst, 1400).unwrap();
            last == 1280
        }),
        "path MTU stayed {last}"
    );
    topo.remove_native_ipv4("up0");
    assert!(topo.default_routes("-4").is_empty());
    // A client link going down leaves the router side (bridge) up; coming back, SLAAC returns.
    topo.set_link("up0", false);
    assert!(topo.link(Ns::Router, "br0").unwrap()["operstate"] == "UP");
    topo.set_link("up0", true);
    topo.wait_slaac("up0");
}

#[test]
fn topology_teardown_leaves_nothing() {
    if skip_unless_root("topology_teardown_leaves_nothing") {
        return;
    }
    let topo = Topology::new(TopologyOptions::default());
    let names = [topo.cli.clone(), topo.rtr.clone(), topo.srv.clone()];
    let dir = topo.dir.clone();
    let pids = topo.ns_pids(Ns::Router);
    assert!(
        pids.len() >= 3,
        "radvd, unbound and tayga should run: {pids:?}"
    );
    drop(topo);
    for n in &names {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{n}")).exists(),
            "{n} left behind"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    for p in pids {
        assert!(!pid_alive(p), "process {p} left behind");
    }
}

/// Opens a tun named `name` in the current namespace (a tun the test owns, not persistent).
fn open_tun(name: &str) -> OwnedFd {
    let path = std::ffi::CString::new("/dev/net/tun").unwrap();
    // SAFETY: valid C string; we own the returned descriptor.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as i16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes) at the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    fd
}

/// Runs the fake translator with the tun on fd 5 and, if `leak`, an extra fd 7; returns its report.
fn run_fake(topo: &Topology, args: &'static [&'static str], leak: bool) -> serde_json::Value {
    let exe = fake_clatd_path();
    // args[1] is the uplink (-i), which names the report.
    let reports = topo
        .dir
        .join(if leak { "reports-leak" } else { "reports-ok" });
    std::fs::create_dir_all(&reports).unwrap();
    let reports2 = reports.clone();
    let pid = topo.in_ns(Ns::Client, move || {
        let tun = open_tun("v4-up0");
        let extra = std::fs::File::open("/dev/null").unwrap();
        let (tun_raw, extra_raw) = (tun.as_raw_fd(), extra.as_raw_fd());
        let mut cmd = Command::new(&exe);
        no_inherited_fds(&mut cmd);
        cmd.arg0("clatd-up0")
            .args(args)
            .env("FAKE_CLATD_REPORT_DIR", &reports2)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe dup2 and fcntl calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(tun_raw, 5) < 0 || (leak && libc::dup2(extra_raw, 7) < 0) {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 onto itself keeps close-on-exec: clear it explicitly.
                libc::fcntl(5, libc::F_SETFD, 0);
                if leak {
                    libc::fcntl(7, libc::F_SETFD, 0);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id();
        let path = reports2.join(format!("{}-{pid}.json", args[1]));
        let ok = wait_until(Duration::from_secs(10), || path.exists());
        // SIGTERM must make it exit 0.
        // SAFETY: kill on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let st = child.wait().unwrap();
        assert!(ok, "no report written");
        assert!(st.success(), "fake_clatd exited {st} on SIGTERM");
        pid
    });
    let path = reports.join(format!("{}-{pid}.json", args[1]));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn fake_translator_checks_what_it_is_given() {
    if skip_unless_root("fake_translator_checks_what_it_is_given") {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        nat64: false,
        dns64: false,
        ..TopologyOptions::default()
    });
    const GOOD: &[&str] = &[
        "-i",
        "up0",
        "-p",
        "2001:db8:64::/96",
        "-4",
        "192.0.0.4",
        "-6",
        "2001:db8:1::4",
        "-t",
        "5",
    ];
    let r = run_fake(&topo, GOOD, false);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["tun_name"], "v4-up0");
    assert_eq!(r["argv0"], "clatd-up0");
    assert_eq!(r["prefix"], "2001:db8:64::/96");

    let r = run_fake(&topo, GOOD, true);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["errors"].to_string().contains("unexpected open fd 7"),
        "{r}"
    );

    const BAD: &[&str] = &[
        "-i",
        "up1",
        "-p",
        "2001:db8:64::/95",
        "-4",
        "10.0.0.1",
        "-6",
        "x",
        "-t",
        "5",
    ];
    let r = run_fake(&topo, BAD, false);
    let errors = r["errors"].to_string();
    for want in [
        "expected \\\"v4-up1\\\"",
        "-p 2001:db8:64::/95",
        "-4 10.0.0.1",
        "-6 x",
    ] {
        assert!(errors.contains(want), "{want} not in {errors}");
    }
}
