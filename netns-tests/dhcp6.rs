//! Where the CLAT's IPv6 address lives (issue 8, "No SLAAC needed" and "Source prefix choice"),
//! with the daemon, the real `clatd` and tayga in the netns topology (netns-tests/README.md):
//! a DHCPv6-only uplink (a `/128`, autoconf off, radvd's on-link /64 without SLAAC), a DAD
//! conflict with another host on the segment, and renumbering by radvd. Every test runs with
//! `fast_path = "off"` and `"on"`, and ends by stopping the daemon with SIGTERM. Root only.

#![allow(clippy::unwrap_used)]

#[macro_use]
#[path = "common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoclat::controller::{ndp, ndsock};
use common::*;
use serde_json::Value;

both_fast_path_modes!(
    dhcpv6_only_uplink,
    dad_conflict_takes_another_address,
    renumbering_moves_the_clat,
);

/// The /128 the "DHCPv6 server" gave the client.
const DHCP_ADDR: &str = "2001:db8:1::100";

fn config(mode: &str) -> String {
    format!("[daemon]\nclatd_path = \"\"\n\n[[uplink]]\nmatch = \"up0\"\nfast_path = \"{mode}\"\n")
}

fn in_net(a: &str, net: [u16; 4]) -> bool {
    a.parse::<Ipv6Addr>()
        .is_ok_and(|a| a.segments()[..4] == net)
}

fn wait_running_in(d: &Daemon, net: [u16; 4], mode: &str) -> Value {
    let u = d.wait_uplink("up0", &format!("running in {net:x?}::/64"), |u| {
        u["state"] == "running" && u["v6"].as_str().is_some_and(|a| in_net(a, net))
    });
    assert_eq!(u["fast_path"], mode == "on", "fast_path for {mode}: {u}");
    u
}

/// UDP echo, TCP echo and ping to server4 through the CLAT.
fn traffic_works(topo: &Topology, what: &str) {
    let cli = topo.cli.clone();
    wait_for(WAIT, &format!("UDP echo through the CLAT ({what})"), || {
        udp_echo(
            &cli,
            (SERVER4, 7).into(),
            b"udp?".to_vec(),
            Duration::from_millis(500),
        )
        .ok()
        .filter(|r| r == b"udp?")
    });
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let back = tcp_echo(
        &cli,
        (SERVER4, 7).into(),
        data.clone(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("TCP echo through the CLAT ({what}): {e}"));
    assert!(back == data, "TCP echo came back different ({what})");
    assert!(
        wait_until(WAIT, || ping(
            &cli,
            IpAddr::V4(SERVER4),
            Duration::from_secs(1)
        )),
        "no ping reply through the CLAT ({what})"
    );
}

fn stop_clean(mut d: Daemon, topo: &Topology) {
    d.sigterm();
    let st = d.wait_exit(WAIT).expect("autoclat did not exit on SIGTERM");
    assert!(st.success(), "autoclat exited {st} on SIGTERM");
    assert!(
        topo.link_names_with_prefix(Ns::Client, "v4-").is_empty(),
        "v4- link left"
    );
}

fn topology() -> Topology {
    Topology::new(TopologyOptions {
        echo_servers: true,
        ..TopologyOptions::default()
    })
}

fn dhcpv6_only_uplink(mode: &str) {
    if skip_unless_root(&format!("dhcpv6_only_uplink::fast_path_{mode}")) {
        return;
    }
    let topo = Topology::new(TopologyOptions {
        echo_servers: true,
        uplinks_up: false,
        ..TopologyOptions::default()
    });
    // The prefix on-link but not for SLAAC; the client's own address comes "from DHCPv6".
    topo.reconfigure_radvd(&format!(
        "    prefix {SLAAC_PREFIX} {{ AdvOnLink on; AdvAutonomous off; }};"
    ));
    topo.exec_ok(
        Ns::Client,
        &["sysctl", "-qw", "net.ipv6.conf.up0.autoconf=0"],
    );
    topo.set_link("up0", true);
    topo.exec_ok(
        Ns::Client,
        &[
            "ip",
            "addr",
            "add",
            &format!("{DHCP_ADDR}/128"),
            "dev",
            "up0",
        ],
    );
    wait_for(WAIT, "RA default route and on-link /64 on up0", || {
        let onlink = topo
            .routes(Ns::Client, "-6", "main")
            .iter()
            .any(|r| r["dst"] == SLAAC_PREFIX && r["dev"] == "up0" && r.get("gateway").is_none());
        (topo.has_default6("up0") && onlink).then_some(())
    });
    assert_eq!(
        topo.slaac_addr("up0").map(|a| a.to_string()).as_deref(),
        Some(DHCP_ADDR),
        "only the /128"
    );

    let d = topo.start_autoclat(&config(mode));
    let u = wait_running_in(&d, [0x2001, 0xdb8, 1, 0], mode);
    assert_ne!(
        u["v6"], DHCP_ADDR,
        "the CLAT has an address of its own: {u}"
    );
    traffic_works(&topo, "DHCPv6-only uplink");
    // The kernel was not asked to own or proxy the address.
    let anycast = topo.exec_ok(Ns::Client, &["cat", "/proc/net/anycast6"]);
    let hex: String = u["v6"]
        .as_str()
        .unwrap()
        .parse::<Ipv6Addr>()
        .unwrap()
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!anycast.contains(&hex), "no anycast membership: {anycast}");

    // Neighbour unreachability detection: the router's unicast probe for the CLAT address (to
    // the address itself, not its solicited-node group) is answered too. With mcast_solicit 0
    // the router cannot fall back to a multicast solicitation, so REACHABLE means the unicast
    // probe was answered.
    let clat_v6 = u["v6"].as_str().unwrap().to_owned();
    let link = topo.link(Ns::Client, "up0").unwrap();
    let mac = link["address"].as_str().unwrap().to_owned();
    topo.exec_ok(
        Ns::Router,
        &[
            "sysctl",
            "-qw",
            "net.ipv6.neigh.br0.delay_first_probe_time=1",
        ],
    );
    topo.exec_ok(
        Ns::Router,
        &["sysctl", "-qw", "net.ipv6.neigh.br0.mcast_solicit=0"],
    );
    topo.exec_ok(
        Ns::Router,
        &[
            "ip", "-6", "neigh", "replace", &clat_v6, "lladdr", &mac, "dev", "br0", "nud", "stale",
        ],
    );
    let cli = topo.cli.clone();
    let confirmed = wait_until(WAIT, || {
        let _ = udp_echo(
            &cli,
            (SERVER4, 7).into(),
            b"nud".to_vec(),
            Duration::from_millis(300),
        );
        topo.exec_ok(
            Ns::Router,
            &["ip", "-6", "neigh", "show", &clat_v6, "dev", "br0"],
        )
        .contains("REACHABLE")
    });
    assert!(
        confirmed,
        "the router's unicast probe was not answered: {}",
        topo.exec_ok(Ns::Router, &["ip", "-6", "neigh", "show", "dev", "br0"])
    );
    stop_clean(d, &topo);
}

/// A host on the router's side of the bridge that takes the first address a DAD probe asks
/// about inside 2001:db8:1::/64: it answers the probe (as an owner would) and adds the address
/// to `br0`, so it owns it from then on. Returns the address once claimed.
fn claim_first_probed_address(
    topo: &Topology,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<Ipv6Addr>> {
    let rtr = topo.ns(Ns::Router).to_owned();
    std::thread::spawn(move || {
        in_netns(&rtr, move || {
            let ifindex = nix::net::if_::if_nametoindex("br0").unwrap();
            let mac = ndsock::ethernet_address(ifindex).unwrap();
            let accept_all = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: u32::MAX,
            }];
            let rx = autoclat::translator::sockets::open_packet_rx(ifindex, &accept_all).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 2048];
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                use std::os::fd::AsRawFd;
                let n = match nix::sys::socket::recv(
                    rx.as_raw_fd(),
                    &mut buf,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(n) => n,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let Some(ndp::NdMessage::Solicitation { source, target, .. }) =
                    ndp::parse(&buf[..n])
                else {
                    continue;
                };
                if !source.is_unspecified() || target.segments()[..4] != [0x2001, 0xdb8, 1, 0] {
                    continue;
                }
                ndsock::send_advertisement(ifindex, target, source, mac).unwrap();
                let out = std::process::Command::new("ip")
                    .args([
                        "addr",
                        "add",
                        &format!("{target}/128"),
                        "dev",
                        "br0",
                        "nodad",
                    ])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "ip addr add {target}: {out:?}");
                return Some(target);
            }
            None
        })
    })
}

fn dad_conflict_takes_another_address(mode: &str) {
    if skip_unless_root(&format!(
        "dad_conflict_takes_another_address::fast_path_{mode}"
    )) {
        return;
    }
    let topo = topology();
    topo.wait_slaac("up0");
    let stop = Arc::new(AtomicBool::new(false));
    let claimer = claim_first_probed_address(&topo, stop.clone());
    // Let the claimer's socket open before the daemon probes.
    std::thread::sleep(Duration::from_millis(300));
    let d = topo.start_autoclat(&config(mode));
    let u = wait_running_in(&d, [0x2001, 0xdb8, 1, 0], mode);
    stop.store(true, Ordering::Relaxed);
    let taken = claimer
        .join()
        .unwrap()
        .expect("the daemon sent no DAD probe");
    let v6: Ipv6Addr = u["v6"].as_str().unwrap().parse().unwrap();
    assert_ne!(v6, taken, "the CLAT took the address another host owns");
    let log = d.log_text();
    assert!(
        log.contains(&format!("{taken} is in use on up0")),
        "the conflict is logged: {log}"
    );
    // The other host really has it, and the CLAT works beside it.
    assert!(topo
        .exec_ok(Ns::Router, &["ip", "-6", "addr", "show", "dev", "br0"])
        .contains(&taken.to_string()));
    traffic_works(&topo, "after a DAD conflict");
    stop_clean(d, &topo);
}

fn renumbering_moves_the_clat(mode: &str) {
    if skip_unless_root(&format!("renumbering_moves_the_clat::fast_path_{mode}")) {
        return;
    }
    let topo = topology();
    topo.wait_slaac("up0");
    let d = topo.start_autoclat(&config(mode));
    let first = wait_running_in(&d, [0x2001, 0xdb8, 1, 0], mode);
    traffic_works(&topo, "in the first prefix");

    // Renumbering: the old prefix deprecated (preferred lifetime 0), a new one advertised.
    topo.exec_ok(
        Ns::Router,
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:2::1/64",
            "dev",
            "br0",
            "nodad",
        ],
    );
    topo.reconfigure_radvd(&format!(
        "    prefix {SLAAC_PREFIX} {{ AdvOnLink on; AdvAutonomous on; AdvPreferredLifetime 0; }};\n    prefix 2001:db8:2::/64 {{ AdvOnLink on; AdvAutonomous on; }};"
    ));
    let moved = wait_running_in(&d, [0x2001, 0xdb8, 2, 0], mode);
    assert_ne!(
        first["pid"], moved["pid"],
        "a new translator for the new address"
    );
    traffic_works(&topo, "after renumbering");
    stop_clean(d, &topo);
}
