//! Translators left behind by a killed supervisor: processes that still hold a tun descriptor
//! attached to one of our `v4-*` interfaces. The kernel names the interface a tun descriptor is
//! attached to in `/proc/<pid>/fdinfo/<fd>` (`iff:\t<name>`), which identifies them exactly,
//! whatever translator binary `clatd_path` pointed at.

use std::path::Path;
use std::time::Duration;

/// The interface named by a tun descriptor's fdinfo text, if any.
pub fn fdinfo_tun_name(fdinfo: &str) -> Option<&str> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .map(str::trim)
}

/// Processes (other than this one) holding a tun descriptor attached to `ifname`.
pub fn tun_holders(ifname: &str) -> Vec<i32> {
    tun_holders_in(Path::new("/proc"), ifname, std::process::id())
}

fn tun_holders_in(proc_root: &Path, ifname: &str, own_pid: u32) -> Vec<i32> {
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

/// SIGTERM every process holding `ifname`'s tun, then SIGKILL what is still there after
/// `grace`. Returns the pids that were signalled.
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
        let mut found = tun_holders_in(root.path(), "v4-eth0", 103);
        found.sort();
        assert_eq!(found, vec![100]);
    }
}
