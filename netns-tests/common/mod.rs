//! Root-only integration test harness: the topology of netns-tests/README.md built from network namespaces,
//! real peers (radvd, unbound as DNS64, tayga as NAT64), a PREF64 router-advertisement sender
//! of our own, and helpers to run `autoclat` in the client namespace and look at what it did.
//!
//! ```text
//!  [client ns]  up0 ─── port0─br0 [router ns] nat64(tayga) v4srv ─── eth0 [server4 ns]
//!                        2001:db8:1::1/64 (radvd, unbound)              198.51.100.10/24
//! ```
//!
//! Every topology gets a fresh random name `acXXXXX`; namespaces are `acXXXXX-cli`, `-rtr` and
//! `-srv`. Link names live inside those namespaces, so they are short fixed names. Everything
//! the topology started is killed and every namespace deleted when it is dropped, also while a
//! test panics. Test files include it with `#[path = "common/mod.rs"] mod common;`.
// Tests may unwrap (house rules); a failed step panics with its context.
#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use autoclat::discovery::Nat64Prefix;
use serde_json::Value;

/// Instantiates each test body `fn(&str)` once per fast-path mode, as `NAME::fast_path_off`
/// and `NAME::fast_path_on` (suites that include this module with `#[macro_use]`).
#[allow(unused_macros)]
macro_rules! both_fast_path_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn fast_path_off() {
                    super::$name("off");
                }
                #[test]
                fn fast_path_on() {
                    super::$name("on");
                }
            }
        )*
    };
}

/// The router's address on the client link: RDNSS and DNS64 server.
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The prefix radvd announces for SLAAC.
pub const SLAAC_PREFIX: &str = "2001:db8:1::/64";
/// The IPv4-only server behind the NAT64.
pub const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The router's address on the server4 link.
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Native IPv4 (option `native_ipv4`): the router's address on the bridge…
pub const NATIVE4_ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// …and the client's, added by [`Topology::add_native_ipv4`].
pub const NATIVE4_CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// tayga's own IPv4 address; its dynamic pool is 192.0.2.0/24.
pub const TAYGA_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The default NAT64 prefix (Debian's tayga refuses documentation IPv4 with 64:ff9b::/96).
pub const DEFAULT_PREFIX: &str = "2001:db8:64::/96";
/// Second link-local address of the router's bridge, the source of our PREF64 RAs. A distinct
/// source matters: an RA with router lifetime 0 from radvd's own address would delete the
/// default route the client learnt from radvd.
pub const PREF64_SENDER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x64);
/// Generous bound for waiting on a state; tests wait, they never assert on timing.
pub const WAIT: Duration = Duration::from_secs(20);

/// Name of the marker file that identifies our temp dirs for stale clean-up.
const MARKER: &str = ".autoclat-netns-tests";
const STALE_AGE: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Small utilities

/// True when running as root. Tests call [`skip_unless_root`] first.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a notice and returns true when the test must be skipped (not root, or no `ip`).
pub fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIPPED {test}: netns tests need root");
        return true;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED {test}: iproute2 `ip` not found");
        return true;
    }
    false
}

/// Checks `cond` every 100 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`wait_until`] but polls a function returning `Some` and panics with `what` on timeout.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    u16::from_ne_bytes(b)
}

/// Makes every descriptor above 2 close-on-exec in the child, so that what cargo or the test
/// process happened to leave open (a jobserver pipe, say) never reaches the program under test:
/// a descriptor the fake translator then sees was leaked by the daemon itself.
pub fn no_inherited_fds(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only makes a raw close_range(2) syscall, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Runs a command, returns its output (never panics on a non-zero exit).
pub fn run(args: &[&str]) -> Output {
    no_inherited_fds(&mut Command::new(args[0]))
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// Runs a command and panics with its stderr when it fails; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a process exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // state is the field after the parenthesised comm
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// The argv of a running process, from /proc/PID/cmdline.
pub fn proc_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started (or found in our own namespaces); no memory involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL; reaps when it is our child.
fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    kill(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `f` on a fresh thread that has entered the network namespace `ns` (a name under
/// /run/netns). Sockets it creates belong to that namespace. Panics in `f` propagate.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    let handle = std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns with a valid namespace fd changes only this thread's network namespace;
        // this thread was created for that purpose and ends when `f` returns.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Topology

/// Which namespace of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Client,
    Router,
    Server,
}

/// What to build. `TopologyOptions::default()` is the full DNS64 + NAT64 network with one uplink.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Client uplink names (one veth each, all on the router's bridge). Default `["up0"]`.
    pub uplinks: Vec<String>,
    /// Bring the uplinks up at once (false: they stay down until [`Topology::set_link`]).
    pub uplinks_up: bool,
    /// The NAT64 prefix used by tayga and unbound's dns64. Default [`DEFAULT_PREFIX`].
    pub nat64_prefix: String,
    /// radvd announces RDNSS 2001:db8:1::1.
    pub rdnss: bool,
    /// Run unbound as DNS64 on 2001:db8:1::1.
    pub dns64: bool,
    /// Run tayga as the NAT64.
    pub nat64: bool,
    /// Router gets 203.0.113.1/24 on the bridge so the client can be given native IPv4.
    pub native_ipv4: bool,
    /// Leave DAD on on the client uplinks (default off: accept_dad=0).
    pub accept_dad: bool,
    /// Run TCP and UDP echo servers (socat, port 7) on server4.
    pub echo_servers: bool,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        Self {
            uplinks: vec!["up0".into()],
            uplinks_up: true,
            nat64_prefix: DEFAULT_PREFIX.into(),
            rdnss: true,
            dns64: true,
            nat64: true,
            native_ipv4: false,
            accept_dad: false,
            echo_servers: false,
        }
    }
}

impl TopologyOptions {
    /// A PREF64-only network: no unbound, no RDNSS (the test sends PREF64 RAs itself).
    pub fn pref64_only() -> Self {
        Self {
            rdnss: false,
            dns64: false,
            ..Self::default()
        }
    }
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A built topology; dropping it tears everything down.
pub struct Topology {
    /// The random name, e.g. `ac3k9zq`.
    pub id: String,
    pub cli: String,
    pub rtr: String,
    pub srv: String,
    pub opts: TopologyOptions,
    /// The NAT64 prefix in use.
    pub prefix: Nat64Prefix,
    /// Per-topology temp dir (configs, logs, sockets, fake translator reports).
    pub dir: PathBuf,
    procs: Mutex<Vec<Proc>>,
    created_ns: Mutex<Vec<String>>,
    daemon_seq: AtomicU32,
}

impl Topology {
    /// Builds the topology; panics (after tearing down what was built) when a step fails.
    pub fn new(opts: TopologyOptions) -> Topology {
        cleanup_stale();
        let prefix: Nat64Prefix = opts
            .nat64_prefix
            .parse()
            .unwrap_or_else(|e| panic!("bad nat64_prefix {}: {e}", opts.nat64_prefix));
        for u in &opts.uplinks {
            assert!(u.len() <= 15, "uplink name {u} longer than 15 characters");
        }
        let (id, dir) = loop {
            let id = format!("ac{}", random_alnum(5));
            if Path::new(&format!("/run/netns/{id}-cli")).exists() {
                continue;
            }
            let dir = std::env::temp_dir().join(format!("{id}-netns"));
            if fs::create_dir(&dir).is_ok() {
                break (id, dir);
            }
        };
        fs::write(dir.join(MARKER), b"autoclat netns-tests topology\n").expect("write marker");
        let topo = Topology {
            cli: format!("{id}-cli"),
            rtr: format!("{id}-rtr"),
            srv: format!("{id}-srv"),
            id,
            opts,
            prefix,
            dir,
            procs: Mutex::new(Vec::new()),
            created_ns: Mutex::new(Vec::new()),
            daemon_seq: AtomicU32::new(0),
        };
        // A panic from here on drops `topo`, which tears down whatever was built.
        topo.build();
        topo
    }

    /// The kernel name of a namespace.
    pub fn ns(&self, ns: Ns) -> &str {
        match ns {
            Ns::Client => &self.cli,
            Ns::Router => &self.rtr,
            Ns::Server => &self.srv,
        }
    }

    /// The first uplink's name.
    pub fn uplink(&self) -> &str {
        &self.opts.uplinks[0]
    }

    fn ip(&self, ns: Ns, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", self.ns(ns)];
        v.extend_from_slice(args);
        run_ok(&v)
    }

    fn sysctl(&self, ns: Ns, kv: &str) {
        self.exec_ok(ns, &["sysctl", "-qw", kv]);
    }

    fn build(&self) {
        for ns in [&self.cli, &self.rtr, &self.srv] {
            run_ok(&["ip", "netns", "add", ns]);
            self.created_ns.lock().unwrap().push(ns.clone());
            // `ip netns exec` shows this file as /etc/resolv.conf, so nothing started in the
            // namespaces (the daemon's resolv.conf fallback included) ever asks the host's
            // servers, which are outside the documentation ranges.
            let etc = format!("/etc/netns/{ns}");
            let _ = std::fs::create_dir_all(&etc);
            let _ = std::fs::write(format!("{etc}/resolv.conf"), "nameserver 2001:db8:1::1\n");
            run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }

        // Router: a bridge carrying the client links, and a veth to server4.
        self.ip(
            Ns::Router,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        );
        self.sysctl(Ns::Router, "net.ipv6.conf.all.forwarding=1");
        self.sysctl(Ns::Router, "net.ipv4.ip_forward=1");
        self.ip(
            Ns::Router,
            &["addr", "add", "2001:db8:1::1/64", "dev", "br0", "nodad"],
        );
        self.ip(
            Ns::Router,
            &[
                "addr",
                "add",
                &format!("{PREF64_SENDER_LL}/64"),
                "dev",
                "br0",
                "nodad",
            ],
        );
        if self.opts.native_ipv4 {
            self.ip(
                Ns::Router,
                &["addr", "add", &format!("{NATIVE4_ROUTER}/24"), "dev", "br0"],
            );
        }
        self.ip(Ns::Router, &["link", "set", "br0", "up"]);
        self.sysctl(Ns::Router, "net.ipv6.neigh.br0.proxy_delay=0");
        self.ip(
            Ns::Router,
            &[
                "link", "add", "v4srv", "type", "veth", "peer", "name", "eth0", "netns", &self.srv,
            ],
        );
        self.ip(
            Ns::Router,
            &["addr", "add", &format!("{ROUTER4}/24"), "dev", "v4srv"],
        );
        self.ip(Ns::Router, &["link", "set", "v4srv", "up"]);

        // Server4.
        self.ip(
            Ns::Server,
            &["addr", "add", &format!("{SERVER4}/24"), "dev", "eth0"],
        );
        self.ip(Ns::Server, &["link", "set", "eth0", "up"]);
        self.ip(
            Ns::Server,
            &["route", "add", "default", "via", &ROUTER4.to_string()],
        );

        // Client: a host, not a router; DAD off unless asked.
        self.sysctl(Ns::Client, "net.ipv6.conf.all.forwarding=0");
        let dad = if self.opts.accept_dad { "1" } else { "0" };
        self.sysctl(Ns::Client, &format!("net.ipv6.conf.all.accept_dad={dad}"));
        self.sysctl(
            Ns::Client,
            &format!("net.ipv6.conf.default.accept_dad={dad}"),
        );
        let uplinks = self.opts.uplinks.clone();
        for (i, up) in uplinks.iter().enumerate() {
            self.add_uplink_link(up, i);
        }

        if self.opts.nat64 {
            self.start_tayga();
        }
        if self.opts.dns64 {
            self.start_unbound();
        }
        self.start_radvd();
        if self.opts.echo_servers {
            let sv = SERVER4.to_string();
            self.spawn(
                Ns::Server,
                "tcp-echo",
                // `-b 4096`: socat echoes through a pipe it both writes and reads, with
                // blocking writes once select() calls the pipe writable (at least one free
                // 4 KiB slot). With its default 8 KiB blocks a write can then block on the
                // pipe that only socat itself would drain, and the echo stalls for good under
                // bulk load. A 4 KiB block always fits the free slot.
                &[
                    "socat",
                    "-b",
                    "4096",
                    &format!("TCP4-LISTEN:7,bind={sv},reuseaddr,fork"),
                    "PIPE",
                ],
            );
            self.spawn(
                Ns::Server,
                "udp-echo",
                &["socat", &format!("UDP4-RECVFROM:7,bind={sv},fork"), "PIPE"],
            );
        }
        if self.opts.dns64 {
            // unbound is ready when it answers (asked from inside the router namespace).
            let ok = wait_until(Duration::from_secs(10), || {
                dns_aaaa(
                    self.ns(Ns::Router),
                    ROUTER_V6,
                    "ipv4only.arpa",
                    Duration::from_millis(500),
                )
                .map(|a| !a.is_empty())
                .unwrap_or(false)
            });
            assert!(
                ok,
                "unbound did not answer:\n{}",
                tail(&self.dir.join("unbound.log"), 30)
            );
        }
    }

    fn add_uplink_link(&self, up: &str, index: usize) {
        let port = format!("port{index}");
        self.ip(
            Ns::Router,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", up, "netns", &self.cli,
            ],
        );
        self.ip(Ns::Router, &["link", "set", &port, "master", "br0", "up"]);
        let dad = if self.opts.accept_dad { "1" } else { "0" };
        for kv in [
            format!("net.ipv6.conf.{up}.accept_ra=2"),
            format!("net.ipv6.conf.{up}.autoconf=1"),
            format!("net.ipv6.conf.{up}.accept_dad={dad}"),
            // proxy_delay stays at the kernel default: autoclat sets it to 0 itself while a
            // CLAT runs (anycast neighbour advertisements are delayed by it).
        ] {
            self.sysctl(Ns::Client, &kv);
        }
        if self.opts.uplinks_up {
            self.ip(Ns::Client, &["link", "set", up, "up"]);
        }
    }

    fn start_tayga(&self) {
        let conf = self.dir.join("tayga.conf");
        let data = self.dir.join("tayga-data");
        fs::create_dir_all(&data).unwrap();
        fs::write(
            &conf,
            format!(
                "tun-device nat64\nipv4-addr {TAYGA_V4}\nprefix {}\ndynamic-pool 192.0.2.0/24\ndata-dir {}\n",
                self.prefix,
                data.display()
            ),
        )
        .unwrap();
        let conf_s = conf.to_str().unwrap();
        self.exec_ok(Ns::Router, &["tayga", "--mktun", "-c", conf_s]);
        self.ip(Ns::Router, &["link", "set", "nat64", "up"]);
        self.ip(
            Ns::Router,
            &["route", "add", "192.0.2.0/24", "dev", "nat64"],
        );
        self.ip(
            Ns::Router,
            &["route", "add", &self.prefix.to_string(), "dev", "nat64"],
        );
        self.spawn(Ns::Router, "tayga", &["tayga", "-d", "-c", conf_s]);
    }

    fn start_unbound(&self) {
        let d = self.dir.display();
        fs::write(
            self.dir.join("ipv4only.arpa.zone"),
            "$ORIGIN ipv4only.arpa.\n\
             @ 3600 IN SOA localhost. nobody.invalid. 1 3600 600 86400 300\n\
             @ 3600 IN NS localhost.\n\
             @ 300 IN A 192.0.0.170\n\
             @ 300 IN A 192.0.0.171\n",
        )
        .unwrap();
        fs::write(
            self.dir.join("test.zone"),
            format!(
                "$ORIGIN test.\n\
                 @ 3600 IN SOA localhost. nobody.invalid. 1 3600 600 86400 300\n\
                 @ 3600 IN NS localhost.\n\
                 server 300 IN A {SERVER4}\n"
            ),
        )
        .unwrap();
        let conf = self.dir.join("unbound.conf");
        // `test.` is one of unbound's default local zones (RFC 6761): `nodefault` lets the
        // auth-zone answer. dns64 synthesises only from upstream answers, hence for-upstream.
        fs::write(
            &conf,
            format!(
                r#"server:
    interface: {ROUTER_V6}
    port: 53
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-daemonize: no
    access-control: ::/0 allow
    access-control: 0.0.0.0/0 allow
    local-zone: "test." nodefault
    module-config: "dns64 iterator"
    dns64-prefix: {prefix}
    do-not-query-address: 0.0.0.0/0
    do-not-query-address: ::/0
remote-control:
    control-enable: no
auth-zone:
    name: "ipv4only.arpa."
    zonefile: "{d}/ipv4only.arpa.zone"
    for-upstream: yes
    for-downstream: no
auth-zone:
    name: "test."
    zonefile: "{d}/test.zone"
    for-upstream: yes
    for-downstream: no
"#,
                prefix = self.prefix
            ),
        )
        .unwrap();
        self.spawn(
            Ns::Router,
            "unbound",
            &["unbound", "-d", "-c", conf.to_str().unwrap()],
        );
    }

    fn start_radvd(&self) {
        let rdnss = if self.opts.rdnss {
            format!("    RDNSS {ROUTER_V6} {{ }};\n")
        } else {
            String::new()
        };
        let conf = self.dir.join("radvd.conf");
        fs::write(
            &conf,
            format!(
                "interface br0 {{\n    AdvSendAdvert on;\n    MinRtrAdvInterval 3;\n    MaxRtrAdvInterval 4;\n    AdvDefaultLifetime 1800;\n    prefix {SLAAC_PREFIX} {{ AdvOnLink on; AdvAutonomous on; }};\n{rdnss}}};\n"
            ),
        )
        .unwrap();
        let pid = self.dir.join("radvd.pid");
        self.spawn(
            Ns::Router,
            "radvd",
            &[
                "radvd",
                "-n",
                "-C",
                conf.to_str().unwrap(),
                "-p",
                pid.to_str().unwrap(),
                "-m",
                "stderr",
            ],
        );
    }

    /// Rewrites radvd's configuration with `prefixes` (radvd `prefix … { … };` blocks) instead
    /// of the SLAAC prefix, keeping the rest, and makes radvd reload it (SIGHUP); radvd then
    /// advertises the new set at once.
    pub fn reconfigure_radvd(&self, prefixes: &str) {
        let rdnss = if self.opts.rdnss {
            format!("    RDNSS {ROUTER_V6} {{ }};\n")
        } else {
            String::new()
        };
        let conf = self.dir.join("radvd.conf");
        fs::write(
            &conf,
            format!(
                "interface br0 {{\n    AdvSendAdvert on;\n    MinRtrAdvInterval 3;\n    MaxRtrAdvInterval 4;\n    AdvDefaultLifetime 1800;\n{prefixes}\n{rdnss}}};\n"
            ),
        )
        .unwrap();
        let pid = fs::read_to_string(self.dir.join("radvd.pid")).unwrap();
        run_ok(&["kill", "-HUP", pid.trim()]);
    }

    /// `ip netns exec <ns> args…`; returns the output whatever the exit status.
    pub fn exec(&self, ns: Ns, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", self.ns(ns)];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Like [`Topology::exec`] but panics on failure; returns stdout.
    pub fn exec_ok(&self, ns: Ns, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", self.ns(ns)];
        v.extend_from_slice(args);
        run_ok(&v)
    }

    /// Starts a background process in `ns` (stdout and stderr to `<dir>/<name>.log`), tracked
    /// for teardown. Returns its pid.
    pub fn spawn(&self, ns: Ns, name: &str, args: &[&str]) -> u32 {
        let log = self.dir.join(format!("{name}.log"));
        let f = File::create(&log).unwrap();
        let child = no_inherited_fds(&mut Command::new("ip"))
            .args(["netns", "exec", self.ns(ns)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let pid = child.id();
        self.procs.lock().unwrap().push(Proc {
            name: name.into(),
            child,
            log,
        });
        pid
    }

    /// Runs `f` on a thread inside namespace `ns`.
    pub fn in_ns<T: Send + 'static>(&self, ns: Ns, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(self.ns(ns), f)
    }

    // --- client-side changes ------------------------------------------------------------------

    /// Sets a client link up or down.
    pub fn set_link(&self, uplink: &str, up: bool) {
        self.ip(
            Ns::Client,
            &["link", "set", uplink, if up { "up" } else { "down" }],
        );
    }

    /// Gives the client native IPv4 on `uplink`: 203.0.113.2/24 and a default route via
    /// 203.0.113.1 (needs `native_ipv4` in the options).
    pub fn add_native_ipv4(&self, uplink: &str) {
        assert!(self.opts.native_ipv4, "topology built without native_ipv4");
        self.ip(
            Ns::Client,
            &[
                "addr",
                "add",
                &format!("{NATIVE4_CLIENT}/24"),
                "dev",
                uplink,
            ],
        );
        self.ip(
            Ns::Client,
            &[
                "route",
                "add",
                "default",
                "via",
                &NATIVE4_ROUTER.to_string(),
                "dev",
                uplink,
            ],
        );
    }

    /// Takes native IPv4 away again.
    pub fn remove_native_ipv4(&self, uplink: &str) {
        let _ = self.exec(
            Ns::Client,
            &[
                "ip",
                "route",
                "del",
                "default",
                "via",
                &NATIVE4_ROUTER.to_string(),
                "dev",
                uplink,
            ],
        );
        self.ip(
            Ns::Client,
            &[
                "addr",
                "del",
                &format!("{NATIVE4_CLIENT}/24"),
                "dev",
                uplink,
            ],
        );
    }

    // --- looking at the namespaces ------------------------------------------------------------

    /// `ip -j -d link show` in `ns`.
    pub fn links(&self, ns: Ns) -> Vec<Value> {
        json_array(&self.ip(ns, &["-j", "-d", "link", "show"]))
    }

    /// One link by name, if it exists.
    pub fn link(&self, ns: Ns, name: &str) -> Option<Value> {
        self.links(ns)
            .into_iter()
            .find(|l| l["ifname"].as_str() == Some(name))
    }

    /// Names of the links in `ns` starting with `prefix` (e.g. `v4-`).
    pub fn link_names_with_prefix(&self, ns: Ns, prefix: &str) -> Vec<String> {
        self.links(ns)
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Addresses (without length) on `dev` in `ns` for family `-4` or `-6`.
    pub fn addrs(&self, ns: Ns, family: &str, dev: &str) -> Vec<(String, Value)> {
        let out = self.exec(ns, &["ip", "-j", family, "addr", "show", "dev", dev]);
        if !out.status.success() {
            return Vec::new();
        }
        json_array(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| Some((a["local"].as_str()?.to_owned(), a)))
            .collect()
    }

    /// The client's global SLAAC address on `uplink` inside 2001:db8:1::/64, if any (and not
    /// tentative).
    pub fn slaac_addr(&self, uplink: &str) -> Option<Ipv6Addr> {
        self.addrs(Ns::Client, "-6", uplink)
            .into_iter()
            .filter(|(_, a)| a["scope"] == "global" && a["tentative"] != true)
            .filter_map(|(s, _)| s.parse::<Ipv6Addr>().ok())
            .find(|a| a.segments()[..4] == [0x2001, 0xdb8, 1, 0])
    }

    /// Routes in `ns`: `ip -j <family> route show table <table>`.
    pub fn routes(&self, ns: Ns, family: &str, table: &str) -> Vec<Value> {
        json_array(&self.ip(ns, &["-j", family, "route", "show", "table", table]))
    }

    /// Default routes of `family` (`-4`/`-6`) in the client's main table.
    pub fn default_routes(&self, family: &str) -> Vec<Value> {
        self.routes(Ns::Client, family, "main")
            .into_iter()
            .filter(|r| r["dst"] == "default")
            .collect()
    }

    /// Whether the client has an IPv6 default route via `uplink`.
    pub fn has_default6(&self, uplink: &str) -> bool {
        self.default_routes("-6")
            .iter()
            .any(|r| r["dev"].as_str() == Some(uplink))
    }

    /// Waits until the client has a SLAAC address and an IPv6 default route on `uplink`.
    pub fn wait_slaac(&self, uplink: &str) -> Ipv6Addr {
        wait_for(
            WAIT,
            &format!("SLAAC address and default route on {uplink}"),
            || {
                let a = self.slaac_addr(uplink)?;
                self.has_default6(uplink).then_some(a)
            },
        )
    }

    /// Pids of every process in namespace `ns`.
    pub fn ns_pids(&self, ns: Ns) -> Vec<u32> {
        ns_pids(self.ns(ns))
    }

    /// Pids in the client namespace whose argv[0] is `argv0` (e.g. `clatd-up0`).
    pub fn client_pids_named(&self, argv0: &str) -> Vec<u32> {
        self.ns_pids(Ns::Client)
            .into_iter()
            .filter(|p| proc_cmdline(*p).is_some_and(|c| c[0] == argv0))
            .collect()
    }

    /// The address `v4` embeds to under the topology's NAT64 prefix.
    pub fn nat64(&self, v4: Ipv4Addr) -> Ipv6Addr {
        self.prefix.embed(v4)
    }

    /// A comparable picture of what a daemon could change in `ns`: links, addresses, routes
    /// and rules of both families (volatile lifetimes stripped), proxy neighbours, anycast
    /// addresses, qdiscs and a few sysctls. Compare two with [`assert_same_snapshot`].
    pub fn snapshot(&self, ns: Ns) -> std::collections::BTreeSet<String> {
        let mut set = std::collections::BTreeSet::new();
        let strip = |line: &str| -> String {
            let mut out = Vec::new();
            let mut words = line.split_whitespace().peekable();
            while let Some(w) = words.next() {
                if matches!(w, "expires" | "valid_lft" | "preferred_lft" | "used") {
                    words.next();
                    continue;
                }
                out.push(w);
            }
            out.join(" ")
        };
        let mut add = |what: &str, args: &[&str]| {
            let out = self.exec(ns, args);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let l = strip(line);
                if !l.is_empty() {
                    set.insert(format!("{what}: {l}"));
                }
            }
        };
        add("link", &["ip", "-o", "link", "show"]);
        add("addr", &["ip", "-o", "addr", "show"]);
        add("route4", &["ip", "-4", "route", "show", "table", "all"]);
        add("route6", &["ip", "-6", "route", "show", "table", "all"]);
        add("rule4", &["ip", "-4", "rule", "show"]);
        add("rule6", &["ip", "-6", "rule", "show"]);
        add("proxy", &["ip", "-6", "neigh", "show", "proxy"]);
        add("anycast", &["cat", "/proc/net/anycast6"]);
        add("qdisc", &["tc", "qdisc", "show"]);
        add(
            "sysctl",
            &[
                "sysctl",
                "net.ipv4.ip_forward",
                "net.ipv6.conf.all.forwarding",
                "net.ipv6.conf.all.proxy_ndp",
            ],
        );
        set
    }

    /// Runs `autoclat ARGS…` in the client namespace, killing it after `timeout`; `None` when
    /// it had to be killed.
    pub fn autoclat_timeout(&self, args: &[&str], timeout: Duration) -> Option<Output> {
        let mut child = no_inherited_fds(&mut Command::new("ip"))
            .args(["netns", "exec", &self.cli, autoclat_bin()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn autoclat");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return child.wait_with_output().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    // --- PREF64 ---------------------------------------------------------------------------------

    /// Sends three PREF64 router advertisements (100 ms apart) on the router's bridge.
    /// `lifetime` in seconds (0 withdraws the prefix).
    pub fn send_pref64(&self, prefix: &str, lifetime: u32) {
        let p: Nat64Prefix = prefix.parse().expect("PREF64 prefix");
        let ra = pref64_ra(&p, lifetime);
        self.in_ns(Ns::Router, move || {
            let sock = ra_socket().expect("RA socket");
            for i in 0..3 {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                send_ra(&sock, &ra).expect("send RA");
            }
        });
    }

    /// Sends a PREF64 RA every `interval` until the returned sender is stopped or dropped.
    pub fn start_pref64_sender(
        &self,
        prefix: &str,
        lifetime: u32,
        interval: Duration,
    ) -> Pref64Sender {
        let p: Nat64Prefix = prefix.parse().expect("PREF64 prefix");
        let ra = pref64_ra(&p, lifetime);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let path = format!("/run/netns/{}", self.rtr);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).expect("open router netns");
            // SAFETY: see `in_netns`: this dedicated thread enters the router namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = ra_socket().expect("RA socket");
            while !stop2.load(Ordering::Relaxed) {
                if let Err(e) = send_ra(&sock, &ra) {
                    eprintln!("PREF64 sender: {e}");
                }
                let until = Instant::now() + interval;
                while Instant::now() < until && !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Pref64Sender {
            stop,
            handle: Some(handle),
        }
    }

    /// The router's link-local address on the bridge: the client's IPv6 default gateway.
    pub fn gateway_ll(&self) -> Ipv6Addr {
        let out = self.exec_ok(
            Ns::Router,
            &[
                "ip", "-6", "-j", "addr", "show", "dev", "br0", "scope", "link",
            ],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["addr_info"]
            .as_array()
            .and_then(|a| a.iter().find_map(|i| i["local"].as_str()))
            .and_then(|a| a.parse().ok())
            .filter(|a: &Ipv6Addr| *a != PREF64_SENDER_LL)
            .expect("br0 link-local address")
    }

    /// Like [`Topology::start_pref64_sender`], from the link-local source `src` (an address
    /// of br0): each source is another router to the client.
    pub fn start_pref64_sender_from(
        &self,
        src: Ipv6Addr,
        prefix: &str,
        lifetime: u32,
        interval: Duration,
    ) -> Pref64Sender {
        let ra = pref64_ra(&prefix.parse().expect("PREF64 prefix"), lifetime);
        self.start_ra_loop(src, move |_| ra.clone(), interval)
    }

    /// Sends RAs from `src` every `interval`, the `n`th (from 0) being `make(n)`, until the
    /// returned sender is stopped or dropped.
    pub fn start_ra_loop(
        &self,
        src: Ipv6Addr,
        make: impl Fn(u64) -> Vec<u8> + Send + 'static,
        interval: Duration,
    ) -> Pref64Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let path = format!("/run/netns/{}", self.rtr);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).expect("open router netns");
            // SAFETY: see `in_netns`: this dedicated thread enters the router namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = ra_socket_from(src).expect("RA socket");
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                if let Err(e) = send_ra(&sock, &make(n)) {
                    eprintln!("RA sender: {e}");
                }
                n += 1;
                if !interval.is_zero() {
                    std::thread::sleep(interval);
                }
            }
        });
        Pref64Sender {
            stop,
            handle: Some(handle),
        }
    }

    /// Answers every router solicitation seen on the router's bridge with a PREF64 RA for
    /// `prefix` (router lifetime 0), and sends no RA otherwise: a client can only learn that
    /// PREF64 by soliciting it. The returned counter counts the solicitations answered.
    pub fn start_rs_responder(
        &self,
        prefix: &str,
        lifetime: u32,
    ) -> (Pref64Sender, Arc<AtomicU32>) {
        let ra = pref64_ra(&prefix.parse().expect("PREF64 prefix"), lifetime);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU32::new(0));
        let (stop2, answered2) = (stop.clone(), answered.clone());
        let path = format!("/run/netns/{}", self.rtr);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).expect("open router netns");
            // SAFETY: see `in_netns`: this dedicated thread enters the router namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = ra_socket_from(PREF64_SENDER_LL).expect("RA socket");
            // Receives every ICMPv6 message delivered on br0 (the router joined ff02::2).
            let rx = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::RAW,
                Some(socket2::Protocol::ICMPV6),
            )
            .expect("raw ICMPv6 socket");
            rx.bind_device(Some(b"br0")).expect("bind to br0");
            rx.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("read timeout");
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            while !stop2.load(Ordering::Relaxed) {
                let Ok(n) = rx.recv(&mut buf) else {
                    continue;
                };
                // SAFETY: `recv` initialised the first `n` bytes.
                let first = (n > 0).then(|| unsafe { buf[0].assume_init() });
                if first == Some(133) {
                    answered2.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = send_ra(&sock, &ra) {
                        eprintln!("RS responder: {e}");
                    }
                }
            }
        });
        (
            Pref64Sender {
                stop,
                handle: Some(handle),
            },
            answered,
        )
    }

    // --- autoclat -------------------------------------------------------------------------------

    /// Runs `autoclat ARGS…` in the client namespace to completion.
    pub fn autoclat(&self, args: &[&str]) -> Output {
        let mut v = vec![autoclat_bin()];
        v.extend_from_slice(args);
        self.exec(Ns::Client, &v)
    }

    /// Writes `config_toml` (with `daemon.control_socket` set to a fresh path and, unless the
    /// test set it, `daemon.clatd_path` pointed at the fake translator) and starts
    /// `autoclat run --config FILE` in the client namespace.
    pub fn start_autoclat(&self, config_toml: &str) -> Daemon {
        self.start_autoclat_under(&[], config_toml)
    }

    /// Like [`Topology::start_autoclat`], with `autoclat` run by the command `wrapper` (e.g.
    /// `setpriv` with a narrower capability bounding set), which must exec its arguments.
    pub fn start_autoclat_under(&self, wrapper: &[&str], config_toml: &str) -> Daemon {
        let n = self.daemon_seq.fetch_add(1, Ordering::Relaxed);
        let mut table: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("test config is not TOML: {e}"));
        let socket = self.dir.join(format!("control-{n}.sock"));
        let daemon = table
            .entry("daemon")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("[daemon] is a table");
        daemon.insert(
            "control_socket".into(),
            toml::Value::String(socket.to_str().unwrap().into()),
        );
        daemon
            .entry("clatd_path")
            .or_insert_with(|| toml::Value::String(fake_clatd_path().to_str().unwrap().into()));
        let config = self.dir.join(format!("autoclat-{n}.toml"));
        fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        let reports = self.dir.join("fake-clatd-reports");
        fs::create_dir_all(&reports).unwrap();
        let log = self.dir.join(format!("autoclat-{n}.log"));
        let f = File::create(&log).unwrap();
        let child = no_inherited_fds(&mut Command::new("ip"))
            .args(["netns", "exec", &self.cli])
            .args(wrapper)
            .args([autoclat_bin(), "run", "--config"])
            .arg(&config)
            .env("FAKE_CLATD_REPORT_DIR", &reports)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn autoclat");
        Daemon {
            child,
            netns: self.cli.clone(),
            socket,
            config,
            log,
            reports,
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for p in procs.iter_mut() {
            if let Ok(Some(st)) = p.child.try_wait() {
                eprintln!(
                    "[{}] {} exited early ({st}):\n{}",
                    self.id,
                    p.name,
                    tail(&p.log, 20)
                );
            } else if panicking {
                eprintln!("[{}] {} log tail:\n{}", self.id, p.name, tail(&p.log, 15));
            }
        }
        for p in procs.iter_mut() {
            stop_child(&mut p.child, Duration::from_secs(2));
        }
        // Anything else still running inside our namespaces (translators orphaned by a killed
        // daemon, helpers started with exec) goes too.
        let created =
            std::mem::take(&mut *self.created_ns.lock().unwrap_or_else(|e| e.into_inner()));
        for ns in &created {
            kill_ns_processes(ns);
        }
        if created.contains(&self.rtr) {
            let _ = run(&["ip", "-n", &self.rtr, "link", "del", "nat64"]);
        }
        for ns in &created {
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
            let out = run(&["ip", "netns", "del", ns]);
            if !out.status.success() {
                eprintln!(
                    "[{}] ip netns del {ns}: {}",
                    self.id,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Panics listing the differences when two [`Topology::snapshot`]s differ.
pub fn assert_same_snapshot(
    before: &std::collections::BTreeSet<String>,
    after: &std::collections::BTreeSet<String>,
    when: &str,
) {
    let gone: Vec<_> = before.difference(after).collect();
    let new: Vec<_> = after.difference(before).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{when}: system state changed\n  removed: {gone:#?}\n  added: {new:#?}"
    );
}

/// Stops the background PREF64 sender when dropped.
pub struct Pref64Sender {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Pref64Sender {
    pub fn stop(mut self) {
        self.halt();
    }
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Pref64Sender {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon under test

/// `autoclat run` in the client namespace.
pub struct Daemon {
    child: Child,
    pub netns: String,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Where the fake translator writes its reports.
    pub reports: PathBuf,
}

impl Daemon {
    /// The daemon's pid (`ip netns exec` execs it, so it is the child we spawned).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `autoclat status --json --socket PATH` parsed, or why not.
    pub fn try_status(&self) -> Result<Value, String> {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.netns,
            autoclat_bin(),
            "status",
            "--json",
            "--socket",
            self.socket.to_str().unwrap(),
        ]);
        if !out.status.success() {
            return Err(format!(
                "status exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "status output is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The status object; panics if it cannot be had.
    pub fn status_json(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("autoclat status: {e}"))
    }

    /// The status entry of one uplink, if the daemon answers and knows it.
    pub fn uplink(&self, name: &str) -> Option<Value> {
        let st = self.try_status().ok()?;
        st["uplinks"]
            .as_array()?
            .iter()
            .find(|u| u["uplink"].as_str() == Some(name))
            .cloned()
    }

    /// Waits until `uplink`'s entry satisfies `pred`; returns that entry. Panics (showing the
    /// last status) on timeout.
    pub fn wait_uplink(
        &self,
        uplink: &str,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let mut last: Result<Value, String> = Err("no answer yet".into());
        let found = wait_until(WAIT, || {
            assert!(
                pid_alive(self.pid()),
                "autoclat exited while waiting for {uplink}: {what}; its log:\n{}",
                self.log_text()
            );
            last = self.try_status().and_then(|st| {
                st["uplinks"]
                    .as_array()
                    .and_then(|a| a.iter().find(|u| u["uplink"].as_str() == Some(uplink)))
                    .cloned()
                    .ok_or_else(|| format!("{uplink} not in status: {st}"))
            });
            last.as_ref().is_ok_and(&mut pred)
        });
        match (found, last) {
            (true, Ok(u)) => u,
            (_, Ok(u)) => panic!("timed out waiting for {uplink}: {what}; last entry: {u}"),
            (_, Err(e)) => panic!("timed out waiting for {uplink}: {what}; last: {e}"),
        }
    }

    /// Waits until `uplink` is in `state` (`running`, `waiting`, `backoff`, `disabled`).
    pub fn wait_state(&self, uplink: &str, state: &str) -> Value {
        self.wait_uplink(uplink, &format!("state {state}"), |u| u["state"] == state)
    }

    /// Whether the daemon process is still alive (reaps it if it exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn sigterm(&self) {
        kill(self.pid(), libc::SIGTERM);
    }

    pub fn sigkill(&self) {
        kill(self.pid(), libc::SIGKILL);
    }

    /// Waits for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The fake translator's reports, oldest first.
    pub fn fake_reports(&self) -> Vec<Value> {
        let mut v: Vec<(SystemTime, Value)> = fs::read_dir(&self.reports)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension() == Some(OsStr::new("json")))
            .filter_map(|e| {
                let t = e.metadata().ok()?.modified().ok()?;
                let v = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                Some((t, v))
            })
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v.into_iter().map(|(_, v)| v).collect()
    }

    /// The fake translator's report for the child with `pid`.
    pub fn fake_report(&self, pid: u64) -> Option<Value> {
        self.fake_reports()
            .into_iter()
            .find(|r| r["pid"].as_u64() == Some(pid))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let status = stop_child(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!(
                "---- autoclat log ({}; exit {:?}) ----\n{}\n---- fake translator reports ----",
                self.log.display(),
                status,
                self.log_text()
            );
            for r in self.fake_reports() {
                eprintln!("{r}");
            }
            eprintln!("---- end ----");
        }
    }
}

/// Path of the `autoclat` binary under test: `$AUTOCLAT_TEST_BIN` when set (to run the
/// scenarios against an installed build), else the one cargo built for this test.
pub fn autoclat_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("AUTOCLAT_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_autoclat").into())
    })
}

/// Path of the fake translator. `cargo test` builds examples into `target/<profile>/examples`;
/// when it is missing or older than its source (e.g. `cargo test --test X` skips examples), it
/// is compiled here with plain `rustc` (it uses only std).
pub fn fake_clatd_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("netns-tests/fake_clatd.rs");
        let src_time = fs::metadata(&src)
            .and_then(|m| m.modified())
            .expect("fake_clatd.rs");
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test-binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in target/<profile>/deps")
            .to_path_buf();
        let example = profile_dir.join("examples/fake_clatd");
        let fresh = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= src_time)
        };
        if fresh(&example) {
            return example;
        }
        let out_dir = profile_dir.join("netns-tests");
        fs::create_dir_all(&out_dir).unwrap();
        let built = out_dir.join("fake_clatd");
        if fresh(&built) {
            return built;
        }
        let tmp = out_dir.join(format!("fake_clatd.{}.tmp", std::process::id()));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let out = Command::new(rustc)
            .args([
                "--edition",
                "2021",
                "-O",
                "--crate-name",
                "fake_clatd",
                "-o",
            ])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("run rustc for fake_clatd");
        assert!(
            out.status.success(),
            "rustc fake_clatd.rs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&tmp, &built).unwrap();
        built
    })
    .clone()
}

fn json_array(text: &str) -> Vec<Value> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(v)) => v,
        Ok(other) => panic!("expected a JSON array, got {other}"),
        Err(e) => panic!("ip -j output is not JSON ({e}): {text}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces: listing and stale clean-up

fn ns_pids(ns: &str) -> Vec<u32> {
    let out = run(&["ip", "netns", "pids", ns]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill_ns_processes(ns: &str) {
    let pids = ns_pids(ns);
    for p in &pids {
        kill(*p, libc::SIGTERM);
    }
    wait_until(Duration::from_secs(2), || {
        pids.iter().all(|p| !pid_alive(*p))
    });
    for p in pids.iter().filter(|p| pid_alive(**p)) {
        kill(*p, libc::SIGKILL);
    }
}

/// `acXXXXX` followed by `suffix`, X lower-case alphanumeric.
fn is_our_name(name: &str, suffixes: &[&str]) -> bool {
    let Some(rest) = name.strip_prefix("ac") else {
        return false;
    };
    if rest.len() < 5 || !rest.is_char_boundary(5) {
        return false;
    }
    let (id, suffix) = rest.split_at(5);
    id.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && suffixes.contains(&suffix)
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

/// Removes namespaces and temp dirs of earlier runs (`acXXXXX-…`) older than an hour. Others'
/// names never match; our temp dirs also carry a marker file.
pub fn cleanup_stale() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(rd) = fs::read_dir("/run/netns") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if is_our_name(&name, &["-cli", "-rtr", "-srv"]) && older_than(&e.path(), STALE_AGE)
                {
                    eprintln!("removing stale test namespace {name}");
                    kill_ns_processes(&name);
                    let _ = run(&["ip", "-n", &name, "link", "del", "nat64"]);
                    let _ = run(&["ip", "netns", "del", &name]);
                }
            }
        }
        if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let p = e.path();
                if is_our_name(&name, &["-netns"])
                    && p.join(MARKER).exists()
                    && older_than(&p, STALE_AGE)
                {
                    let _ = fs::remove_dir_all(&p);
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// PREF64 router advertisements (RFC 8781)

/// The Prefix Length Code of RFC 8781 §4 for a prefix length.
pub fn pref64_plc(len: u8) -> u16 {
    match len {
        96 => 0,
        64 => 1,
        56 => 2,
        48 => 3,
        40 => 4,
        32 => 5,
        other => panic!("no PLC for /{other}"),
    }
}

/// A router advertisement (ICMPv6 type 134; checksum left 0 for the kernel) with router
/// lifetime 0 and one PREF64 option. `lifetime` seconds, rounded up to units of 8 s.
pub fn pref64_ra(prefix: &Nat64Prefix, lifetime: u32) -> Vec<u8> {
    let mut ra = vec![
        134, 0, 0, 0, // type, code, checksum
        0, 0, // cur hop limit unspecified, no flags
        0, 0, // router lifetime 0: not a default router
        0, 0, 0, 0, // reachable time unspecified
        0, 0, 0, 0, // retrans timer unspecified
    ];
    let scaled = lifetime.div_ceil(8).min(8191) as u16;
    let sl_plc = (scaled << 3) | pref64_plc(prefix.len());
    ra.extend_from_slice(&[38, 2]);
    ra.extend_from_slice(&sl_plc.to_be_bytes());
    ra.extend_from_slice(&prefix.addr().octets()[..12]);
    ra
}

/// Raw ICMPv6 socket on the router's bridge, hop limit 255, bound to [`PREF64_SENDER_LL`].
/// Must be called on a thread inside the router namespace.
fn ra_socket() -> std::io::Result<(socket2::Socket, u32)> {
    ra_socket_from(PREF64_SENDER_LL)
}

/// [`ra_socket`] bound to the link-local source `src` (an address of br0).
fn ra_socket_from(src: Ipv6Addr) -> std::io::Result<(socket2::Socket, u32)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ifindex = if_index("br0")?;
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_if_v6(ifindex)?;
    s.set_multicast_loop_v6(false)?;
    s.bind(&SocketAddrV6::new(src, 0, 0, ifindex).into())?;
    Ok((s, ifindex))
}

fn send_ra(sock: &(socket2::Socket, u32), ra: &[u8]) -> std::io::Result<()> {
    let dst = SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, sock.1);
    sock.0.send_to(ra, &dst.into())?;
    Ok(())
}

fn if_index(name: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// Listens on the ND user-option netlink group (RTNLGRP_ND_USEROPT) in namespace `ns` and
/// returns the PREF64 options (prefix, lifetime seconds) seen within `timeout` from
/// `trigger` being called. Used to check the RA sender end to end.
pub fn capture_pref64(
    ns: &str,
    timeout: Duration,
    trigger: impl FnOnce() + Send + 'static,
) -> Vec<(Nat64Prefix, u32)> {
    in_netns(ns, move || {
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        let sock = autoclat::nlsock::NlSocket::open(libc::NETLINK_ROUTE, Some(tv))
            .expect("netlink socket");
        const RTNLGRP_ND_USEROPT: u32 = 20;
        sock.subscribe(RTNLGRP_ND_USEROPT)
            .expect("subscribe to RTNLGRP_ND_USEROPT");
        trigger();
        let deadline = Instant::now() + timeout;
        let mut found = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let n = match sock.recv(&mut buf) {
                Ok(n) if n > 0 => n,
                _ => continue,
            };
            found.extend(parse_nduseropt_pref64(&buf[..n]));
        }
        found
    })
}

/// Parses netlink messages of type RTM_NEWNDUSEROPT (68) for PREF64 options.
fn parse_nduseropt_pref64(mut buf: &[u8]) -> Vec<(Nat64Prefix, u32)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < 16 || len > buf.len() {
            break;
        }
        let msg = &buf[16..len];
        // struct nduseroptmsg: family u8, pad1 u8, opts_len u16, ifindex i32, icmp_type u8,
        // icmp_code u8, pad2 u16, pad3 u32  (16 bytes), then the options.
        if ty == 68 && msg.len() >= 16 {
            let opts_len = u16::from_ne_bytes(msg[2..4].try_into().unwrap()) as usize;
            let mut opts = &msg[16..(16 + opts_len).min(msg.len())];
            while opts.len() >= 2 && opts[1] != 0 && opts.len() >= opts[1] as usize * 8 {
                let olen = opts[1] as usize * 8;
                if opts[0] == 38 && olen == 16 {
                    let sl_plc = u16::from_be_bytes([opts[2], opts[3]]);
                    let plen = match sl_plc & 7 {
                        0 => 96,
                        1 => 64,
                        2 => 56,
                        3 => 48,
                        4 => 40,
                        5 => 32,
                        _ => 0,
                    };
                    let mut a = [0u8; 16];
                    a[..12].copy_from_slice(&opts[4..16]);
                    if let Ok(p) = Nat64Prefix::new(Ipv6Addr::from(a), plen) {
                        out.push((p, u32::from(sl_plc >> 3) * 8));
                    }
                }
                opts = &opts[olen..];
            }
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Traffic helpers (each runs on a thread inside a namespace)

/// AAAA query for `name` to `server` port 53 from namespace `ns`; returns the answers.
pub fn dns_aaaa(
    ns: &str,
    server: Ipv6Addr,
    name: &str,
    timeout: Duration,
) -> std::io::Result<Vec<Ipv6Addr>> {
    let name = name.to_owned();
    in_netns(ns, move || {
        let sock = UdpSocket::bind("[::]:0")?;
        sock.set_read_timeout(Some(timeout))?;
        let id = random_u16();
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
        for label in name.trim_end_matches('.').split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 28, 0, 1]); // root, AAAA, IN
        sock.send_to(&q, SocketAddr::from((server, 53)))?;
        let mut buf = [0u8; 1500];
        loop {
            let (n, _) = sock.recv_from(&mut buf)?;
            let r = &buf[..n];
            if n < 12 || r[0..2] != id.to_be_bytes() {
                continue;
            }
            return parse_aaaa_answers(r).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "bad DNS reply")
            });
        }
    })
}

fn skip_name(r: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let l = *r.get(i)? as usize;
        if l == 0 {
            return Some(i + 1);
        }
        if l & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + l;
    }
}

fn parse_aaaa_answers(r: &[u8]) -> Option<Vec<Ipv6Addr>> {
    let qd = u16::from_be_bytes([r[4], r[5]]);
    let an = u16::from_be_bytes([r[6], r[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(r, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(r, i)?;
        let ty = u16::from_be_bytes([*r.get(i)?, *r.get(i + 1)?]);
        let rdlen = u16::from_be_bytes([*r.get(i + 8)?, *r.get(i + 9)?]) as usize;
        let data = r.get(i + 10..i + 10 + rdlen)?;
        if ty == 28 && rdlen == 16 {
            let a: [u8; 16] = data.try_into().ok()?;
            out.push(Ipv6Addr::from(a));
        }
        i += 10 + rdlen;
    }
    Some(out)
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One ICMP/ICMPv6 echo from namespace `ns` to `dst`; true when the matching reply from `dst`
/// arrives within `timeout`.
pub fn ping(ns: &str, dst: IpAddr, timeout: Duration) -> bool {
    in_netns(ns, move || {
        ping_here(dst, timeout, 0, false).unwrap_or(false)
    })
}

/// An ICMP echo (IPv4) from namespace `ns` to `dst` whose IPv4 packet is `total` bytes long,
/// with DF set: true when a reply of the same size comes back within `timeout`.
pub fn ping_df(ns: &str, dst: Ipv4Addr, total: usize, timeout: Duration) -> bool {
    let pad = total.saturating_sub(20 + 8 + 20);
    in_netns(ns, move || {
        ping_here(dst.into(), timeout, pad, true)
            .map_err(|e| eprintln!("ping_df: {e}"))
            .unwrap_or(false)
    })
}

/// DF on every IPv4 packet the socket `fd` sends (`IP_PMTUDISC_DO`).
fn set_df(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let on: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: valid fd, pointer and length of a c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One echo request (20 bytes of payload and `pad` more), optionally with DF (IPv4); true when
/// the matching reply, as long as the request, arrives in time.
fn ping_here(dst: IpAddr, timeout: Duration, pad: usize, df: bool) -> std::io::Result<bool> {
    use socket2::{Domain, Protocol, Socket, Type};
    let id = random_u16();
    let payload = b"autoclat netns-tests";
    let (sock, req_type, reply_type) = match dst {
        IpAddr::V4(_) => (
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
            8u8,
            0u8,
        ),
        IpAddr::V6(_) => (
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?,
            128,
            129,
        ),
    };
    if df {
        set_df(sock.as_raw_fd())?;
    }
    let sock: UdpSocket = sock.into();
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(payload);
    pkt.extend((0..pad).map(|i| (i % 251) as u8));
    if dst.is_ipv4() {
        let c = inet_checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // the kernel computes ICMPv6 checksums on raw ICMPv6 sockets
    sock.send_to(&pkt, SocketAddr::new(dst, 0))?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 9000];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        };
        if from.ip() != dst {
            continue;
        }
        let icmp = if dst.is_ipv4() {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            &buf[ihl.min(n)..n]
        } else {
            &buf[..n]
        };
        if icmp.len() == pkt.len() && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes() {
            return Ok(icmp[8..] == pkt[8..]);
        }
    }
    Ok(false)
}

/// TCP connect to `dst` from namespace `ns`, send `data`, read the same number of bytes back.
pub fn tcp_echo(
    ns: &str,
    dst: SocketAddr,
    data: Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&dst, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(&data)?;
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    })
}

/// One UDP datagram to `dst` from namespace `ns`; returns the reply.
pub fn udp_echo(
    ns: &str,
    dst: SocketAddr,
    data: Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    in_netns(ns, move || {
        let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .unwrap();
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(timeout))?;
        s.send_to(&data, dst)?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

/// Path MTU discovery over IPv4: from namespace `ns`, sends `size`-byte UDP datagrams with DF
/// set to `dst` on a connected socket, then returns the path MTU the kernel reports (`IP_MTU`).
/// A "fragmentation needed" coming back lowers it below the interface MTU.
pub fn udp_path_mtu(ns: &str, dst: std::net::SocketAddrV4, size: usize) -> std::io::Result<u32> {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(dst)?;
        set_df(s.as_raw_fd())?;
        let data = vec![0x55u8; size];
        for _ in 0..3 {
            // EMSGSIZE once the kernel learnt a smaller path MTU: expected.
            let _ = s.send(&data);
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut mtu: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd; `mtu` and `len` are valid for writes of their sizes.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU,
                (&mut mtu as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(mtu as u32)
    })
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    #[test]
    fn pref64_ra_layout() {
        let p: Nat64Prefix = "2001:db8:100::/56".parse().unwrap();
        let ra = pref64_ra(&p, 600);
        assert_eq!(ra.len(), 32);
        assert_eq!(ra[0], 134);
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&ra[16..18], &[38, 2]);
        let sl_plc = u16::from_be_bytes([ra[18], ra[19]]);
        assert_eq!(sl_plc & 7, 2, "PLC for /56");
        assert_eq!(sl_plc >> 3, 75, "600 s = 75 units of 8 s");
        assert_eq!(&ra[20..26], &[0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00]);
        assert_eq!(pref64_ra(&p, 0)[18..20], [0, 2], "withdrawal keeps the PLC");
        assert_eq!(
            u16::from_be_bytes(pref64_ra(&p, 100_000)[18..20].try_into().unwrap()) >> 3,
            8191
        );
    }

    #[test]
    fn our_names() {
        assert!(is_our_name("ac3k9zq-cli", &["-cli", "-rtr", "-srv"]));
        assert!(!is_our_name("acdemo-cli", &["-cli"]));
        assert!(!is_our_name("ac3K9zq-cli", &["-cli"]));
        assert!(!is_our_name("xy3k9zq-cli", &["-cli"]));
        assert!(is_our_name("ac3k9zq-netns", &["-netns"]));
    }
}

// ---------------------------------------------------------------------------------------------
// End-to-end helpers (netns-tests/e2e.rs): a tiny HTTP server, bulk TCP echo, TTL probes,
// eBPF attachment queries.

/// A background server thread inside a namespace; stopped (and its socket closed) when dropped.
pub struct BackgroundServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Requests served so far.
    pub served: Arc<AtomicU32>,
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Reads an HTTP request head (up to the blank line) from `s`.
fn read_http_head(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16384 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(head)
}

impl Topology {
    /// Starts an HTTP/1.0 server on `addr` in namespace `ns` that answers every GET with
    /// `200 OK` and `body` (then closes the connection). Returns once it listens.
    pub fn start_http_server(
        &self,
        ns: Ns,
        addr: SocketAddr,
        body: Arc<Vec<u8>>,
    ) -> BackgroundServer {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU32::new(0));
        let (stop2, served2) = (stop.clone(), served.clone());
        let path = format!("/run/netns/{}", self.ns(ns));
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: see `in_netns`: this dedicated thread enters the namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = match std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::Relaxed) {
                let mut s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(e) => {
                        eprintln!("http server accept: {e}");
                        continue;
                    }
                };
                let answer = (|| -> std::io::Result<()> {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.set_write_timeout(Some(Duration::from_secs(30)))?;
                    read_http_head(&mut s)?;
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    s.write_all(head.as_bytes())?;
                    s.write_all(&body)?;
                    s.shutdown(std::net::Shutdown::Write)?;
                    // Let the client close first so the last segments are not reset.
                    let mut sink = [0u8; 256];
                    while s.read(&mut sink).is_ok_and(|n| n > 0) {}
                    Ok(())
                })();
                match answer {
                    Ok(()) => {
                        served2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("http server: {e}"),
                }
            }
        });
        rx.recv()
            .expect("http server thread")
            .unwrap_or_else(|e| panic!("http server cannot listen on {addr}: {e}"));
        BackgroundServer {
            stop,
            handle: Some(handle),
            served,
        }
    }

    /// Names of the TCX programs attached to `dev` in namespace `ns` (ingress, then egress).
    /// bpftool 7.1 (Debian bookworm) does not list TCX attachments, hence aya. A missing
    /// device gives an empty list.
    pub fn tcx_programs(&self, ns: Ns, dev: &str) -> Vec<String> {
        use aya::programs::tc::{SchedClassifier, TcAttachType};
        let dev = dev.to_owned();
        self.in_ns(ns, move || {
            let mut names = Vec::new();
            for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
                if let Ok((_, progs)) = SchedClassifier::query_tcx(&dev, hook) {
                    names.extend(
                        progs
                            .iter()
                            .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
                    );
                }
            }
            names
        })
    }
}

/// TCP to `dst` from namespace `ns`: sends `data` while reading the echo concurrently (so a
/// payload larger than the socket buffers cannot deadlock), returns what came back.
pub fn tcp_echo_bulk(
    ns: &str,
    dst: SocketAddr,
    data: Vec<u8>,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&dst, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut w = s.try_clone()?;
        let len = data.len();
        let writer = std::thread::spawn(move || w.write_all(&data));
        let mut back = vec![0u8; len];
        let read = s.read_exact(&mut back);
        let wrote = writer.join().expect("writer thread");
        wrote?;
        read?;
        Ok(back)
    })
}

/// An ICMP error queued on a socket (`IP_RECVERR`): where it came from and what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// `SO_EE_ORIGIN_*` (2 = ICMP).
    pub origin: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// `ee_info` (the MTU for "fragmentation needed").
    pub info: u32,
    /// The sender of the ICMP error.
    pub offender: Option<Ipv4Addr>,
}

/// Sends small UDP datagrams with IP TTL `ttl` from namespace `ns` to `dst` (up to three tries,
/// `per_try` apart) on a socket with `IP_RECVERR`, and returns the first ICMP error the kernel
/// matched to that socket (e.g. time exceeded: type 11 code 0), or `None`.
pub fn udp_ttl_probe(
    ns: &str,
    dst: std::net::SocketAddrV4,
    ttl: u32,
    per_try: Duration,
) -> std::io::Result<Option<IcmpError>> {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(dst)?;
        s.set_ttl(ttl)?;
        let on: libc::c_int = 1;
        // SAFETY: valid fd, pointer and length of a c_int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVERR,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for _ in 0..3 {
            let _ = s.send(b"autoclat ttl probe");
            let deadline = Instant::now() + per_try;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let mut pfd = libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: 0,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
                if n <= 0 {
                    break;
                }
                if pfd.revents & libc::POLLERR != 0 {
                    if let Some(e) = recv_icmp_error(&s)? {
                        return Ok(Some(e));
                    }
                }
            }
        }
        Ok(None)
    })
}

/// Reads one entry of the socket's error queue and decodes its `IP_RECVERR` control message.
fn recv_icmp_error(s: &UdpSocket) -> std::io::Result<Option<IcmpError>> {
    let mut data = [0u8; 512];
    let mut ctrl = [0u64; 64];
    let mut from: libc::sockaddr_in = {
        // SAFETY: sockaddr_in is plain data; all-zero is valid.
        unsafe { std::mem::zeroed() }
    };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid before we fill it in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&ctrl);
    // SAFETY: msg points to buffers that live through the call.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                let ee = libc::CMSG_DATA(c) as *const libc::sock_extended_err;
                let ee = std::ptr::read_unaligned(ee);
                let off = libc::CMSG_DATA(c).add(std::mem::size_of::<libc::sock_extended_err>())
                    as *const libc::sockaddr_in;
                let off = std::ptr::read_unaligned(off);
                let offender = (off.sin_family == libc::AF_INET as libc::sa_family_t)
                    .then(|| Ipv4Addr::from(u32::from_be(off.sin_addr.s_addr)));
                return Ok(Some(IcmpError {
                    origin: ee.ee_origin,
                    icmp_type: ee.ee_type,
                    icmp_code: ee.ee_code,
                    info: ee.ee_info,
                    offender,
                }));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(None)
}

/// Detaches, as a third party would, every TCX link on the ingress (or egress) hook of `dev`
/// in namespace `ns` (the daemon's own `BPF_PROG_QUERY` for the link ids, then
/// `BPF_LINK_GET_FD_BY_ID` and `BPF_LINK_DETACH`). Returns how many were detached.
pub fn detach_tcx_links(ns: &str, dev: &str, ingress: bool) -> usize {
    let dev = dev.to_owned();
    in_netns(ns, move || {
        #[repr(C)]
        struct IdAttr {
            id: u32,
            next_id: u32,
            open_flags: u32,
        }
        #[repr(C)]
        struct DetachAttr {
            link_fd: u32,
        }
        const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
        const BPF_LINK_DETACH: libc::c_long = 34;
        let ifindex = if_index(&dev).expect("interface index");
        let attached = autoclat::bpf::tcx_attached(ifindex, !ingress)
            .unwrap_or_else(|e| panic!("BPF_PROG_QUERY on {dev}: {e}"));
        let mut done = 0;
        for id in attached.link_ids.into_iter().filter(|id| *id != 0) {
            let mut a = IdAttr {
                id,
                next_id: 0,
                open_flags: 0,
            };
            // SAFETY: a valid BPF_LINK_GET_FD_BY_ID request.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_LINK_GET_FD_BY_ID,
                    &mut a as *mut IdAttr,
                    std::mem::size_of::<IdAttr>(),
                )
            };
            assert!(
                fd >= 0,
                "BPF_LINK_GET_FD_BY_ID {id}: {}",
                std::io::Error::last_os_error()
            );
            let mut d = DetachAttr { link_fd: fd as u32 };
            // SAFETY: a valid BPF_LINK_DETACH request for the descriptor just opened.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_LINK_DETACH,
                    &mut d as *mut DetachAttr,
                    std::mem::size_of::<DetachAttr>(),
                )
            };
            assert!(
                rc >= 0,
                "BPF_LINK_DETACH {id}: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: `fd` was returned above and is closed once.
            unsafe { libc::close(fd as i32) };
            done += 1;
        }
        done
    })
}
