//! `discover_once` end to end in network namespaces: a client namespace and a router namespace
//! joined by a veth pair; the router runs unbound as DNS64 (2001:db8:64::/96) and this test
//! sends router advertisements (RDNSS, optionally PREF64) from it. Needs root, `ip` and
//! `unbound`; skipped otherwise. Every name carries `d2` and a random part; the namespaces
//! (and with them the links) and unbound are removed on any exit.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoclat::discovery::oneshot::{discover_once, DiscoverOptions};
use autoclat::discovery::{DiscoveryError, Nat64Prefix, PrefixSource};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Topology {
    client_ns: String,
    router_ns: String,
    client_if: String,
    router_if: String,
    unbound: Option<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut child) = self.unbound.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client_ns, &self.router_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

const ROUTER_LL: &str = "fe80::1";
const ROUTER_GLOBAL: &str = "2001:db8:1::1";
const DNS64_PREFIX: &str = "2001:db8:64::/96";

impl Topology {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!("{:04x}", (std::process::id() ^ nanos) as u16);
        let t = Topology {
            client_ns: format!("d2c-{tag}"),
            router_ns: format!("d2r-{tag}"),
            client_if: format!("d2c{tag}"),
            router_if: format!("d2r{tag}"),
            unbound: None,
            dir: tempfile::tempdir().unwrap(),
        };
        let (cn, rn, ci, ri) = (&t.client_ns, &t.router_ns, &t.client_if, &t.router_if);
        run(&["ip", "netns", "add", cn]);
        run(&["ip", "netns", "add", rn]);
        run(&[
            "ip", "-n", cn, "link", "add", ci, "type", "veth", "peer", "name", ri, "netns", rn,
        ]);
        let sysctl = |ns: &str, key: &str| run(&["ip", "netns", "exec", ns, "sysctl", "-qw", key]);
        sysctl(cn, &format!("net.ipv6.conf.{ci}.accept_dad=0"));
        sysctl(cn, &format!("net.ipv6.conf.{ci}.accept_ra=2"));
        sysctl(rn, &format!("net.ipv6.conf.{ri}.accept_dad=0"));
        run(&[
            "ip",
            "-n",
            rn,
            "addr",
            "add",
            &format!("{ROUTER_LL}/64"),
            "dev",
            ri,
            "nodad",
        ]);
        run(&[
            "ip",
            "-n",
            rn,
            "addr",
            "add",
            &format!("{ROUTER_GLOBAL}/64"),
            "dev",
            ri,
            "nodad",
        ]);
        run(&[
            "ip",
            "-n",
            cn,
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            ci,
            "nodad",
        ]);
        run(&["ip", "-n", cn, "link", "set", "lo", "up"]);
        run(&["ip", "-n", rn, "link", "set", "lo", "up"]);
        run(&["ip", "-n", cn, "link", "set", ci, "up"]);
        run(&["ip", "-n", rn, "link", "set", ri, "up"]);
        t
    }

    fn start_unbound(&mut self) {
        let dir = self.dir.path();
        let zone = dir.join("ipv4only.arpa.zone");
        std::fs::write(
            &zone,
            "$ORIGIN ipv4only.arpa.\n\
             @ 3600 IN SOA ns.ipv4only.arpa. hostmaster.ipv4only.arpa. 1 3600 600 86400 300\n\
             @ 3600 IN NS ns\n\
             ns 3600 IN AAAA 2001:db8:1::1\n\
             @ 300 IN A 192.0.0.170\n\
             @ 300 IN A 192.0.0.171\n",
        )
        .unwrap();
        let conf = dir.join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n\
                 \x20 interface: ::0\n\
                 \x20 interface-automatic: yes\n\
                 \x20 port: 53\n\
                 \x20 do-ip4: no\n\
                 \x20 access-control: ::/0 allow\n\
                 \x20 do-not-query-address: 0.0.0.0/0\n\
                 \x20 do-not-query-address: ::/0\n\
                 \x20 module-config: \"dns64 iterator\"\n\
                 \x20 dns64-prefix: {DNS64_PREFIX}\n\
                 \x20 username: \"\"\n\
                 \x20 chroot: \"\"\n\
                 \x20 directory: \"{d}\"\n\
                 \x20 pidfile: \"{d}/unbound.pid\"\n\
                 \x20 use-syslog: no\n\
                 \x20 logfile: \"\"\n\
                 \x20 verbosity: 1\n\
                 \x20 do-daemonize: no\n\
                 \x20 auto-trust-anchor-file: \"\"\n\
                 auth-zone:\n\
                 \x20 name: \"ipv4only.arpa.\"\n\
                 \x20 zonefile: \"{z}\"\n\
                 \x20 for-upstream: yes\n\
                 \x20 for-downstream: no\n\
                 \x20 fallback-enabled: no\n\
                 remote-control:\n\
                 \x20 control-enable: no\n",
                d = dir.display(),
                z = zone.display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.router_ns, "unbound", "-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.unbound = Some(child);
    }
}

/// Run `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a valid, open namespace fd; it only changes this thread's
            // network namespace, and this thread is ours alone.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// Run an async block on a current-thread runtime inside `ns`.
fn block_in_ns<T: Send, F: std::future::Future<Output = T>>(
    ns: &str,
    f: impl FnOnce() -> F + Send,
) -> T {
    in_ns(ns, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// A router advertisement with an RDNSS option (fe80::1) and optionally PREF64.
fn router_advertisement(pref64: Option<(Nat64Prefix, u16)>) -> Vec<u8> {
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    // RDNSS: length 3, lifetime 600, fe80::1.
    ra.extend_from_slice(&[25, 3, 0, 0]);
    ra.extend_from_slice(&600u32.to_be_bytes());
    ra.extend_from_slice(&ROUTER_LL.parse::<Ipv6Addr>().unwrap().octets());
    if let Some((p, lifetime)) = pref64 {
        let plc: u16 = match p.len() {
            96 => 0,
            64 => 1,
            56 => 2,
            48 => 3,
            40 => 4,
            _ => 5,
        };
        ra.extend_from_slice(&[38, 2]);
        ra.extend_from_slice(&(((lifetime / 8) << 3) | plc).to_be_bytes());
        ra.extend_from_slice(&p.addr().octets()[..12]);
    }
    ra
}

/// Send `ra` from fe80::1 on the router's link every 200 ms until `stop`.
fn ra_sender(t: &Topology, ra: Vec<u8>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let ns = t.router_ns.clone();
    let ifname = t.router_if.clone();
    std::thread::spawn(move || {
        in_ns(&ns, || {
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).unwrap();
            let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
            sock.set_multicast_hops_v6(255).unwrap();
            sock.set_multicast_if_v6(ifindex).unwrap();
            let from = SocketAddrV6::new(ROUTER_LL.parse().unwrap(), 0, 0, ifindex);
            sock.bind(&SockAddr::from(SocketAddr::V6(from))).unwrap();
            let to = SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, ifindex);
            while !stop.load(Ordering::Relaxed) {
                let _ = sock.send_to(&ra, &SockAddr::from(SocketAddr::V6(to)));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    })
}

fn prefix(s: &str) -> Nat64Prefix {
    s.parse().unwrap()
}

#[test]
fn discover_once_in_namespaces() {
    if !is_root() || !have("ip") || !have("unbound") {
        eprintln!("skipped: needs root, ip and unbound");
        return;
    }
    let mut t = Topology::new();
    t.start_unbound();
    let ci = t.client_if.clone();
    let router: IpAddr = ROUTER_GLOBAL.parse().unwrap();

    // 1. DNS64 through an explicit server (--dns); wait for unbound to come up.
    let dns_only = DiscoverOptions {
        order: vec![PrefixSource::Dns64],
        dns_timeout: Duration::from_secs(2),
        ..DiscoverOptions::default()
    };
    let started = Instant::now();
    let report = loop {
        let r = block_in_ns(&t.client_ns, || discover_once(&ci, Some(router), &dns_only));
        match r {
            Ok(r) => break r,
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                eprintln!("waiting for unbound: {e}");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("DNS64 discovery failed: {e}"),
        }
    };
    assert_eq!(report.prefix, prefix(DNS64_PREFIX));
    assert_eq!(report.source, PrefixSource::Dns64);
    assert!(report
        .lifetime
        .is_some_and(|l| l <= Duration::from_secs(300)));

    // 2. A static prefix wins without touching the network.
    let with_static = DiscoverOptions {
        static_prefix: Some(prefix("2001:db8:ff::/96")),
        ..DiscoverOptions::default()
    };
    let r = block_in_ns(&t.client_ns, || discover_once(&ci, None, &with_static)).unwrap();
    assert_eq!(
        (r.prefix, r.source),
        (prefix("2001:db8:ff::/96"), PrefixSource::Static)
    );

    let defaults = DiscoverOptions::default();
    // 3. RAs with RDNSS (link-local fe80::1) but no PREF64: PREF64 comes up empty, DNS64
    //    goes to the RDNSS server over the link-local address, scoped to the uplink.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = ra_sender(&t, router_advertisement(None), stop.clone());
    let started = Instant::now();
    let r = block_in_ns(&t.client_ns, || discover_once(&ci, None, &defaults));
    let took = started.elapsed();
    // With DNS64 alone in the order, the RA is still listened to for its RDNSS.
    let dns64_only_rdnss = DiscoverOptions {
        order: vec![PrefixSource::Dns64],
        ..DiscoverOptions::default()
    };
    let r2 = block_in_ns(&t.client_ns, || discover_once(&ci, None, &dns64_only_rdnss));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let r2 = r2.unwrap();
    assert_eq!(r2.prefix, prefix(DNS64_PREFIX));
    assert!(
        r2.origin.as_deref().is_some_and(|o| o.contains("fe80::1")),
        "{r2:?}"
    );
    let r = r.unwrap();
    assert_eq!(
        (r.prefix, r.source),
        (prefix(DNS64_PREFIX), PrefixSource::Dns64)
    );
    assert!(
        r.origin.as_deref().is_some_and(|o| o.contains("fe80::1")),
        "{r:?}"
    );
    assert!(r.attempts.iter().any(|a| a.contains("no PREF64")), "{r:?}");
    // The RA window closes shortly after the RA's options, not after the full 3 s.
    assert!(took < Duration::from_millis(2500), "{took:?}");

    // 4. RAs with PREF64 2001:db8:100::/40: PREF64 wins over DNS64.
    let stop = Arc::new(AtomicBool::new(false));
    let pref64 = prefix("2001:db8:100::/40");
    let sender = ra_sender(&t, router_advertisement(Some((pref64, 1800))), stop.clone());
    let r = block_in_ns(&t.client_ns, || discover_once(&ci, None, &defaults));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let r = r.unwrap();
    assert_eq!((r.prefix, r.source), (pref64, PrefixSource::Pref64));
    assert_eq!(r.lifetime, Some(Duration::from_secs(1800)));
    assert_eq!(r.origin.as_deref(), Some("router fe80::1"));

    // 5. The query really leaves through the named interface: bound to `lo`, the router's
    //    DNS64 server cannot be reached.
    let router_dns = [SocketAddr::new(router, 53)];
    let err = block_in_ns(&t.client_ns, || {
        autoclat::discovery::query_dns64("lo", &router_dns, Duration::from_secs(1))
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            DiscoveryError::Timeout { .. } | DiscoveryError::Resolve { .. }
        ),
        "{err}"
    );

    // 6. A dead DNS server and no RA: nothing found, within the time limits.
    let quick = DiscoverOptions {
        ra_wait: Duration::from_millis(500),
        dns_timeout: Duration::from_secs(1),
        ..DiscoverOptions::default()
    };
    let started = Instant::now();
    let err = block_in_ns(&t.client_ns, || {
        discover_once(&ci, Some("2001:db8:1::99".parse().unwrap()), &quick)
    })
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    match err {
        DiscoveryError::NothingFound { attempts, .. } => {
            assert_eq!(attempts.len(), 3, "{attempts:?}")
        }
        other => panic!("unexpected: {other}"),
    }
}
