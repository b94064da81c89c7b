//! `clatd` end to end in network namespaces (root only; skipped with a notice otherwise).
//!
//! ```text
//!  [t5-R client]                                   [t5-Rp peer]
//!   t5xR tun 192.0.0.4/29 ── clatd ── t5cR veth ─── t5pR veth 2001:db8:1::2/64
//!   198.51.100.0/24 dev t5xR          2001:db8:1::1/64      2001:db8:64::c633:640a (the "server")
//!   2001:db8:64::/96 via peer         CLAT 2001:db8:1::c1a7  static neighbour CLAT -> client MAC
//! ```
//! The peer owns `2001:db8:64::198.51.100.10` itself, so no NAT64 sits on the path: what comes
//! back is exactly what clatd translated.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use autoclat::discovery::Nat64Prefix;
use autoclat::translator::{
    open_rx, open_tx, rx_filter, rx_filter_behind, rx_framing, set_rx_filter, FastPathExclusion,
    RxFraming,
};

const CLAT_V4: &str = "192.0.0.4";
const CLAT_V6: &str = "2001:db8:1::c1a7";
const PREFIX: &str = "2001:db8:64::/96";
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The descriptor number clatd gets its tun on.
const CHILD_TUN_FD: RawFd = 10;
const CHILD_RX_FD: RawFd = 11;
const CHILD_TX_FD: RawFd = 12;
const CHILD_GSO_FD: RawFd = 13;
const CHILD_STATS_FD: RawFd = 14;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (network namespaces, tun)");
            return;
        }
    };
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_out(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random_tag() -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    uuid.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(6)
        .collect()
}

/// Run `f` on a fresh thread that has entered namespace `ns` (only that thread moves).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let nsf = File::open(&path).unwrap();
        // SAFETY: setns on an open namespace descriptor affects only this thread.
        let rc = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// The two namespaces and everything in them; removed on drop, also when a test fails.
struct Topology {
    client: String,
    peer: String,
    uplink: String,
    tun_name: String,
    ifindex: u32,
    prefix: Nat64Prefix,
    /// The server's IPv4 address embedded in `prefix` (RFC 6052).
    server_v6: Ipv6Addr,
    tun: Option<OwnedFd>,
    child: Option<Child>,
    /// Run clatd as this uid/gid (with no supplementary groups) instead of root.
    run_as: Option<u32>,
    /// A GSO send socket to pass as `-g` at the next spawn.
    gso_sock: Option<OwnedFd>,
    /// A counter page to pass as `-c` at the next spawn.
    stats_fd: Option<OwnedFd>,
    logs: Option<mpsc::Receiver<String>>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.tun = None;
        for ns in [&self.client, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Topology {
    fn new(prefix: &str) -> Self {
        Self::with_tun(prefix, false)
    }

    /// With `supervisor_tun`, the tun is made by the supervisor's own
    /// `controller::tun::open_tun` (virtio headers, TSO, IPv6 disabled) instead of a plain
    /// `IFF_TUN | IFF_NO_PI` one.
    fn with_tun(prefix: &str, supervisor_tun: bool) -> Self {
        let prefix: Nat64Prefix = prefix.parse().unwrap();
        let r = random_tag();
        let mut t = Topology {
            client: format!("t5-{r}"),
            peer: format!("t5-{r}p"),
            uplink: format!("t5c{r}"),
            tun_name: format!("t5x{r}"),
            ifindex: 0,
            prefix,
            server_v6: prefix.embed(SERVER_V4),
            tun: None,
            child: None,
            run_as: None,
            gso_sock: None,
            stats_fd: None,
            logs: None,
        };
        let (c, p, up) = (t.client.clone(), t.peer.clone(), t.uplink.clone());
        let peer_if = format!("t5p{r}");
        sh(&["ip", "netns", "add", &c]);
        sh(&["ip", "netns", "add", &p]);
        for ns in [&c, &p] {
            for key in ["default", "all"] {
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.accept_dad=0"),
                ]);
            }
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "link", "add", &up, "netns", &c, "type", "veth", "peer", "name", &peer_if,
            "netns", &p,
        ]);
        sh(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            &up,
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            &p,
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            &peer_if,
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            &p,
            "addr",
            "add",
            &format!("{}/128", t.server_v6),
            "dev",
            "lo",
            "nodad",
        ]);
        sh(&["ip", "-n", &c, "link", "set", &up, "up"]);
        sh(&["ip", "-n", &p, "link", "set", &peer_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &c,
            "-6",
            "route",
            "add",
            &t.prefix.to_string(),
            "via",
            "2001:db8:1::2",
            "dev",
            &up,
        ]);
        // The peer reaches the CLAT address through a static neighbour entry: no ND needed.
        let link = sh_out(&["ip", "-n", &c, "-br", "link", "show", &up]);
        let mac = link.split_whitespace().nth(2).unwrap().to_string();
        sh(&[
            "ip",
            "-n",
            &p,
            "-6",
            "neigh",
            "add",
            CLAT_V6,
            "lladdr",
            &mac,
            "dev",
            &peer_if,
            "nud",
            "permanent",
        ]);
        let upc = up.clone();
        t.ifindex = in_netns(&c, move || {
            nix::net::if_::if_nametoindex(upc.as_str()).unwrap()
        });

        // The tun, created inside the client namespace, configured as the supervisor would.
        let name = t.tun_name.clone();
        t.tun = Some(in_netns(&c, move || {
            if supervisor_tun {
                let dev = autoclat::controller::tun::open_tun(&name).unwrap();
                assert!(dev.offload, "TUNSETOFFLOAD refused");
                dev.fd
            } else {
                create_tun(&name)
            }
        }));
        let tn = t.tun_name.clone();
        sh(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            &format!("{CLAT_V4}/29"),
            "dev",
            &tn,
        ]);
        sh(&["ip", "-n", &c, "link", "set", &tn, "mtu", "1472", "up"]);
        sh(&[
            "ip",
            "-n",
            &c,
            "route",
            "add",
            "198.51.100.0/24",
            "dev",
            &tn,
        ]);
        t
    }

    /// Start clatd in the client namespace with the tun (and optionally sockets) inherited.
    /// Returns once it logged its start-up line.
    fn spawn_clatd(&mut self, sockets: Option<(OwnedFd, OwnedFd)>, extra: &[&str]) {
        let nsf = File::open(format!("/var/run/netns/{}", self.client)).unwrap();
        let tun_raw = self.tun.as_ref().unwrap().as_raw_fd();
        let (rx_raw, tx_raw) = match &sockets {
            Some((r, w)) => (r.as_raw_fd(), w.as_raw_fd()),
            None => (-1, -1),
        };
        // CLATD_BIN: measure another build (benchmark below).
        let bin = std::env::var("CLATD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_clatd").into());
        let mut cmd = Command::new(bin);
        cmd.args([
            "-i",
            &self.uplink,
            "-p",
            &self.prefix.to_string(),
            "-4",
            CLAT_V4,
            "-6",
            CLAT_V6,
            "-t",
            &CHILD_TUN_FD.to_string(),
        ]);
        if sockets.is_some() {
            cmd.args([
                "-r",
                &CHILD_RX_FD.to_string(),
                "-w",
                &CHILD_TX_FD.to_string(),
            ]);
        }
        cmd.args(extra);
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        let ns_raw = nsf.as_raw_fd();
        let mut fds = vec![(tun_raw, CHILD_TUN_FD)];
        if rx_raw >= 0 {
            fds.push((rx_raw, CHILD_RX_FD));
            fds.push((tx_raw, CHILD_TX_FD));
        }
        let gso_sock = self.gso_sock.take();
        if let Some(g) = &gso_sock {
            fds.push((g.as_raw_fd(), CHILD_GSO_FD));
            cmd.args(["-g", &CHILD_GSO_FD.to_string()]);
        }
        let stats_fd = self.stats_fd.take();
        if let Some(f) = &stats_fd {
            fds.push((f.as_raw_fd(), CHILD_STATS_FD));
            cmd.args(["-c", &CHILD_STATS_FD.to_string()]);
        }
        // SAFETY: the closure only makes async-signal-safe system calls (dup2, fcntl, setns)
        // on descriptors that stay open in the parent until spawn returns; `fds` is allocated
        // before the fork.
        unsafe {
            cmd.pre_exec(move || pass_fds_and_enter(&fds, ns_raw));
        }
        if let Some(id) = self.run_as {
            // SAFETY: async-signal-safe system calls only; runs after the closure above, so
            // after setns (which needs the privileges dropped here).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(id) != 0
                        || libc::setuid(id) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        drop(sockets);
        drop(gso_sock);
        drop(stats_fd);
        let stderr = child.stderr.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[clatd] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(&format!("tun {}", self.tun_name)) => break,
                Ok(_) => {}
                Err(_) => panic!(
                    "clatd did not start: {:?}",
                    self.child.as_mut().unwrap().try_wait()
                ),
            }
        }
        self.logs = Some(rx);
    }
}

impl Topology {
    /// SIGTERM clatd; its exit status and the log lines it wrote since start-up.
    fn stop_clatd(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "clatd ignored SIGTERM");
            thread::sleep(Duration::from_millis(20));
        };
        let mut lines = Vec::new();
        if let Some(rx) = self.logs.take() {
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
                lines.push(l);
            }
        }
        (status, lines)
    }

    /// Open the GSO send socket inside the client namespace, as the supervisor does.
    fn open_gso_socket(&self) -> OwnedFd {
        let ifindex = self.ifindex;
        in_netns(&self.client, move || {
            autoclat::translator::open_gso_tx(ifindex, None).unwrap()
        })
    }

    /// Open the uplink sockets inside the client namespace, as the supervisor does.
    fn open_sockets(&self) -> (OwnedFd, OwnedFd) {
        let (rx, tx, _) = self.open_sockets_framed();
        (rx, tx)
    }

    /// [`Self::open_sockets`], and how the receive socket frames packets.
    fn open_sockets_framed(&self) -> (OwnedFd, OwnedFd, RxFraming) {
        let ifindex = self.ifindex;
        in_netns(&self.client, move || {
            let v6: Ipv6Addr = CLAT_V6.parse().unwrap();
            let (rx, framing) = open_rx(ifindex, v6, None, None, None).unwrap();
            (rx, open_tx(ifindex, None).unwrap(), framing)
        })
    }
}

/// Open /dev/net/tun and attach a new tun `name` (IFF_TUN | IFF_NO_PI), in this thread's
/// namespace.
fn create_tun(name: &str) -> OwnedFd {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .unwrap();
    // SAFETY: ifreq is plain old data.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads one ifreq from a live buffer.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    f.into()
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Send `count` ICMP echo requests to `dst` from inside namespace `ns` (a raw socket, so no
/// ping binary is needed); how many matching replies came back.
fn ping4(ns: &str, dst: Ipv4Addr, count: u16, payload: usize) -> u16 {
    in_netns(ns, move || {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV4),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let ident: u16 = 0x7435;
        let mut got = 0;
        for seq in 0..count {
            let mut pkt = vec![8u8, 0, 0, 0];
            pkt.extend_from_slice(&ident.to_be_bytes());
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend((0..payload).map(|i| i as u8));
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
            let to = SocketAddr::from((dst, 0));
            s.send_to(&pkt, &to.into()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 65536];
                let Ok((n, _)) = s.recv_from(&mut buf) else {
                    continue;
                };
                // SAFETY: recv_from initialised the first n bytes.
                let b: Vec<u8> = buf[..n]
                    .iter()
                    .map(|x| unsafe { x.assume_init() })
                    .collect();
                let ihl = usize::from(b[0] & 0x0f) * 4;
                let icmp = &b[ihl..];
                if icmp[0] == 0
                    && icmp[4..6] == ident.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                    && icmp.len() == 8 + payload
                    && b[12..16] == dst.octets()
                {
                    assert_eq!(checksum(icmp), 0, "reply checksum");
                    got += 1;
                    break;
                }
            }
        }
        got
    })
}

/// Run `serve` on a thread inside namespace `ns`, after `bind` there; returns the bound port.
fn server_in<S: Send + 'static>(
    ns: &str,
    bind: impl FnOnce() -> (S, u16) + Send + 'static,
    serve: impl FnOnce(S) + Send + 'static,
) -> u16 {
    let (tx, rx) = mpsc::channel();
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let nsf = File::open(&path).unwrap();
        // SAFETY: setns on an open namespace descriptor affects only this thread.
        let rc = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0);
        let (s, port) = bind();
        tx.send(port).unwrap();
        serve(s);
    });
    rx.recv().unwrap()
}

/// A UDP echo server on the peer's server address; returns its port.
fn udp_echo_server(ns: &str, addr: Ipv6Addr) -> u16 {
    server_in(
        ns,
        move || {
            let s = UdpSocket::bind((addr, 0)).unwrap();
            let port = s.local_addr().unwrap().port();
            (s, port)
        },
        |s| {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        },
    )
}

/// A TCP echo server on the peer's server address; returns its port.
fn tcp_echo_server(ns: &str, addr: Ipv6Addr) -> u16 {
    server_in(
        ns,
        move || {
            let l = TcpListener::bind((addr, 0)).unwrap();
            let port = l.local_addr().unwrap().port();
            (l, port)
        },
        |l| {
            for mut c in l.incoming().map_while(Result::ok) {
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        },
    )
}

/// One UDP round trip over IPv4 from the client namespace; whether the echo came back.
fn udp_roundtrip(ns: &str, port: u16, payload: &'static [u8]) -> bool {
    in_netns(ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 65536];
        for _ in 0..3 {
            s.send_to(payload, (SERVER_V4, port)).unwrap();
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                assert_eq!(from, SocketAddr::from((SERVER_V4, port)));
                return &buf[..n] == payload;
            }
        }
        false
    })
}

/// Send `len` bytes over TCP/IPv4 from the client namespace and read them back.
fn tcp_roundtrip(ns: &str, port: u16, len: usize) {
    in_netns(ns, move || {
        let to = SocketAddr::from((SERVER_V4, port));
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let d2 = data.clone();
        let writer = thread::spawn(move || w.write_all(&d2).unwrap());
        let mut back = vec![0u8; len];
        c.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "TCP echo differs");
    })
}

/// Run clatd to completion (expected to fail at start-up) with the tun as fd 10 and the
/// given descriptors as `-r 11 -w 12`: exit code and stderr.
fn run_clatd_once(t: &Topology, rx: &OwnedFd, tx: &OwnedFd) -> (Option<i32>, String) {
    run_clatd_once_with(t, rx, tx, &[])
}

/// [`run_clatd_once`] with more flags.
fn run_clatd_once_with(
    t: &Topology,
    rx: &OwnedFd,
    tx: &OwnedFd,
    extra: &[&str],
) -> (Option<i32>, String) {
    let nsf = File::open(format!("/var/run/netns/{}", t.client)).unwrap();
    let fds = [
        (t.tun.as_ref().unwrap().as_raw_fd(), CHILD_TUN_FD),
        (rx.as_raw_fd(), CHILD_RX_FD),
        (tx.as_raw_fd(), CHILD_TX_FD),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clatd"));
    cmd.args([
        "-i",
        &t.uplink,
        "-p",
        &t.prefix.to_string(),
        "-4",
        CLAT_V4,
        "-6",
        CLAT_V6,
        "-t",
        "10",
        "-r",
        "11",
        "-w",
        "12",
    ]);
    cmd.args(extra);
    let ns_raw = nsf.as_raw_fd();
    // SAFETY: only async-signal-safe calls on descriptors open in the parent.
    unsafe {
        cmd.pre_exec(move || pass_fds_and_enter(&fds, ns_raw));
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// In a forked child: enter namespace `ns_fd`, then place each `from` descriptor on its `to`
/// number (without close-on-exec). Every source is first copied above all targets, so that
/// no `dup2` overwrites a descriptor still to be placed. Async-signal-safe, no allocation.
fn pass_fds_and_enter(fds: &[(RawFd, RawFd)], ns_fd: RawFd) -> std::io::Result<()> {
    // SAFETY: plain system call on an open namespace descriptor.
    if unsafe { libc::setns(ns_fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut high = [-1; 8];
    for (i, &(from, _)) in fds.iter().enumerate().take(high.len()) {
        // SAFETY: plain system call on a descriptor number.
        high[i] = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 100) };
        if high[i] < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, &(_, to)) in fds.iter().enumerate().take(high.len()) {
        // SAFETY: plain system call; dup2 leaves close-on-exec clear on `to`.
        if unsafe { libc::dup2(high[i], to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn ping_udp_tcp_through_clatd_with_its_own_sockets_then_sigterm() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    t.spawn_clatd(None, &[]);
    let client = t.client.clone();

    assert_eq!(ping4(&client, SERVER_V4, 3, 56), 3, "ping through clatd");
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, b"hello through the CLAT"));
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 1 << 20);

    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
    let last = logs
        .iter()
        .rev()
        .find(|l| l.contains("exiting"))
        .expect("exit line");
    assert!(last.contains("SIGTERM"), "{last}");
    assert!(last.contains("v4->v6"), "{last}");
}

#[test]
fn inherited_sockets_and_the_fast_path_filter() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    let (rx, tx, framing) = t.open_sockets_framed();
    // On a veth (Ethernet): a raw socket with virtio headers, the filter past 14 octets.
    assert_eq!(framing, RxFraming::VnetHdr { link_len: 14 });
    let link_len = 14;
    // The supervisor keeps a copy of the receive socket to change its filter later.
    let rx_copy = rx.try_clone().unwrap();
    t.spawn_clatd(Some((rx, tx)), &["-m", "0x74", "-n", "5"]);
    let client = t.client.clone();

    assert_eq!(ping4(&client, SERVER_V4, 2, 100), 2);
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, b"before the fast path"));

    // Fast path "on": UDP with a checksum from the prefix is now the kernel's job, so clatd
    // no longer sees the echo (nothing else translates it here); ICMP still goes to clatd.
    let ex = FastPathExclusion { prefix: t.prefix };
    let v6: Ipv6Addr = CLAT_V6.parse().unwrap();
    let filter = |v4, ex| rx_filter_behind(link_len, v6, v4, None, ex);
    set_rx_filter(rx_copy.as_fd(), &filter(None, Some(&ex))).unwrap();
    assert!(!udp_roundtrip(&client, port, b"excluded"));
    assert_eq!(ping4(&client, SERVER_V4, 2, 100), 2);
    // Issue 9 §3: hop limit 0 is not the fast path's, so clatd still sees it and answers Time
    // Exceeded (the filter used to skip all UDP with a checksum from the prefix). The same
    // with the filter that knows the CLAT's IPv4 address.
    assert!(hop_limit_zero_draws_time_exceeded(&t, v6), "rx_filter");
    let v4: Ipv4Addr = CLAT_V4.parse().unwrap();
    set_rx_filter(rx_copy.as_fd(), &filter(Some(v4), Some(&ex))).unwrap();
    assert!(!udp_roundtrip(&client, port, b"excluded"));
    assert!(
        hop_limit_zero_draws_time_exceeded(&t, v6),
        "rx_filter_exact"
    );

    // Fast path "off" again.
    set_rx_filter(rx_copy.as_fd(), &filter(None, None)).unwrap();
    assert!(udp_roundtrip(&client, port, b"after the fast path"));

    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
}

/// A cooked (`SOCK_DGRAM`) receive socket, as the supervisor opens on links whose
/// link-layer header it does not know: clatd takes it and translates ping, UDP and TCP both
/// ways, and a raw packet socket without virtio headers is refused.
#[test]
fn a_cooked_receive_socket_works_and_a_bare_raw_one_is_refused() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    let ifindex = t.ifindex;
    let (rx, tx) = in_netns(&t.client, move || {
        let v6: Ipv6Addr = CLAT_V6.parse().unwrap();
        let rx = autoclat::translator::sockets::open_packet_rx(ifindex, &rx_filter(v6, None, None))
            .unwrap();
        (rx, open_tx(ifindex, None).unwrap())
    });
    assert_eq!(rx_framing(rx.as_fd()), Some(RxFraming::Cooked));
    t.spawn_clatd(Some((rx, tx)), &[]);
    let client = t.client.clone();
    assert_eq!(ping4(&client, SERVER_V4, 2, 100), 2);
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, b"through a cooked socket"));
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 1 << 20);
    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");

    // SOCK_RAW without PACKET_VNET_HDR: the frames would start with a link-layer header
    // clatd cannot tell from the packet. Refused at start-up.
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0);
    // SAFETY: just created, owned by nobody else.
    let raw = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    assert_eq!(rx_framing(raw.as_fd()), None);
    let tx = in_netns(&t.client, move || open_tx(ifindex, None).unwrap());
    let (code, err) = run_clatd_once(&t, &raw, &tx);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("-r 11: not a packet socket"), "{err}");
}

/// Sends UDP with hop limit 0 from the server to the CLAT address; true when an ICMPv6 Time
/// Exceeded from the CLAT address comes back.
fn hop_limit_zero_draws_time_exceeded(t: &Topology, clat_v6: Ipv6Addr) -> bool {
    let server = t.server_v6;
    in_netns(&t.peer, move || {
        let watch = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV6),
        )
        .unwrap();
        watch
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        let s = UdpSocket::bind((server, 0)).unwrap();
        let hops: libc::c_int = 0;
        // SAFETY: an int-valued socket option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                (&hops as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        s.send_to(b"hop limit 0", (clat_v6, 9)).unwrap();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        while let Ok((n, from)) = watch.recv_from(&mut buf) {
            // SAFETY: recv_from initialised the first n bytes.
            let b: Vec<u8> = buf[..n]
                .iter()
                .map(|x| unsafe { x.assume_init() })
                .collect();
            let from = from.as_socket_ipv6().map(|a| *a.ip());
            if n >= 8 && b[0] == 3 && b[1] == 0 && from == Some(clat_v6) {
                return true;
            }
        }
        false
    })
}

#[test]
fn sigterm_exits_0_and_wrong_descriptors_exit_1() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    t.spawn_clatd(None, &[]);
    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("SIGTERM: exiting")),
        "{logs:?}"
    );

    // -r naming a UDP socket: one line, exit 1.
    let (rx, tx) = t.open_sockets();
    let udp = OwnedFd::from(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    let (code, err) = run_clatd_once(&t, &udp, &tx);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("-r 11: not a packet socket"), "{err}");
    // -w naming the packet socket.
    let (code, err) = run_clatd_once(&t, &rx, &rx.try_clone().unwrap());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("-w 12: not a raw IPv6 socket"), "{err}");
}

#[test]
fn ping_and_tcp_with_a_40_bit_prefix() {
    require_root!();
    let mut t = Topology::new("2001:db8:100::/40");
    t.spawn_clatd(None, &[]);
    let client = t.client.clone();
    assert_eq!(ping4(&client, SERVER_V4, 2, 1000), 2);
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, b"forty bits"));
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 256 << 10);
    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
}

#[test]
fn fragments_both_ways_and_fragmentation_needed_from_the_translator() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    // A narrower uplink than the tun allows: 1300 - 40 (IPv6) + 20 (IPv4) = 1280 for IPv4
    // packets with DF. clatd reads the uplink MTU at start.
    sh(&[
        "ip", "-n", &t.client, "link", "set", &t.uplink, "mtu", "1300",
    ]);
    // The peer's side too, or its fragments would not fit the client's side of the veth.
    let peer_if = t.uplink.replacen("t5c", "t5p", 1);
    sh(&["ip", "-n", &t.peer, "link", "set", &peer_if, "mtu", "1300"]);
    t.spawn_clatd(None, &[]);
    let client = t.client.clone();

    // 3000 bytes of UDP: fragmented by the client's IPv4 stack, translated fragment by
    // fragment (each cut again to fit the narrower uplink), reassembled by the peer, echoed
    // in IPv6 fragments, translated back and reassembled by the client. (Fragmented ICMP is
    // not translatable without reassembly, RFC 7915 §4.2, so it is not used here.)
    static BIG: [u8; 3000] = [0x42; 3000];
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, &BIG), "fragmented UDP");

    // A 1400-byte UDP datagram with DF set fits the tun but not the uplink: the translator
    // answers with ICMP "fragmentation needed" through the tun, and the client's kernel learns
    // the path MTU.
    let mtu = in_netns(&client, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.connect((SERVER_V4, port)).unwrap();
        let fd = s.as_raw_fd();
        let val: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: an int option on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let big = vec![0x5au8; 1400];
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let _ = s.send(&big);
            thread::sleep(Duration::from_millis(100));
            let mut mtu: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: an int option read into a live int.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MTU,
                    (&mut mtu as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            if mtu < 1472 || Instant::now() > deadline {
                return mtu;
            }
        }
    });
    assert_eq!(
        mtu, 1280,
        "path MTU learnt from the translator's ICMP error"
    );
    // Smaller datagrams still go through.
    assert!(udp_roundtrip(&client, port, b"small enough"));

    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
}

#[test]
fn runs_without_privileges_on_inherited_sockets() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    let (rx, tx) = t.open_sockets();
    // nobody/nogroup: no capabilities at all; everything clatd needs is already open.
    t.run_as = Some(65534);
    t.spawn_clatd(Some((rx, tx)), &[]);
    let pid = t.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(cap_eff.ends_with("0000000000000000"), "{cap_eff}");

    let client = t.client.clone();
    assert_eq!(ping4(&client, SERVER_V4, 2, 56), 2);
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 128 << 10);
    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
}

/// A TCP server on the peer's server address that reads each connection to its end and
/// answers with the byte count and the FNV-1a hash of what it read (16 bytes).
fn tcp_hash_server(ns: &str, addr: Ipv6Addr) -> u16 {
    server_in(
        ns,
        move || {
            let l = TcpListener::bind((addr, 0)).unwrap();
            let port = l.local_addr().unwrap().port();
            (l, port)
        },
        |l| {
            for mut c in l.incoming().map_while(Result::ok) {
                thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    let (mut len, mut h) = (0u64, Fnv::new());
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        len += n as u64;
                        h.feed(&buf[..n]);
                    }
                    let mut out = len.to_be_bytes().to_vec();
                    out.extend_from_slice(&h.0.to_be_bytes());
                    let _ = c.write_all(&out);
                });
            }
        },
    )
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Upload `len` bytes over TCP/IPv4 from the client namespace to the hash server; panics
/// unless the server saw exactly those bytes.
fn tcp_upload(ns: &str, port: u16, len: usize) {
    in_netns(ns, move || {
        let to = SocketAddr::from((SERVER_V4, port));
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut h = Fnv::new();
        h.feed(&data);
        c.write_all(&data).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = [0u8; 16];
        c.read_exact(&mut answer).unwrap();
        let got_len = u64::from_be_bytes(answer[..8].try_into().unwrap());
        let got_hash = u64::from_be_bytes(answer[8..].try_into().unwrap());
        assert_eq!(got_len, len as u64, "bytes received");
        assert_eq!(got_hash, h.0, "hash of the bytes received");
    })
}

/// The value after `label ` in a counters line, e.g. `super-packets 12`.
fn counter(line: &str, label: &str) -> u64 {
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("{label} in {line}"))
        + label.len();
    line[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn tcp_upload_of_tso_super_packets_through_a_vnet_header_tun() {
    require_root!();
    let mut t = Topology::with_tun(PREFIX, true);
    let (rx, tx) = t.open_sockets();
    t.spawn_clatd(Some((rx, tx)), &[]);
    let client = t.client.clone();
    // IPv6 is off on the supervisor's tun, and its transmit queue is long.
    let v6 = sh_out(&[
        "ip",
        "-n",
        &client,
        "-6",
        "addr",
        "show",
        "dev",
        &t.tun_name,
    ]);
    assert!(v6.trim().is_empty(), "{v6}");
    let link = sh_out(&["ip", "-n", &client, "link", "show", "dev", &t.tun_name]);
    assert!(link.contains("qlen 5000"), "txqueuelen: {link}");

    // Both directions with a virtio header on every packet.
    assert_eq!(ping4(&client, SERVER_V4, 3, 1400), 3, "ping through clatd");
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, b"hello through the vnet tun"));
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 1 << 20);
    let port = tcp_hash_server(&t.peer, t.server_v6);
    tcp_upload(&client, port, 20 << 20);

    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
    let last = logs.iter().rev().find(|l| l.contains("exiting")).unwrap();
    // The host's TCP handed over super-packets, and clatd cut them up itself.
    let supers = counter(last, "super-packets");
    let segments = counter(last, "cut into");
    assert!(supers > 0, "{last}");
    assert!(segments > supers, "{last}");
    assert_eq!(counter(last, "offload errors"), 0, "{last}");
    assert_eq!(counter(last, "(errors"), 0, "{last}");
}

/// Upload through clatd with a GSO send socket: super-packets leave whole, with their
/// virtio header, to the router's MAC. With `software`, the uplink does neither checksum
/// nor segmentation offload, so the kernel does both from the header's offsets and the peer
/// verifies every checksum: wrong offsets would corrupt or drop the data.
fn upload_with_gso_socket(software: bool) {
    let mut t = Topology::with_tun(PREFIX, true);
    if software {
        sh(&[
            "ip", "netns", "exec", &t.client, "ethtool", "-K", &t.uplink, "tx", "off", "tso",
            "off", "gso", "off",
        ]);
    }
    let (rx, tx) = t.open_sockets();
    t.gso_sock = Some(t.open_gso_socket());
    t.spawn_clatd(Some((rx, tx)), &[]);
    let client = t.client.clone();
    assert_eq!(ping4(&client, SERVER_V4, 2, 1400), 2, "ping through clatd");
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 1 << 20);
    let port = tcp_hash_server(&t.peer, t.server_v6);
    tcp_upload(&client, port, 20 << 20);
    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
    let last = logs.iter().rev().find(|l| l.contains("exiting")).unwrap();
    assert!(counter(last, "gso sent") > 0, "{last}");
    assert_eq!(counter(last, "offload errors"), 0, "{last}");
    let gso_errors = last
        .split("gso sent")
        .nth(1)
        .map(|r| counter(r, "(errors"))
        .unwrap();
    assert_eq!(gso_errors, 0, "{last}");
}

#[test]
fn tcp_upload_with_super_packets_sent_whole_on_a_gso_socket() {
    require_root!();
    upload_with_gso_socket(false);
}

#[test]
fn tcp_upload_on_a_gso_socket_with_software_checksums_and_segmentation() {
    require_root!();
    upload_with_gso_socket(true);
}

/// iperf3 -J: the receiver's rate in Gbit/s.
fn iperf3_gbits(ns: &str, args: &[&str]) -> f64 {
    let mut cmd = vec!["ip", "netns", "exec", ns, "iperf3", "-J", "-t", "5"];
    cmd.extend_from_slice(args);
    let out = sh_out(&cmd);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9
}

/// Not a test: `cargo test --release --test netns_clatd -- --ignored --nocapture iperf3`
/// prints upload and download rates through clatd (plain tun and the supervisor's vnet tun)
/// beside native IPv6 on the same veths. `CLATD_BIN` selects another clatd build;
/// `CLATD_BENCH_TUN=plain` (or `vnet`) measures one kind of tun only.
#[test]
#[ignore]
fn iperf3_through_clatd_against_native_ipv6() {
    require_root!();
    let only = std::env::var("CLATD_BENCH_TUN").ok();
    for (supervisor_tun, gso_socket) in [(false, false), (true, false), (true, true)] {
        match only.as_deref() {
            Some("plain") if supervisor_tun => continue,
            Some("vnet") if !supervisor_tun => continue,
            _ => {}
        }
        let mut t = Topology::with_tun(PREFIX, supervisor_tun);
        let (rx, tx) = t.open_sockets();
        if gso_socket {
            t.gso_sock = Some(t.open_gso_socket());
        }
        t.spawn_clatd(Some((rx, tx)), &[]);
        let mut server = Command::new("ip")
            .args(["netns", "exec", &t.peer, "iperf3", "-s", "-B"])
            .arg(t.server_v6.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_millis(300));
        let s6 = t.server_v6.to_string();
        let s4 = SERVER_V4.to_string();
        let native_up = iperf3_gbits(&t.client, &["-c", &s6]);
        let clat_up = iperf3_gbits(&t.client, &["-c", &s4]);
        let native_down = iperf3_gbits(&t.client, &["-c", &s6, "-R"]);
        let clat_down = iperf3_gbits(&t.client, &["-c", &s4, "-R"]);
        let _ = server.kill();
        let _ = server.wait();
        let (_, logs) = t.stop_clatd();
        let kind = match (supervisor_tun, gso_socket) {
            (false, _) => "plain tun",
            (true, false) => "vnet+TSO tun, cut in clatd",
            (true, true) => "vnet+TSO tun, GSO socket",
        };
        println!(
            "{kind}: upload clatd {clat_up:.2} Gbit/s vs native IPv6 {native_up:.2} ({:.2}x); \
             download clatd {clat_down:.2} vs native {native_down:.2} ({:.2}x)",
            clat_up / native_up,
            clat_down / native_down
        );
        if let Some(l) = logs.iter().rev().find(|l| l.contains("exiting")) {
            println!("  {l}");
        }
    }
}

/// The counters clatd keeps on the supervisor's shared page are the ones it logs at exit,
/// translations and drops alike, read from another process without signalling clatd.
#[test]
fn counters_reach_the_supervisor_through_the_shared_page() {
    require_root!();
    use autoclat::translator::stats::StatsPage;
    let mut t = Topology::new(PREFIX);
    let page = StatsPage::create().unwrap();
    t.stats_fd = Some(page.fd().try_clone_to_owned().unwrap());
    t.spawn_clatd(None, &[]);
    let client = t.client.clone();
    assert_eq!(ping4(&client, SERVER_V4, 3, 56), 3);
    // From a source that is not the CLAT's address: the translator drops it as not ours.
    sh(&[
        "ip",
        "-n",
        &client,
        "addr",
        "add",
        "192.0.2.1/32",
        "dev",
        "lo",
    ]);
    let st = Command::new("ip")
        .args(["netns", "exec", &client, "ping", "-n", "-c", "1", "-W", "1"])
        .args(["-I", "192.0.2.1"])
        .arg(SERVER_V4.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !st.success(),
        "a ping from 192.0.2.1 must not be translated"
    );

    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
    let last = logs
        .iter()
        .rev()
        .find(|l| l.contains("exiting"))
        .expect("exit line");
    let got = page.read().expect("magic intact");
    let c = &got.translation;
    assert!(
        c.v4_to_v6_packets >= 3 && c.v6_to_v4_packets >= 3,
        "{got:?}"
    );
    assert!(c.dropped_not_ours >= 1, "{got:?}");
    assert_eq!(c.v4_to_v6_packets, counter(last, "v4->v6"), "{last}");
    assert_eq!(c.v6_to_v4_packets, counter(last, "v6->v4"), "{last}");
    assert_eq!(c.dropped, counter(last, "dropped"), "{last}");
    assert_eq!(c.dropped_not_ours, counter(last, "not ours"), "{last}");
    assert_eq!(c.dropped_malformed, counter(last, "malformed"), "{last}");
    assert_eq!(c.dropped_other, counter(last, "other"), "{last}");
    assert_eq!(
        c.icmp_errors_sent,
        counter(last, "icmp errors sent"),
        "{last}"
    );
    assert_eq!(got.drops().not_ours, c.dropped_not_ours);
}

/// `-c` naming something that is not a counter page: one line, exit 1, nothing translated.
#[test]
fn a_bad_counter_page_is_refused() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    let f = tempfile::tempfile().unwrap();
    f.set_len(4096).unwrap();
    t.stats_fd = Some(f.into());
    t.spawn_clatd(None, &[]);
    let mut child = t.child.take().unwrap();
    let status = child.wait().unwrap();
    let logs: Vec<String> = t.logs.take().unwrap().iter().collect();
    assert_eq!(status.code(), Some(1), "{logs:?}");
    let last = logs.last().unwrap();
    assert!(
        last.contains("-c 14: counter page: not a memfd"),
        "{logs:?}"
    );
}

/// The fields of /proc/PID/status that describe privileges.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

/// Issue 9: the translator ran as full root. Started as root with inherited sockets (the
/// filter locked, as the supervisor hands it over) and the GSO socket, it must run as a
/// non-root user with no capabilities, NoNewPrivs and a seccomp filter, and still carry
/// ICMP, UDP and TCP; a locked filter cannot be changed by anyone holding the socket.
#[test]
fn the_translator_drops_root_and_capabilities_and_runs_under_seccomp() {
    require_root!();
    let mut t = Topology::new(PREFIX);
    let (rx, tx) = t.open_sockets();
    let rx_copy = rx.try_clone().unwrap();
    autoclat::translator::lock_rx_filter(rx.as_fd()).unwrap();
    let supervisor = std::process::id().to_string();
    t.spawn_clatd(Some((rx, tx)), &["-P", &supervisor]);
    let pid = t.child.as_ref().unwrap().id();
    // The start-up line comes before the drop: wait for the filter to be on.
    let mut status = String::new();
    for _ in 0..500 {
        status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        if status_field(&status, "Seccomp:") == "2" {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    for key in ["Uid:", "Gid:"] {
        let ids = status_field(&status, key);
        assert!(ids.split_whitespace().all(|i| i != "0"), "{key} {ids}");
    }
    assert_eq!(status_field(&status, "Groups:"), "", "supplementary groups");
    for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&status, key), "0000000000000000", "{key}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&status, "Seccomp:"), "2");

    // Locked: not even the supervisor's copy can change it now.
    let v6: Ipv6Addr = CLAT_V6.parse().unwrap();
    let ex = FastPathExclusion { prefix: t.prefix };
    assert!(set_rx_filter(rx_copy.as_fd(), &rx_filter(v6, None, Some(&ex))).is_err());

    let client = t.client.clone();
    assert_eq!(ping4(&client, SERVER_V4, 3, 56), 3, "ping through clatd");
    let port = udp_echo_server(&t.peer, t.server_v6);
    assert!(udp_roundtrip(&client, port, b"hello from a sandbox"));
    let port = tcp_echo_server(&t.peer, t.server_v6);
    tcp_roundtrip(&client, port, 1 << 20);
    let (status, logs) = t.stop_clatd();
    assert_eq!(status.code(), Some(0), "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("seccomp allow-list")),
        "{logs:?}"
    );
    assert!(!logs.iter().any(|l| l.contains("not locked")), "{logs:?}");
}

/// Issue 9: a translator whose supervisor died before it started must not run on as an
/// orphan: with `-P` naming a process that is not its parent it exits 1 at once.
#[test]
fn an_orphan_translator_exits_at_once() {
    require_root!();
    let t = Topology::new(PREFIX);
    let (rx, tx) = t.open_sockets();
    let (code, err) = run_clatd_once_with(&t, &rx, &tx, &["-P", "1"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("-P 1: our parent is") && err.contains("not the supervisor"),
        "{err}"
    );
}
