//! Root-only: the watcher follows a real kernel. In a fresh network namespace, a veth pair gets
//! addresses, default routes and router advertisements with PREF64 and RDNSS; the inventory built
//! from `watch::run`'s events must follow each change and agree with a fresh dump.
//!
//! Run: `cargo test --test netns_watch` as root (it skips with a notice otherwise).

#![allow(clippy::unwrap_used)]

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use autoclat::discovery::Nat64Prefix;
use autoclat::watch::{self, Inventory, NetEvent, Uplink};
use tokio::sync::mpsc;

/// The namespace, deleted on drop (also when the test fails).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rand4() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:04x}",
        (nanos ^ std::process::id().rotate_left(16)) & 0xffff
    )
}

/// Run a shell command inside the namespace; panics with its output on failure.
fn sh(ns: &str, cmd: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The consumer side of the watcher: applies events as the daemon would.
struct Watched {
    rx: mpsc::Receiver<NetEvent>,
    inv: Inventory,
    resyncs: usize,
}

impl Watched {
    fn apply(&mut self, ev: NetEvent) {
        if matches!(ev, NetEvent::Resync(_)) {
            self.resyncs += 1;
        }
        self.inv.apply(ev, Instant::now());
    }

    /// Apply events until `cond` holds on the inventory, or panic after a few seconds.
    async fn until(&mut self, what: &str, cond: impl Fn(&Inventory) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond(&self.inv) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => self.apply(ev),
                Ok(None) => panic!("watcher stopped while waiting for: {what}"),
                Err(_) => panic!("timed out waiting for: {what}\ninventory: {:#?}", self.inv),
            }
        }
    }

    /// Apply events until the watcher has sent `n` resyncs in all.
    async fn until_resyncs(&mut self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.resyncs < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => self.apply(ev),
                Ok(None) => panic!("watcher stopped while waiting for resync {n}"),
                Err(_) => panic!("timed out waiting for resync {n}"),
            }
        }
    }

    /// The watched inventory agrees with a fresh dump (apart from what only RAs tell),
    /// once the events in flight have arrived.
    async fn agrees_with_dump(&mut self, step: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let fresh = watch::dump().await.unwrap();
            let mut mine = self.inv.clone();
            for l in mine.links.values_mut() {
                l.pref64s.clear();
                l.pref64_refused = None;
                l.v4_addr_arrivals = 0;
                l.v4_route_arrivals = 0;
                l.rdnss.clear();
                l.default_routes.sort();
                l.onlink_v6.sort();
                l.v4_addrs.sort_by_key(|a| (a.addr, a.prefix_len));
                l.v6_addrs.sort_by_key(|a| (a.addr, a.prefix_len));
            }
            let mut fresh = fresh;
            for l in fresh.links.values_mut() {
                l.v4_addr_arrivals = 0;
                l.v4_route_arrivals = 0;
                l.default_routes.sort();
                l.onlink_v6.sort();
                l.v4_addrs.sort_by_key(|a| (a.addr, a.prefix_len));
                l.v6_addrs.sort_by_key(|a| (a.addr, a.prefix_len));
            }
            if mine == fresh {
                return;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => self.apply(ev),
                Ok(None) => panic!("watcher stopped"),
                Err(_) => panic!(
                    "{step}: watched inventory differs from a dump\nwatched: {mine:#?}\ndump: {fresh:#?}"
                ),
            }
        }
    }
}

/// A router advertisement (router lifetime 0: no default route) with a PREF64 and an RDNSS option.
fn router_advertisement(
    prefix: &str,
    plc: u8,
    pref64_life: u16,
    dns: Ipv6Addr,
    dns_life: u32,
) -> Vec<u8> {
    let prefix: Ipv6Addr = prefix.parse().unwrap();
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0, 0];
    ra.extend_from_slice(&[0; 8]); // reachable time, retrans timer
                                   // RFC 8781: type 38, length 2 (16 bytes), scaled lifetime (units of 8 s) and PLC, 96 bits.
    ra.extend_from_slice(&[38, 2]);
    ra.extend_from_slice(&(((pref64_life / 8) << 3) | u16::from(plc)).to_be_bytes());
    ra.extend_from_slice(&prefix.octets()[..12]);
    // RFC 8106: type 25, length 3 (one address), reserved, lifetime, address.
    ra.extend_from_slice(&[25, 3, 0, 0]);
    ra.extend_from_slice(&dns_life.to_be_bytes());
    ra.extend_from_slice(&dns.octets());
    ra
}

/// Send `ra` out of `dev` to all nodes, as a router would (hop limit 255; the kernel fills in
/// the ICMPv6 checksum for raw ICMPv6 sockets).
fn send_ra(dev: &str, ifindex: u32, ra: &[u8]) {
    send_ras(dev, ifindex, ra, 1);
}

fn send_ras(dev: &str, ifindex: u32, ra: &[u8], count: usize) {
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV6),
    )
    .unwrap();
    s.bind_device(Some(dev.as_bytes())).unwrap();
    s.set_multicast_hops_v6(255).unwrap();
    let to = SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, ifindex);
    for _ in 0..count {
        s.send_to(ra, &to.into()).unwrap();
    }
}

fn uplink<'a>(inv: &'a Inventory, name: &str) -> Option<&'a Uplink> {
    inv.by_name(name)
}

#[test]
fn watcher_follows_the_kernel() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED netns_watch: needs root (network namespaces)");
        return;
    }
    let r = rand4();
    let ns = Netns(format!("w4-{r}"));
    let st = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add");
    let up = format!("w4u{r}");
    let peer = format!("w4p{r}");

    let name = ns.0.clone();
    let thread = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        // SAFETY: setns on a valid namespace fd; it only changes this thread's network
        // namespace, and this thread runs nothing but the test below.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario(&name, &up, &peer));
    });
    let result = thread.join();
    drop(ns);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

async fn scenario(ns: &str, up: &str, peer: &str) {
    let (tx, rx) = mpsc::channel(64);
    let watcher = tokio::spawn(watch::run(tx));
    let mut w = Watched {
        rx,
        inv: Inventory::default(),
        resyncs: 0,
    };

    match w.rx.recv().await {
        Some(ev @ NetEvent::Resync(_)) => w.apply(ev),
        other => panic!("first event must be a Resync, got {other:?}"),
    }
    assert!(w.inv.by_name("lo").is_some_and(|l| l.loopback));

    // A link appears.
    sh(ns, &format!("ip link add {up} type veth peer name {peer}"));
    sh(
        ns,
        &format!(
            "sysctl -qw net.ipv6.conf.{up}.accept_dad=0 net.ipv6.conf.{peer}.accept_dad=0 \
             net.ipv6.conf.{up}.accept_ra=2 net.ipv6.conf.{up}.forwarding=0"
        ),
    );
    w.until("veth appears", |i| {
        uplink(i, up).is_some_and(|l| l.kind.as_deref() == Some("veth") && !l.admin_up)
    })
    .await;

    let idx = uplink(&w.inv, up).unwrap().ifindex;
    assert_eq!(watch::ifindex(up).await.unwrap(), idx);
    assert!(matches!(
        watch::ifindex("w4-none").await,
        Err(watch::WatchError::NoSuchLink(n)) if n == "w4-none"
    ));

    // Up, with carrier.
    sh(
        ns,
        &format!("ip link set {peer} up && ip link set {up} up mtu 1400"),
    );
    w.until("link up with carrier", |i| {
        uplink(i, up).is_some_and(|l| l.admin_up && l.carrier && l.mtu == 1400)
    })
    .await;

    // Global IPv6 address and IPv6 default route.
    sh(
        ns,
        &format!("ip -6 addr add 2001:db8:1::5/64 dev {up} nodad"),
    );
    let a6: Ipv6Addr = "2001:db8:1::5".parse().unwrap();
    w.until("global IPv6 address", |i| {
        uplink(i, up).is_some_and(|l| {
            l.v6_addrs
                .iter()
                .any(|a| a.addr == a6 && a.global && !a.tentative && a.prefix_len == 64)
        })
    })
    .await;
    sh(
        ns,
        &format!("ip -6 route add default via 2001:db8:1::1 dev {up}"),
    );
    w.until("IPv6 default route", |i| {
        uplink(i, up).is_some_and(|l| l.v6_default_route)
    })
    .await;

    // On-link /64s: the kernel's prefix route of the /64 address, and a bare one as an RA's
    // on-link prefix beside a DHCPv6 /128 looks; gone again when deleted.
    let net = |n: &str| n.parse::<Ipv6Addr>().unwrap();
    w.until("the address's on-link /64", |i| {
        uplink(i, up).is_some_and(|l| l.onlink_v6_nets() == [net("2001:db8:1::")])
    })
    .await;
    sh(
        ns,
        &format!("ip -6 route add 2001:db8:7::/64 dev {up} proto ra"),
    );
    w.until("a bare on-link /64", |i| {
        uplink(i, up).is_some_and(|l| l.onlink_v6_nets().contains(&net("2001:db8:7::")))
    })
    .await;
    w.agrees_with_dump("on-link /64s").await;
    sh(ns, &format!("ip -6 route del 2001:db8:7::/64 dev {up}"));
    w.until("the bare on-link /64 gone", |i| {
        uplink(i, up).is_some_and(|l| !l.onlink_v6_nets().contains(&net("2001:db8:7::")))
    })
    .await;

    // IPv4 address and default route.
    sh(ns, &format!("ip addr add 198.51.100.2/24 dev {up}"));
    sh(
        ns,
        &format!("ip route add default via 198.51.100.1 dev {up}"),
    );
    w.until("IPv4 default route", |i| {
        uplink(i, up).is_some_and(|l| l.v4_default_route && l.v4_addrs.len() == 1)
    })
    .await;
    assert!(w.inv.has_native_v4_default());
    w.agrees_with_dump("all configured").await;

    // Removed again, one by one.
    sh(
        ns,
        &format!("ip route del default via 198.51.100.1 dev {up}"),
    );
    w.until("IPv4 default route gone", |i| {
        uplink(i, up).is_some_and(|l| !l.v4_default_route)
    })
    .await;
    sh(ns, &format!("ip addr del 198.51.100.2/24 dev {up}"));
    w.until("IPv4 address gone", |i| {
        uplink(i, up).is_some_and(|l| l.v4_addrs.is_empty())
    })
    .await;
    sh(
        ns,
        &format!("ip -6 route del default via 2001:db8:1::1 dev {up}"),
    );
    w.until("IPv6 default route gone", |i| {
        uplink(i, up).is_some_and(|l| !l.v6_default_route)
    })
    .await;
    sh(ns, &format!("ip -6 addr del 2001:db8:1::5/64 dev {up}"));
    w.until("IPv6 address gone", |i| {
        uplink(i, up).is_some_and(|l| !l.v6_addrs.iter().any(|a| a.global))
    })
    .await;
    w.agrees_with_dump("all removed").await;

    // The kernel drops the IPv4 default route with the link's last address, without an event.
    sh(
        ns,
        &format!("ip addr add 198.51.100.2/24 dev {up} && ip route add default via 198.51.100.1"),
    );
    w.until("IPv4 default route again", |i| {
        uplink(i, up).is_some_and(|l| l.v4_default_route)
    })
    .await;
    sh(ns, &format!("ip addr del 198.51.100.2/24 dev {up}"));
    w.until("IPv4 default route silently flushed", |i| {
        uplink(i, up).is_some_and(|l| !l.v4_default_route)
    })
    .await;
    w.agrees_with_dump("silent flush").await;

    // Router advertisements from the peer: PREF64 and RDNSS learnt, then withdrawn.
    let peer_index = w.inv.by_name(peer).unwrap().ifindex;
    let dns: Ipv6Addr = "2001:db8:1::53".parse().unwrap();
    for (prefix, plc) in [("2001:db8:64::/96", 0u8), ("2001:db8:100::/56", 2)] {
        let want: Nat64Prefix = prefix.parse().unwrap();
        let base = prefix.split('/').next().unwrap();
        let before = Instant::now();
        send_ra(
            peer,
            peer_index,
            &router_advertisement(base, plc, 600, dns, 300),
        );
        w.until(&format!("PREF64 {prefix} learnt"), |i| {
            uplink(i, up).is_some_and(|l| {
                l.pref64().is_some_and(|p| p.prefix == want)
                    && l.rdnss.iter().any(|r| r.server == dns)
            })
        })
        .await;
        let l = uplink(&w.inv, up).unwrap();
        let expires = l.pref64().unwrap().expires;
        assert!(expires >= before + Duration::from_secs(600));
        assert!(expires <= Instant::now() + Duration::from_secs(600));
        assert!(w
            .inv
            .next_expiry()
            .is_some_and(|t| t <= before + Duration::from_secs(301)));

        send_ra(
            peer,
            peer_index,
            &router_advertisement(base, plc, 0, dns, 0),
        );
        w.until(&format!("PREF64 {prefix} withdrawn"), |i| {
            uplink(i, up).is_some_and(|l| l.pref64().is_none() && l.rdnss.is_empty())
        })
        .await;
    }

    // Overrun: this task sends a flood of RAs without yielding, so the watcher (same thread) does
    // not read its ND socket, which overflows. The watcher must see ENOBUFS, dump again, and keep
    // the PREF64 learnt before.
    let want: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
    let ra = router_advertisement("2001:db8:64::", 0, 600, dns, 300);
    send_ra(peer, peer_index, &ra);
    w.until("PREF64 before the flood", |i| {
        uplink(i, up).is_some_and(|l| l.pref64().is_some_and(|p| p.prefix == want))
    })
    .await;
    assert_eq!(w.resyncs, 1);
    send_ras(peer, peer_index, &ra, 20_000);
    w.until_resyncs(2).await;
    assert!(
        uplink(&w.inv, up).is_some_and(|l| l.pref64().is_some_and(|p| p.prefix == want)),
        "PREF64 carried over the resync"
    );
    w.agrees_with_dump("after overrun").await;

    // Link down, then gone.
    sh(ns, &format!("ip link set {up} down"));
    w.until("link down", |i| {
        uplink(i, up).is_some_and(|l| !l.admin_up && !l.carrier)
    })
    .await;
    w.agrees_with_dump("link down").await;
    sh(ns, &format!("ip link del {up}"));
    w.until("link gone", |i| {
        uplink(i, up).is_none() && uplink(i, peer).is_none()
    })
    .await;

    assert_eq!(w.resyncs, 2, "one resync at start, one after the overrun");
    drop(w);
    // The receiver is gone: the watcher ends cleanly.
    let ended = tokio::time::timeout(Duration::from_secs(2), watcher).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "watcher ends when its receiver is dropped: {ended:?}"
    );
}
