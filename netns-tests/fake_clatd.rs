//! A fake translator for the netns tests: it takes the place of `clatd` (README "The translator",
//! `clatd -i UPLINK -p PREFIX -4 V4ADDR -6 V6ADDR -t TUNFD [-m FWMARK] [-n NETID] [-r FD] [-w FD]`)
//! and checks what the supervisor handed it instead of translating:
//! - the flags parse, and the addresses and prefix are well-formed;
//! - fd `-t` is a tun device named `v4-<uplink>` (or a shortened `v4-…` name of at most 15
//!   characters), read from the `iff:` line of /proc/self/fdinfo/N;
//! - `-r`/`-w`, when given, are sockets;
//! - no descriptor is open except 0, 1, 2 and the ones passed.
//!
//! It writes a JSON report to `$FAKE_CLATD_REPORT_DIR/<uplink>-<pid>.json` (and a one-line
//! summary to stderr), then sleeps until SIGTERM and exits 0. It uses only std, so the test
//! harness can build it with plain `rustc` when cargo has not built the example.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
    fn pause() -> i32;
    fn _exit(status: i32) -> !;
}

const SIGTERM: i32 = 15;

extern "C" fn on_sigterm(_sig: i32) {
    // SAFETY: _exit is async-signal-safe; nothing needs flushing (the report is already written).
    unsafe { _exit(0) }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn opt_str(v: &Option<String>) -> String {
    v.as_deref().map(json_str).unwrap_or_else(|| "null".into())
}

fn opt_num(v: Option<i32>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "null".into())
}

/// The `iff:` name of a tun fd, from /proc/self/fdinfo.
fn tun_name(fd: i32) -> Option<String> {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .map(|n| n.trim().to_owned())
}

/// Open descriptors and what they point at (excluding the directory handle used to list them).
fn open_fds() -> BTreeMap<i32, String> {
    let mut fds = BTreeMap::new();
    let Ok(rd) = fs::read_dir("/proc/self/fd") else {
        return fds;
    };
    for e in rd.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let target = fs::read_link(e.path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into());
        fds.insert(fd, target);
    }
    // read_dir holds one fd open on /proc/<pid>/fd itself while listing: drop that one.
    let me = std::process::id();
    fds.retain(|_, t| *t != format!("/proc/{me}/fd"));
    fds
}

fn valid_prefix(p: &str) -> bool {
    let (addr, len) = match p.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()),
        None => (p, Some(96)),
    };
    addr.parse::<Ipv6Addr>().is_ok() && matches!(len, Some(32 | 40 | 48 | 56 | 64 | 96))
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut errors: Vec<String> = Vec::new();
    let mut flags: BTreeMap<&str, String> = BTreeMap::new();
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-i" | "-p" | "-4" | "-6" | "-t" | "-m" | "-n" | "-r" | "-w" | "-g" | "-P" | "-u" => {
                match it.next() {
                    Some(v) => {
                        let key: &'static str = match a.as_str() {
                            "-i" => "-i",
                            "-p" => "-p",
                            "-4" => "-4",
                            "-6" => "-6",
                            "-t" => "-t",
                            "-m" => "-m",
                            "-n" => "-n",
                            "-r" => "-r",
                            "-g" => "-g",
                            "-P" => "-P",
                            "-u" => "-u",
                            _ => "-w",
                        };
                        if flags.insert(key, v.clone()).is_some() {
                            errors.push(format!("{a} given twice"));
                        }
                    }
                    None => errors.push(format!("{a} needs a value")),
                }
            }
            other => errors.push(format!("unknown argument {other:?}")),
        }
    }
    for required in ["-i", "-p", "-4", "-6", "-t"] {
        if !flags.contains_key(required) {
            errors.push(format!("missing {required}"));
        }
    }
    let uplink = flags.get("-i").cloned();
    let prefix = flags.get("-p").cloned();
    let v4 = flags.get("-4").cloned();
    let v6 = flags.get("-6").cloned();
    if let Some(p) = &prefix {
        if !valid_prefix(p) {
            errors.push(format!("-p {p} is not an RFC 6052 prefix"));
        }
    }
    if let Some(a) = &v4 {
        match a.parse::<Ipv4Addr>() {
            Ok(ip) if ip.octets()[..3] == [192, 0, 0] && ip.octets()[3] < 8 => {}
            _ => errors.push(format!("-4 {a} is not in 192.0.0.0/29")),
        }
    }
    if let Some(a) = &v6 {
        if a.parse::<Ipv6Addr>().is_err() {
            errors.push(format!("-6 {a} is not an IPv6 address"));
        }
    }
    let fd_flag = |k: &str, errors: &mut Vec<String>| -> Option<i32> {
        let v = flags.get(k)?;
        match v.parse::<i32>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                errors.push(format!("{k} {v} is not a descriptor number"));
                None
            }
        }
    };
    let tun_fd = fd_flag("-t", &mut errors);
    let read_fd = fd_flag("-r", &mut errors);
    let write_fd = fd_flag("-w", &mut errors);
    let gso_fd = fd_flag("-g", &mut errors);

    let fds = open_fds();
    let tun = tun_fd.and_then(tun_name);
    if let (Some(fd), Some(up)) = (tun_fd, &uplink) {
        match &tun {
            None => errors.push(format!("fd {fd} is not a tun device")),
            Some(name) => {
                let expected = format!("v4-{up}");
                let ok = if expected.len() <= 15 {
                    *name == expected
                } else {
                    name.starts_with("v4-") && name.len() <= 15
                };
                if !ok {
                    errors.push(format!("tun is {name:?}, expected {expected:?}"));
                }
            }
        }
    }
    for (k, fd) in [("-r", read_fd), ("-w", write_fd), ("-g", gso_fd)] {
        if let Some(fd) = fd {
            if !fds.get(&fd).is_some_and(|t| t.starts_with("socket:")) {
                errors.push(format!("{k} fd {fd} is not a socket"));
            }
        }
    }
    let allowed: Vec<i32> = [Some(0), Some(1), Some(2), tun_fd, read_fd, write_fd, gso_fd]
        .into_iter()
        .flatten()
        .collect();
    for (fd, target) in &fds {
        if !allowed.contains(fd) {
            errors.push(format!("unexpected open fd {fd} -> {target}"));
        }
    }

    let pid = std::process::id();
    let mut r = String::from("{");
    let argv_json: Vec<String> = argv.iter().map(|a| json_str(a)).collect();
    let _ = write!(r, "\"argv\":[{}]", argv_json.join(","));
    let _ = write!(
        r,
        ",\"argv0\":{}",
        json_str(argv.first().map(String::as_str).unwrap_or(""))
    );
    let _ = write!(r, ",\"pid\":{pid}");
    let _ = write!(r, ",\"uplink\":{}", opt_str(&uplink));
    let _ = write!(r, ",\"prefix\":{}", opt_str(&prefix));
    let _ = write!(r, ",\"v4\":{}", opt_str(&v4));
    let _ = write!(r, ",\"v6\":{}", opt_str(&v6));
    let _ = write!(r, ",\"mark\":{}", opt_str(&flags.get("-m").cloned()));
    let _ = write!(r, ",\"netid\":{}", opt_str(&flags.get("-n").cloned()));
    let _ = write!(r, ",\"tun_fd\":{}", opt_num(tun_fd));
    let _ = write!(r, ",\"tun_name\":{}", opt_str(&tun));
    let _ = write!(r, ",\"read_fd\":{}", opt_num(read_fd));
    let _ = write!(r, ",\"write_fd\":{}", opt_num(write_fd));
    let fds_json: Vec<String> = fds
        .iter()
        .map(|(fd, t)| format!("{{\"fd\":{fd},\"target\":{}}}", json_str(t)))
        .collect();
    let _ = write!(r, ",\"fds\":[{}]", fds_json.join(","));
    let errs: Vec<String> = errors.iter().map(|e| json_str(e)).collect();
    let _ = write!(r, ",\"errors\":[{}]", errs.join(","));
    let _ = write!(r, ",\"ok\":{}}}", errors.is_empty());

    eprintln!("fake_clatd {pid}: {r}");
    if let Some(dir) = std::env::var_os("FAKE_CLATD_REPORT_DIR") {
        let name = uplink.as_deref().unwrap_or("unknown").replace('/', "_");
        let dir = PathBuf::from(dir);
        let tmp = dir.join(format!(".{name}-{pid}.tmp"));
        let dst = dir.join(format!("{name}-{pid}.json"));
        if let Err(e) = fs::write(&tmp, &r).and_then(|_| fs::rename(&tmp, &dst)) {
            eprintln!("fake_clatd {pid}: cannot write {}: {e}", dst.display());
        }
    }

    // SAFETY: installing a handler that only calls the async-signal-safe _exit.
    unsafe {
        signal(SIGTERM, on_sigterm as extern "C" fn(i32) as usize);
    }
    loop {
        // SAFETY: pause has no preconditions; it returns after a handled signal.
        unsafe {
            pause();
        }
    }
}
