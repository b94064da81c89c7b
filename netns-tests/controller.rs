//! Root-only tests of the controller against a real kernel: two network namespaces joined by a
//! veth pair (client uplink `k6<r>u`, peer `k6<r>p`), the controller running on a thread that
//! has entered the client namespace. The translator is a fake: a tiny C program (compiled here)
//! that only waits for SIGTERM, so the test can inspect its argv, descriptors and their fdinfo
//! from outside through /proc. (A shell script cannot serve: the kernel replaces argv[0] when it
//! runs a `#!` script, and a shell holds descriptors of its own.)
//!
//! Run: `sudo -E cargo test --test netns_controller` (skips with a notice when not root).

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use autoclat::config::FastPathMode;
use autoclat::controller::spawn::ExitStatusInfo;
use autoclat::controller::{Clat, ClatSpec, Controller};
use autoclat::nat64::Nat64Prefix;
use serde_json::Value;

const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 4);
const V6: &str = "2001:db8:1::464";
const UPLINK_MTU: u32 = 1400;
const METRIC: u32 = 2048;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn random_tag() -> String {
    let mut b = [0u8; 3];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    format!("k6{:02x}{:02x}{:02x}", b[0], b[1], b[2])
}

/// Two namespaces and a veth pair; everything is deleted on drop (also when a test panics).
struct Topology {
    tag: String,
    client: String,
    peer: String,
    uplink: String,
    peer_link: String,
    dir: tempfile::TempDir,
    fake_clatd: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A failed test may leave its fake translator behind: end it (only ours, by argv[0],
        // once a just-spawned one has finished its exec).
        std::thread::sleep(Duration::from_millis(100));
        for pid in processes_named(&format!("clatd-{}", self.uplink)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for ns in [&self.client, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Topology {
    /// `None` (with a notice) when not root.
    fn new() -> Option<Self> {
        if !is_root() {
            eprintln!("SKIPPED: netns_controller needs root (run with sudo -E cargo test --test netns_controller)");
            return None;
        }
        let tag = random_tag();
        let dir = tempfile::tempdir().unwrap();
        let topo = Topology {
            client: format!("{tag}-c"),
            peer: format!("{tag}-p"),
            uplink: format!("{tag}u"),
            peer_link: format!("{tag}p"),
            fake_clatd: dir.path().join("fake-clatd"),
            dir,
            tag,
        };
        sh(&["ip", "netns", "add", &topo.client]);
        sh(&["ip", "netns", "add", &topo.peer]);
        sh(&[
            "ip",
            "link",
            "add",
            &topo.uplink,
            "netns",
            &topo.client,
            "mtu",
            "1400",
            "type",
            "veth",
            "peer",
            "name",
            &topo.peer_link,
            "netns",
            &topo.peer,
            "mtu",
            "1400",
        ]);
        let c = topo.client.clone();
        let p = topo.peer.clone();
        topo.ns(
            &c,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{}.accept_dad=0", topo.uplink),
            ],
        );
        topo.ns(
            &c,
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:1::2/64",
                "dev",
                &topo.uplink,
                "nodad",
            ],
        );
        topo.ns(&c, &["ip", "link", "set", &topo.uplink, "up"]);
        topo.ns(&c, &["ip", "link", "set", "lo", "up"]);
        topo.ns(
            &p,
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                &topo.peer_link,
                "nodad",
            ],
        );
        topo.ns(&p, &["ip", "link", "set", &topo.peer_link, "up"]);
        topo.ns(&p, &["ip", "link", "set", "lo", "up"]);
        topo.build_fake_clatd();
        Some(topo)
    }

    fn build_fake_clatd(&self) {
        let src = self.dir.path().join("fake-clatd.c");
        // Exits 0 on SIGTERM, like clatd; otherwise just waits.
        std::fs::write(
            &src,
            "#include <signal.h>\n#include <unistd.h>\n\
             static void on_term(int s) { (void)s; _exit(0); }\n\
             int main(void) { signal(SIGTERM, on_term); for (;;) pause(); }\n",
        )
        .unwrap();
        sh(&[
            "cc",
            "-o",
            self.fake_clatd.to_str().unwrap(),
            src.to_str().unwrap(),
        ]);
    }

    fn ns(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn client_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["ip", "-j"];
        full.extend_from_slice(args);
        let out = self.ns(&self.client, &full);
        if out.trim().is_empty() {
            Value::Array(vec![])
        } else {
            serde_json::from_str(&out).unwrap()
        }
    }

    fn tun_name(&self) -> String {
        format!("v4-{}", self.uplink)
    }

    fn link_exists(&self, name: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "ip",
                "link",
                "show",
                "dev",
                name,
            ])
            .output()
            .unwrap()
            .status
            .success()
    }

    fn default_routes(&self) -> Vec<Value> {
        self.client_json(&["-4", "route", "show", "default", "table", "all"])
            .as_array()
            .unwrap()
            .clone()
    }

    fn v4_addresses(&self) -> Vec<String> {
        let mut found = Vec::new();
        for link in self
            .client_json(&["-4", "addr", "show"])
            .as_array()
            .unwrap()
        {
            for a in link["addr_info"].as_array().unwrap() {
                found.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap(),
                    a["prefixlen"]
                ));
            }
        }
        found
    }

    fn anycast_v6(&self) -> String {
        self.ns(&self.client, &["cat", "/proc/net/anycast6"])
    }

    fn spec(&self, uplink_ifindex: u32) -> ClatSpec {
        ClatSpec {
            uplink: self.uplink.clone(),
            uplink_ifindex,
            tun_name: self.tun_name(),
            v4: V4,
            v6: V6.parse().unwrap(),
            prefix: "2001:db8:64::/96".parse::<Nat64Prefix>().unwrap(),
            mtu: UPLINK_MTU,
            route_metric: METRIC,
            route_table: None,
            clatd_path: self.fake_clatd.clone(),
            fwmark: None,
            uplink_is_ethernet: true,
            fast_path: FastPathMode::Off,
            stats_page: false,
            v6_covered: true,
            clat_prefix: None,
        }
    }

    /// Runs `f` on a thread inside the client namespace with a current-thread runtime and a
    /// controller whose rtnetlink socket lives in that namespace.
    fn in_client<F, Fut>(&self, f: F)
    where
        F: FnOnce(Controller, u32) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let ns_path = format!("/run/netns/{}", self.client);
        let uplink = self.uplink.clone();
        let result = std::thread::spawn(move || {
            let ns = std::fs::File::open(&ns_path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let ifindex = nix::net::if_::if_nametoindex(uplink.as_str()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(conn);
                let controller = Controller::new(handle).with_grace(Duration::from_secs(2));
                f(controller, ifindex).await;
            });
        })
        .join();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Waits until the spawned fake translator sits in pause(2), its checks done. posix_spawn
/// returns before the exec has finished (close-on-exec descriptors still open), and then the
/// dynamic loader and the fake's own checks open descriptors for a moment: /proc read earlier
/// can list descriptors that are about to go.
fn wait_exec(pid: i32) {
    for _ in 0..500 {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("pause") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} did not reach pause()");
}

fn descriptors(pid: i32) -> Vec<i32> {
    wait_exec(pid);
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    fds
}

fn cmdline(pid: i32) -> Vec<String> {
    wait_exec(pid);
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn flag(args: &[String], flag: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[i + 1].clone()
}

/// Processes whose argv[0] is `argv0` (a translator nobody stopped).
fn processes_named(argv0: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmd.split(|b| *b == 0).next() == Some(argv0.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

fn assert_tun_fd(pid: i32, fd: i32, tun_name: &str) {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(target, Path::new("/dev/net/tun"));
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    assert!(
        info.contains(&format!("iff:\t{tun_name}\n")),
        "fdinfo of fd {fd}: {info}"
    );
}

fn assert_nothing_left(topo: &Topology) {
    assert!(
        !topo.link_exists(&topo.tun_name()),
        "{} still exists",
        topo.tun_name()
    );
    let links = topo.client_json(&["link", "show"]);
    for link in links.as_array().unwrap() {
        let alias = link["ifalias"].as_str().unwrap_or("");
        assert!(
            !alias.starts_with("autoclat:"),
            "link with our alias left: {link}"
        );
    }
    assert!(
        !topo
            .default_routes()
            .iter()
            .any(|r| r["dev"] == topo.tun_name().as_str()),
        "route left: {:?}",
        topo.default_routes()
    );
    assert!(!topo.v4_addresses().contains(&"192.0.0.4/32".to_owned()));
    assert!(
        !topo
            .anycast_v6()
            .contains("20010db8000100000000000000000464"),
        "{}",
        topo.anycast_v6()
    );
    assert_eq!(
        processes_named(&format!("clatd-{}", topo.uplink)),
        Vec::<i32>::new()
    );
}

#[test]
fn start_configures_everything_and_stop_removes_it() {
    let Some(topo) = Topology::new() else { return };
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        let mut spec = t.spec(uplink_ifindex);
        spec.fwmark = Some(0x1234);
        let clat: Clat = ctl.start(spec).await.unwrap();
        let tun = t.tun_name();
        let pid = clat.pid();
        assert!(pid > 0);

        // The translator's command line and descriptors.
        let args = cmdline(pid);
        assert_eq!(args[0], format!("clatd-{}", t.uplink));
        let n = flag(&args, "-t");
        let (rfd, wfd, gfd) = (flag(&args, "-r"), flag(&args, "-w"), flag(&args, "-g"));
        let expected = format!(
            "-i {} -p 2001:db8:64::/96 -4 192.0.0.4 -6 2001:db8:1::464 -t {n} -m 4660 -r {rfd} -w {wfd} -g {gfd} -P {}",
            t.uplink,
            std::process::id()
        );
        assert_eq!(args[1..].join(" "), expected);
        let (n, rfd, wfd, gfd): (i32, i32, i32, i32) =
            (n.parse().unwrap(), rfd.parse().unwrap(), wfd.parse().unwrap(), gfd.parse().unwrap());
        let mut want = vec![0, 1, 2, n, rfd, wfd, gfd];
        want.sort();
        let held = descriptors(pid);
        let targets: Vec<String> = held
            .iter()
            .map(|fd| format!("{fd}->{:?}", std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()))
            .collect();
        assert_eq!(held, want, "the child holds only 0, 1, 2 and the passed ones: {targets:?}");
        assert_tun_fd(pid, n, &tun);
        let sock = std::fs::read_link(format!("/proc/{pid}/fd/{rfd}")).unwrap();
        assert!(sock.to_string_lossy().starts_with("socket:"), "{sock:?}");

        // The tun: alias, MTU, up, address, route.
        let link = t.client_json(&["-d", "link", "show", "dev", &tun]);
        let link = &link[0];
        assert_eq!(link["ifindex"], clat.tun_ifindex());
        assert_eq!(link["ifalias"], format!("autoclat:{}", t.uplink).as_str());
        assert_eq!(link["mtu"], UPLINK_MTU - 28);
        assert!(link["flags"].as_array().unwrap().contains(&Value::from("UP")), "{link}");
        assert_eq!(link["linkinfo"]["info_kind"], "tun");
        assert!(t.v4_addresses().contains(&"192.0.0.4/32".to_owned()), "{:?}", t.v4_addresses());
        let routes = t.default_routes();
        let route = routes.iter().find(|r| r["dev"] == tun.as_str()).unwrap_or_else(|| panic!("{routes:?}"));
        assert_eq!(route["metric"], METRIC);
        assert_eq!(route["scope"], "link");

        // The uplink answers neighbour solicitation for the CLAT's IPv6 address.
        assert!(t.anycast_v6().contains("20010db8000100000000000000000464"), "{}", t.anycast_v6());
        let ping = Command::new("ip")
            .args(["netns", "exec", &t.peer, "ping", "-6", "-c", "1", "-W", "3", V6])
            .output()
            .unwrap();
        let neigh = t.ns(&t.peer, &["ip", "-j", "-6", "neigh", "show", "to", V6, "dev", &t.peer_link]);
        let neigh: Value = serde_json::from_str(&neigh).unwrap();
        let mac = t.client_json(&["link", "show", "dev", &t.uplink])[0]["address"].clone();
        // (The reply comes from the uplink's own address: the host answers echo sent to an anycast
        // address, which is why the fast path must drop the host's copy.)
        assert_eq!(
            neigh[0]["lladdr"], mac,
            "peer's neighbour entry: {neigh}; ping: {}",
            String::from_utf8_lossy(&ping.stdout)
        );

        let errors = ctl.stop(clat).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the translator was reaped");
        assert_nothing_left(&t);
    });
}

#[test]
fn a_bogus_translator_path_leaves_nothing_behind() {
    let Some(topo) = Topology::new() else { return };
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        let mut spec = t.spec(uplink_ifindex);
        spec.clatd_path = PathBuf::from("/nonexistent/clatd");
        let err = ctl.start(spec).await.unwrap_err();
        assert_eq!(err.step_name(), "translator /nonexistent/clatd", "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert_nothing_left(&t);
    });
}

#[test]
fn a_route_clash_undoes_every_step_and_keeps_the_other_route() {
    let Some(topo) = Topology::new() else { return };
    // Somebody else's default route with our metric: adding ours fails with EEXIST.
    topo.ns(
        &topo.client,
        &[
            "ip",
            "route",
            "add",
            "default",
            "dev",
            &topo.uplink,
            "metric",
            "2048",
        ],
    );
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        let err = ctl.start(t.spec(uplink_ifindex)).await.unwrap_err();
        assert_eq!(
            err.step_name(),
            format!("add IPv4 default route via {} metric 2048", t.tun_name())
        );
        assert!(
            err.to_string().contains("EEXIST") || err.to_string().contains("File exists"),
            "{err}"
        );
        assert_nothing_left(&t);
        let routes = t.default_routes();
        assert!(
            routes
                .iter()
                .any(|r| r["dev"] == t.uplink.as_str() && r["metric"] == 2048),
            "{routes:?}"
        );
    });
}

#[test]
fn an_existing_interface_of_the_tun_name_is_not_taken_over() {
    let Some(topo) = Topology::new() else { return };
    let tun = topo.tun_name();
    topo.ns(
        &topo.client,
        &["ip", "tuntap", "add", "dev", &tun, "mode", "tun"],
    );
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        let err = ctl.start(t.spec(uplink_ifindex)).await.unwrap_err();
        assert_eq!(err.step_name(), format!("create {}", t.tun_name()));
        assert!(
            t.link_exists(&t.tun_name()),
            "somebody else's interface must stay"
        );
        let link = &t.client_json(&["link", "show", "dev", &t.tun_name()])[0];
        assert!(link.get("ifalias").is_none(), "{link}");
    });
}

#[test]
fn a_wrong_uplink_is_refused() {
    let Some(topo) = Topology::new() else { return };
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        let mut spec = t.spec(uplink_ifindex);
        spec.uplink = format!("{}x", t.tag); // the index names another link
        let err = ctl.start(spec).await.unwrap_err();
        assert!(err.step_name().starts_with("look up uplink"), "{err}");
        let spec = t.spec(999_999);
        let err = ctl.start(spec).await.unwrap_err();
        assert!(err.step_name().starts_with("look up uplink"), "{err}");
        assert_nothing_left(&t);
    });
}

#[test]
fn a_crashed_translator_is_restarted_on_the_same_tun() {
    let Some(topo) = Topology::new() else { return };
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        let mut clat = ctl.start(t.spec(uplink_ifindex)).await.unwrap();
        let (old_pid, ifindex) = (clat.pid(), clat.tun_ifindex());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old_pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), clat.translator_exited())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            status,
            ExitStatusInfo::Signaled(nix::sys::signal::Signal::SIGKILL)
        );
        // The supervisor's descriptor keeps the tun (and its address and route) alive.
        assert!(t.link_exists(&t.tun_name()));
        assert!(t.v4_addresses().contains(&"192.0.0.4/32".to_owned()));

        ctl.restart_translator(&mut clat).await.unwrap();
        assert!(clat.pid() > 0 && clat.pid() != old_pid);
        assert_eq!(clat.tun_ifindex(), ifindex);
        let args = cmdline(clat.pid());
        let fd = |f: &str| -> i32 { flag(&args, f).parse().unwrap() };
        let n = fd("-t");
        assert_tun_fd(clat.pid(), n, &t.tun_name());
        let mut want = vec![0, 1, 2, n, fd("-r"), fd("-w"), fd("-g")];
        want.sort();
        assert_eq!(descriptors(clat.pid()), want);

        // A restart while it still runs stops the old one first.
        let second = clat.pid();
        ctl.restart_translator(&mut clat).await.unwrap();
        assert!(!Path::new(&format!("/proc/{second}")).exists());
        wait_exec(clat.pid());
        assert_eq!(
            processes_named(&format!("clatd-{}", t.uplink)),
            vec![clat.pid()]
        );

        let stopped_pid = clat.pid();
        let errors = ctl.stop(clat).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!Path::new(&format!("/proc/{stopped_pid}")).exists());
        assert_nothing_left(&t);
    });
}

#[test]
fn remove_leftovers_deletes_only_links_with_our_alias() {
    let Some(topo) = Topology::new() else { return };
    let stray = format!("{}l", topo.tag);
    let c = topo.client.clone();
    topo.ns(&c, &["ip", "tuntap", "add", "dev", &stray, "mode", "tun"]);
    topo.ns(
        &c,
        &[
            "ip",
            "link",
            "set",
            "dev",
            &stray,
            "alias",
            "autoclat:gone0",
        ],
    );
    topo.ns(
        &c,
        &[
            "ip",
            "link",
            "set",
            "dev",
            &topo.uplink,
            "alias",
            "not-autoclat",
        ],
    );
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    topo.in_client(move |ctl, uplink_ifindex| async move {
        // A crashed run: the CLAT is never stopped, and its tun stays open (here in this
        // process, as it would in an orphaned translator).
        let clat = ctl.start(t.spec(uplink_ifindex)).await.unwrap();
        let orphan = clat.pid();
        std::mem::forget(clat);

        let mut removed = ctl.remove_leftovers().await.unwrap();
        removed.sort();
        let mut want = vec![stray.clone(), t.tun_name()];
        want.sort();
        assert_eq!(removed, want);
        assert!(!t.link_exists(&stray));
        assert!(!t.link_exists(&t.tun_name()));
        assert!(t.link_exists(&t.uplink), "a link with another alias stays");
        assert!(!t
            .default_routes()
            .iter()
            .any(|r| r["dev"] == t.tun_name().as_str()));
        assert!(!t.v4_addresses().contains(&"192.0.0.4/32".to_owned()));
        assert_eq!(ctl.remove_leftovers().await.unwrap(), Vec::<String>::new());

        // The orphaned translator is not the controller's to find (see report); end it here.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(orphan),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(orphan), None).unwrap();
    });
}

/// A process holding a tun named `name` in namespace `ns` whose supervisor is gone: a shell
/// spawned with the tun descriptor starts `sleep` in the background and exits, so `sleep`
/// (holding the tun) is re-parented. Returns the sleep's pid.
fn orphan_tun_holder(ns: &str, name: &str, dir: &Path) -> i32 {
    let (name, pidfile) = (name.to_owned(), dir.join(format!("{ns}.pid")));
    let pf = pidfile.clone();
    let ns_path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        // SAFETY: setns with a valid namespace fd changes only this thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let tun = autoclat::controller::tun::open_tun(&name).unwrap();
        let slot = autoclat::controller::spawn::ReservedFd::new().unwrap();
        let script = format!("sleep 1000 & echo $! > {}", pf.display());
        let pid = autoclat::controller::spawn::spawn_translator(
            Path::new("/bin/sh"),
            "sh",
            &["-c".into(), script],
            &[(std::os::fd::AsFd::as_fd(&tun.fd), slot.number())],
        )
        .unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap();
    })
    .join()
    .unwrap();
    std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): look at the state instead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Issue 9: leftover clean-up used to stop every process holding a tun of our name across all
/// of /proc, so a daemon in one namespace killed translators of daemons in other namespaces.
#[test]
fn leftover_cleanup_stays_in_its_own_network_namespace() {
    if !is_root() {
        eprintln!("skipped: leftover_cleanup_stays_in_its_own_network_namespace needs root");
        return;
    }
    let tag = random_tag();
    let (ours, theirs) = (format!("{tag}a"), format!("{tag}b"));
    struct Cleanup(Vec<String>, Vec<i32>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for &pid in &self.1 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            for ns in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
    let mut cleanup = Cleanup(vec![], vec![]);
    for ns in [&ours, &theirs] {
        sh(&["ip", "netns", "add", ns]);
        cleanup.0.push(ns.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let tun = format!("v4-{tag}");
    let foreign = orphan_tun_holder(&theirs, &tun, dir.path());
    cleanup.1.push(foreign);
    let leftover = orphan_tun_holder(&ours, &tun, dir.path());
    cleanup.1.push(leftover);
    assert!(alive(foreign) && alive(leftover));

    let ns_path = format!("/run/netns/{ours}");
    let tun2 = tun.clone();
    let stopped = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        // SAFETY: setns with a valid namespace fd changes only this thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(autoclat::controller::leftovers::stop_tun_holders(
            &tun2,
            Duration::from_secs(5),
        ))
    })
    .join()
    .unwrap();
    assert_eq!(stopped, vec![leftover], "only the orphan in our namespace");
    for _ in 0..500 {
        if !alive(leftover) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(leftover),
        "the leftover in our namespace was not stopped"
    );
    assert!(alive(foreign), "a process in another namespace was touched");
    let fds = std::fs::read_dir(format!("/proc/{foreign}/fd"))
        .unwrap()
        .count();
    assert!(fds >= 4, "the foreign holder lost its tun");
}
