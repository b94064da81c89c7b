//! Translators left behind by a killed supervisor: processes that still hold a tun descriptor
//! attached to one of our `v4-*` interfaces. The kernel names the interface a tun descriptor is
//! attached to in `/proc/<pid>/fdinfo/<fd>` (`iff:\t<name>`), which identifies them exactly,
//! whatever translator binary `clatd_path` pointed at.
//!
//! `/proc` shows the processes of every network namespace, and interface names are only unique
//! within one, so a holder is a leftover ([`is_leftover`]) only when
//! - it is in our network namespace (`/proc/<pid>/ns/net` is the same as ours), and
//! - it is not a live daemon itself (it does not hold the single-instance lock socket, see
//!   [`crate::instance`]), and
//! - its supervisor is dead: its parent does not hold the lock either, and it is not still the
//!   child of the pid its command line names with `-P` (a translator whose supervisor died has
//!   been re-parented to init or a subreaper).

use std::path::Path;
use std::time::Duration;

/// The interface named by a tun descriptor's fdinfo text, if any.
pub fn fdinfo_tun_name(fdinfo: &str) -> Option<&str> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .map(str::trim)
}

/// The parent pid from the text of `/proc/<pid>/stat` (the field after the state; the command
/// name in parentheses may itself contain spaces and parentheses).
pub fn stat_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// The supervisor pid a translator's command line names with `-P PID` (or `-PPID`), from the
/// NUL-separated text of `/proc/<pid>/cmdline`.
pub fn cmdline_expected_parent(cmdline: &[u8]) -> Option<i32> {
    let mut args = cmdline
        .split(|&b| b == 0)
        .skip(1)
        .map(|a| std::str::from_utf8(a).unwrap_or(""));
    while let Some(a) = args.next() {
        if a == "-P" {
            return args.next()?.parse().ok();
        }
        if let Some(n) = a.strip_prefix("-P") {
            return n.parse().ok();
        }
    }
    None
}

/// The inodes of the sockets bound to the abstract name `@name`, from the text of
/// `/proc/net/unix` (which lists the sockets of the reader's network namespace).
pub fn lock_inodes(proc_net_unix: &str, name: &str) -> Vec<u64> {
    let want = format!("@{name}");
    proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|l| {
            // Num RefCount Protocol Flags Type St Inode Path
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            (f.get(7) == Some(&want.as_str()))
                .then(|| f.get(6)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The inode of a `socket:[N]` descriptor link target.
pub fn socket_inode(link_target: &Path) -> Option<u64> {
    link_target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What clean-up knows about one process holding one of our tun names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub ppid: Option<i32>,
    /// Its `/proc/<pid>/ns/net` link (`net:[4026531840]`); `None` if unreadable.
    pub netns: Option<String>,
    /// `-P PID` from its command line.
    pub expected_parent: Option<i32>,
    /// It holds the single-instance lock: a live daemon.
    pub is_daemon: bool,
    /// Its parent holds the lock: its supervisor is a live daemon.
    pub parent_is_daemon: bool,
}

/// The decision (pure): stop `h` only if it is in our namespace `own_netns` and its supervisor
/// is dead. An unreadable namespace counts as foreign: never kill what we cannot place.
pub fn is_leftover(h: &Holder, own_netns: &str, own_pid: i32) -> bool {
    if h.pid == own_pid || h.netns.as_deref() != Some(own_netns) || h.is_daemon {
        return false;
    }
    let Some(ppid) = h.ppid else {
        return false;
    };
    if ppid == own_pid || h.parent_is_daemon {
        return false;
    }
    // Still the child of the supervisor it was started by (a daemon without the lock, e.g. an
    // older version): alive. Re-parented (to 1 or a subreaper): dead.
    !(h.expected_parent == Some(ppid) && ppid > 1)
}

/// Processes holding a tun descriptor attached to `ifname` (any namespace), other than us.
fn tun_holder_pids(proc_root: &Path, ifname: &str, own_pid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if u32::try_from(pid).is_ok_and(|p| p == own_pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            let is_tun = std::fs::read_link(fd.path())
                .is_ok_and(|target| target == Path::new("/dev/net/tun"));
            is_tun
                && std::fs::read_to_string(entry.path().join("fdinfo").join(fd.file_name()))
                    .is_ok_and(|info| fdinfo_tun_name(&info) == Some(ifname))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` holds one of the socket inodes `locks`.
fn holds_socket(proc_root: &Path, pid: i32, locks: &[u64]) -> bool {
    if locks.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|t| socket_inode(&t))
            .is_some_and(|i| locks.contains(&i))
    })
}

fn holder(proc_root: &Path, pid: i32, locks: &[u64]) -> Holder {
    let dir = proc_root.join(pid.to_string());
    let ppid = std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|s| stat_ppid(&s));
    Holder {
        pid,
        ppid,
        netns: std::fs::read_link(dir.join("ns/net"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        expected_parent: std::fs::read(dir.join("cmdline"))
            .ok()
            .and_then(|c| cmdline_expected_parent(&c)),
        is_daemon: holds_socket(proc_root, pid, locks),
        parent_is_daemon: ppid.is_some_and(|p| holds_socket(proc_root, p, locks)),
    }
}

fn leftovers_in(proc_root: &Path, ifname: &str, own_pid: u32) -> Vec<i32> {
    let Ok(own_netns) = std::fs::read_link(proc_root.join("thread-self/ns/net")) else {
        tracing::warn!("cannot read our own network namespace: not stopping leftover translators");
        return Vec::new();
    };
    let own_netns = own_netns.to_string_lossy();
    let locks = std::fs::read_to_string(proc_root.join("thread-self/net/unix"))
        .map(|t| lock_inodes(&t, crate::instance::LOCK_NAME))
        .unwrap_or_default();
    let own = i32::try_from(own_pid).unwrap_or(i32::MAX);
    tun_holder_pids(proc_root, ifname, own_pid)
        .into_iter()
        .filter(|&pid| {
            let h = holder(proc_root, pid, &locks);
            let stop = is_leftover(&h, &own_netns, own);
            if !stop {
                tracing::debug!(?h, tun = ifname, "tun holder left alone");
            }
            stop
        })
        .collect()
}

/// Leftover translators holding `ifname`'s tun: in our network namespace, supervisor dead.
pub fn tun_holders(ifname: &str) -> Vec<i32> {
    leftovers_in(Path::new("/proc"), ifname, std::process::id())
}

/// SIGTERM every leftover translator holding `ifname`'s tun (see [`is_leftover`]), then SIGKILL
/// what is still there after `grace`. Returns the pids that were signalled.
pub async fn stop_tun_holders(ifname: &str, grace: Duration) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids = tun_holders(ifname);
    for &pid in &pids {
        tracing::info!(
            pid,
            tun = ifname,
            "stopping a translator left by an earlier run"
        );
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if pids.iter().all(|&p| kill(Pid::from_raw(p), None).is_err()) {
            return pids;
        }
        // A foreign process cannot be watched with a pidfd-free wait; this bounded wait runs
        // once at start-up only.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &pid in &pids {
        if kill(Pid::from_raw(pid), None).is_ok() {
            tracing::warn!(
                pid,
                tun = ifname,
                "leftover translator ignored SIGTERM: killing it"
            );
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tun_fdinfo() {
        let info = "pos:\t0\nflags:\t02004002\nmnt_id:\t27\nino:\t1043\niff:\tv4-eth0\n";
        assert_eq!(fdinfo_tun_name(info), Some("v4-eth0"));
        assert_eq!(fdinfo_tun_name("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn finds_holders_in_a_fake_proc() {
        let root = tempfile::tempdir().unwrap();
        let mk = |pid: &str, fd: &str, target: &str, info: &str| {
            let p = root.path().join(pid);
            std::fs::create_dir_all(p.join("fd")).unwrap();
            std::fs::create_dir_all(p.join("fdinfo")).unwrap();
            std::os::unix::fs::symlink(target, p.join("fd").join(fd)).unwrap();
            std::fs::write(p.join("fdinfo").join(fd), info).unwrap();
        };
        mk("100", "5", "/dev/net/tun", "iff:\tv4-eth0\n");
        mk("101", "5", "/dev/net/tun", "iff:\tv4-eth1\n");
        mk("102", "3", "/tmp/other", "iff:\tv4-eth0\n");
        mk("103", "7", "/dev/net/tun", "iff:\tv4-eth0\n");
        let mut found = tun_holder_pids(root.path(), "v4-eth0", 103);
        found.sort();
        assert_eq!(found, vec![100]);
    }

    #[test]
    fn reads_ppid_cmdline_and_lock_inodes() {
        assert_eq!(stat_ppid("42 (clatd) S 1 42 42 0 -1"), Some(1));
        assert_eq!(stat_ppid("42 (a) b) c) S 777 42 42"), Some(777));
        assert_eq!(stat_ppid("42 (x"), None);
        assert_eq!(
            cmdline_expected_parent(b"clatd-eth0\0-i\0eth0\0-P\x00123\0-t\x003\0"),
            Some(123)
        );
        assert_eq!(cmdline_expected_parent(b"clatd\0-P99\0"), Some(99));
        assert_eq!(cmdline_expected_parent(b"clatd\0-i\0eth0\0"), None);
        assert_eq!(cmdline_expected_parent(b"clatd\0-P\0"), None);
        // argv[0] is not an option.
        assert_eq!(cmdline_expected_parent(b"-P5\0"), None);
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 31337 @autoclat-lock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/autoclat/control.sock\n\
            0000000000000000: 00000002 00000000 00000000 0002 01 12 @autoclat-lock-other\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 13\n";
        assert_eq!(lock_inodes(unix, "autoclat-lock"), vec![31337]);
        assert_eq!(socket_inode(Path::new("socket:[31337]")), Some(31337));
        assert_eq!(socket_inode(Path::new("/dev/net/tun")), None);
    }

    fn orphan() -> Holder {
        Holder {
            pid: 500,
            ppid: Some(1),
            netns: Some("net:[4026531840]".into()),
            expected_parent: Some(400),
            is_daemon: false,
            parent_is_daemon: false,
        }
    }

    #[test]
    fn only_orphans_of_our_namespace_are_leftovers() {
        let ours = "net:[4026531840]";
        assert!(is_leftover(&orphan(), ours, 900));
        // Another namespace (a container, a parallel test) or one we cannot read: never.
        let foreign = Holder {
            netns: Some("net:[4026532001]".into()),
            ..orphan()
        };
        assert!(!is_leftover(&foreign, ours, 900));
        let unknown = Holder {
            netns: None,
            ..orphan()
        };
        assert!(!is_leftover(&unknown, ours, 900));
        // A live daemon holding its own tun, or a translator whose parent is a live daemon.
        let daemon = Holder {
            is_daemon: true,
            ..orphan()
        };
        assert!(!is_leftover(&daemon, ours, 900));
        let supervised = Holder {
            ppid: Some(400),
            parent_is_daemon: true,
            ..orphan()
        };
        assert!(!is_leftover(&supervised, ours, 900));
        // Still the child of the pid on its command line: supervised (by a daemon without the
        // lock); re-parented to a subreaper: orphan.
        let child = Holder {
            ppid: Some(400),
            ..orphan()
        };
        assert!(!is_leftover(&child, ours, 900));
        let reparented = Holder {
            ppid: Some(77),
            ..orphan()
        };
        assert!(is_leftover(&reparented, ours, 900));
        // Without -P, a parent that is no daemon means a dead supervisor.
        let old = Holder {
            ppid: Some(77),
            expected_parent: None,
            ..orphan()
        };
        assert!(is_leftover(&old, ours, 900));
        // Our own children, or ourselves: never.
        let mine = Holder {
            ppid: Some(900),
            ..orphan()
        };
        assert!(!is_leftover(&mine, ours, 900));
        assert!(!is_leftover(
            &Holder {
                pid: 900,
                ..orphan()
            },
            ours,
            900
        ));
        let no_ppid = Holder {
            ppid: None,
            ..orphan()
        };
        assert!(!is_leftover(&no_ppid, ours, 900));
    }
}
