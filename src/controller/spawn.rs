//! Starting and supervising the translator child.
//!
//! [`spawn_translator`] uses `posix_spawn` (vfork-like, safe in a multi-threaded process) with one
//! `dup2` file action per passed descriptor, so the passed descriptors are the only ones the
//! child gets besides 0, 1 and 2: everything the supervisor opens is close-on-exec, and any
//! inherited descriptor without the flag is closed by an extra file action. The target numbers
//! come from [`ReservedFd`]s, so a target can never be the source of another
//! `dup2` and the numbers are known before the command line is built.
//!
//! [`ChildWatch`] learns of the child's exit without polling: a pidfd (`pidfd_open`) becomes
//! readable when the process exits, and signals go through the pidfd, so they can never hit a
//! recycled pid.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;

/// Why the translator could not be spawned or supervised.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A throwaway socket for reserving a descriptor number could not be opened.
    #[error("cannot reserve a descriptor number: {0}")]
    Reserve(#[source] std::io::Error),
    /// An argument or the environment contains a NUL byte.
    #[error("argument `{0}` contains a NUL byte")]
    Nul(String),
    /// A dup2 target is 0, 1, 2, negative, used twice, or also a source.
    #[error("descriptor target {0} is not a free number above 2")]
    BadTarget(RawFd),
    /// The spawn attributes or file actions could not be set up.
    #[error("posix_spawn set-up: {0}")]
    Setup(#[source] nix::Error),
    /// `posix_spawn` failed (ENOENT, EACCES, ENOEXEC for the translator's path, …).
    #[error("cannot spawn {path}: {source}")]
    Spawn {
        /// The translator's path.
        path: String,
        /// The error from the exec in the child.
        #[source]
        source: nix::Error,
    },
    /// `pidfd_open` failed.
    #[error("pidfd_open({pid}): {source}")]
    PidFd {
        /// The child's pid.
        pid: i32,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// `waitpid` failed (ECHILD: something else in this process reaped the child).
    #[error("waitpid({pid}): {source}")]
    Wait {
        /// The child's pid.
        pid: i32,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

/// A descriptor number held by a throwaway close-on-exec socket until the spawn has happened.
#[derive(Debug)]
pub struct ReservedFd(OwnedFd);

impl ReservedFd {
    /// Reserves the lowest free descriptor number.
    pub fn new() -> Result<Self, SpawnError> {
        // socket2 opens with SOCK_CLOEXEC: the throwaway itself never reaches a child.
        let sock = Socket::new(Domain::UNIX, Type::DGRAM, None).map_err(SpawnError::Reserve)?;
        Ok(Self(sock.into()))
    }

    /// The reserved number: use it as a `dup2` target and on the child's command line.
    pub fn number(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Descriptors of this process (3 and up) that lack FD_CLOEXEC and are not `keep`: they would
/// leak into the child. Normally none; a supervisor started by a careless parent may have some.
fn inherited_descriptors(keep: &[RawFd]) -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut leaks = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        if fd <= 2 || keep.contains(&fd) {
            continue;
        }
        // SAFETY: F_GETFD only reads the descriptor's flags; an fd closed meanwhile (e.g. the
        // directory handle of read_dir) just yields -1/EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            leaks.push(fd);
        }
    }
    leaks
}

fn cstring(s: &[u8]) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul(String::from_utf8_lossy(s).into_owned()))
}

/// Spawns `path` with `argv[0] = argv0` and `args`, handing over each `(source, target)`
/// descriptor as number `target` (use [`ReservedFd::number`]). The child gets the supervisor's
/// environment, default signal dispositions, an empty signal mask and its own process group
/// (so a terminal's Ctrl-C reaches only the supervisor, which then stops children in order).
pub fn spawn_translator(
    path: &Path,
    argv0: &str,
    args: &[String],
    fds: &[(BorrowedFd<'_>, RawFd)],
) -> Result<Pid, SpawnError> {
    let targets: Vec<RawFd> = fds.iter().map(|(_, t)| *t).collect();
    for (i, (src, target)) in fds.iter().enumerate() {
        let dup_target = targets[..i].contains(target);
        let is_source = fds.iter().any(|(s, _)| s.as_raw_fd() == *target);
        if *target <= 2 || dup_target || is_source || src.as_raw_fd() == *target {
            return Err(SpawnError::BadTarget(*target));
        }
    }

    let mut actions = PosixSpawnFileActions::init().map_err(SpawnError::Setup)?;
    for (src, target) in fds {
        // dup2 onto a different number yields a descriptor without FD_CLOEXEC in the child,
        // replacing the (close-on-exec) throwaway that held the number.
        actions
            .add_dup2(src.as_raw_fd(), *target)
            .map_err(SpawnError::Setup)?;
    }
    for fd in inherited_descriptors(&targets) {
        tracing::warn!(
            fd,
            "descriptor without close-on-exec: closing it in the translator"
        );
        actions.add_close(fd).map_err(SpawnError::Setup)?;
    }

    let mut attr = PosixSpawnAttr::init().map_err(SpawnError::Setup)?;
    // Rust ignores SIGPIPE and that disposition survives exec: give the child defaults.
    attr.set_sigdefault(&SigSet::all())
        .map_err(SpawnError::Setup)?;
    attr.set_sigmask(&SigSet::empty())
        .map_err(SpawnError::Setup)?;
    attr.set_pgroup(Pid::from_raw(0))
        .map_err(SpawnError::Setup)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETPGROUP,
    )
    .map_err(SpawnError::Setup)?;

    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(cstring(argv0.as_bytes())?);
    for a in args {
        argv.push(cstring(a.as_bytes())?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(&kv)?);
    }

    posix_spawn(path, &actions, &attr, &argv, &envp).map_err(|source| SpawnError::Spawn {
        path: path.display().to_string(),
        source,
    })
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatusInfo {
    /// It called exit with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(Signal),
}

impl ExitStatusInfo {
    /// Whether this is the clean exit `clatd` makes on SIGTERM.
    pub fn is_clean(&self) -> bool {
        matches!(self, ExitStatusInfo::Exited(0))
    }
}

impl std::fmt::Display for ExitStatusInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatusInfo::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatusInfo::Signaled(sig) => write!(f, "killed by {}", sig.as_str()),
        }
    }
}

/// A pidfd for `pid`, registered with tokio: readable once the process has terminated.
fn open_pidfd(pid: Pid) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes (pid_t, unsigned int flags) and returns a new descriptor or -1;
    // no memory is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall succeeded, so `raw` is a new descriptor that nothing else owns.
    // pidfds are always close-on-exec.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    // SAFETY: `fd` is a valid open OwnedFd moved into the AsyncFd, which never replaces it,
    // so it stays open and the same descriptor for the AsyncFd's whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Resolves once our child `pid` has terminated, without reaping it (the [`ChildWatch`] that
/// owns it does), so a second observer can learn of the exit without polling.
pub async fn terminated(pid: Pid) -> std::io::Result<()> {
    let pidfd = open_pidfd(pid)?;
    let _ready = pidfd.readable().await?;
    Ok(())
}

/// Watches one child through a pidfd. Needs a tokio runtime with I/O enabled.
#[derive(Debug)]
pub struct ChildWatch {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    /// The status once reaped: the pid is gone after that, so later calls answer from here.
    status: Mutex<Option<ExitStatusInfo>>,
}

impl ChildWatch {
    /// Opens a pidfd for our child `pid`. Sound against pid reuse because only we reap it.
    pub fn new(pid: Pid) -> Result<Self, SpawnError> {
        let pidfd = open_pidfd(pid).map_err(|source| SpawnError::PidFd {
            pid: pid.as_raw(),
            source,
        })?;
        Ok(Self {
            pid,
            pidfd,
            status: Mutex::new(None),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn cached(&self) -> Option<ExitStatusInfo> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps the child if it has exited; `None` while it runs.
    pub fn try_reap(&self) -> Result<Option<ExitStatusInfo>, SpawnError> {
        if let Some(s) = self.cached() {
            return Ok(Some(s));
        }
        let status = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatusInfo::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatusInfo::Signaled(sig),
            Ok(_) => return Ok(None),
            Err(source) => {
                return Err(SpawnError::Wait {
                    pid: self.pid.as_raw(),
                    source,
                })
            }
        };
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        Ok(Some(status))
    }

    /// Waits (without polling) until the child has exited, reaps it and says how it ended.
    pub async fn exited(&self) -> Result<ExitStatusInfo, SpawnError> {
        loop {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            let mut guard = self
                .pidfd
                .readable()
                .await
                .map_err(|source| SpawnError::PidFd {
                    pid: self.pid.as_raw(),
                    source,
                })?;
            match self.try_reap()? {
                Some(s) => return Ok(s),
                // Readable but not yet reapable cannot last; clear and wait for the next edge.
                None => guard.clear_ready(),
            }
        }
    }

    fn signal(&self, sig: Signal) {
        if self.cached().is_some() {
            return;
        }
        // SAFETY: pidfd_send_signal(pidfd, sig, siginfo = NULL, flags = 0); the pidfd is open
        // for the lifetime of `self`, and a NULL siginfo means "as kill(2) would".
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            // ESRCH: it has exited already (a zombie awaiting reaping) — nothing to do.
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pid = self.pid.as_raw(), signal = sig.as_str(), %err, "cannot signal translator");
            }
        }
    }

    /// Asks the child to stop (SIGTERM).
    pub fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL; always reaps.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatusInfo, SpawnError> {
        self.terminate();
        match tokio::time::timeout(grace, self.exited()).await {
            Ok(result) => result,
            Err(_elapsed) => {
                tracing::warn!(
                    pid = self.pid.as_raw(),
                    ?grace,
                    "translator ignored SIGTERM: killing it"
                );
                self.signal(Signal::SIGKILL);
                self.exited().await
            }
        }
    }
}

/// Why the translator binary is refused (issue 9: `clatd_path` is executed as root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslatorPathError {
    /// The path cannot be examined.
    #[error("translator {path}: {error}")]
    Stat { path: String, error: String },
    /// Not a regular file.
    #[error("translator {path}: not a regular file")]
    NotAFile { path: String },
    /// The file or a directory on its way belongs to someone else than root.
    #[error("translator {path}: {what} {at} is owned by uid {uid}, not root")]
    NotRootOwned {
        path: String,
        what: &'static str,
        at: String,
        uid: u32,
    },
    /// The file or a directory on its way may be written by others.
    #[error("translator {path}: {what} {at} is writable by {who} (mode {mode:04o})")]
    Writable {
        path: String,
        what: &'static str,
        at: String,
        who: &'static str,
        mode: u32,
    },
}

/// What [`check_translator_path`] looks at for the file and each directory above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMeta {
    pub uid: u32,
    pub mode: u32,
    pub is_file: bool,
    pub is_dir: bool,
}

/// The rule (pure): the file is a regular file owned by root and writable by nobody but root
/// (neither group nor others); every directory from its own up to `/` is owned by root and not
/// writable by others (else someone could swap the file or a directory on the way) unless it
/// is sticky (like `/tmp`): there nobody but root may rename or remove the root-owned entry
/// below it, which the chain checks too. `chain` is the file first, then its directories
/// upwards.
pub fn check_translator_chain(
    path: &str,
    chain: &[(String, PathMeta)],
) -> Result<(), TranslatorPathError> {
    for (i, (at, m)) in chain.iter().enumerate() {
        let what = if i == 0 { "file" } else { "directory" };
        if i == 0 && !m.is_file {
            return Err(TranslatorPathError::NotAFile { path: path.into() });
        }
        if m.uid != 0 {
            return Err(TranslatorPathError::NotRootOwned {
                path: path.into(),
                what,
                at: at.clone(),
                uid: m.uid,
            });
        }
        let (bits, who) = if i == 0 {
            (0o022, "group or others")
        } else {
            (0o002, "others")
        };
        const STICKY: u32 = 0o1000;
        let sticky_dir = i > 0 && m.mode & STICKY != 0;
        if m.mode & bits != 0 && !sticky_dir {
            return Err(TranslatorPathError::Writable {
                path: path.into(),
                what,
                at: at.clone(),
                who,
                mode: m.mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// [`check_translator_chain`] on the file system: `path` with symbolic links resolved, then
/// each directory above it. Call it before each spawn of the translator; an error refuses
/// the CLAT with its message as the reason.
pub fn check_translator_path(path: &Path) -> Result<(), TranslatorPathError> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display().to_string();
    let stat_err = |e: std::io::Error| TranslatorPathError::Stat {
        path: shown.clone(),
        error: e.to_string(),
    };
    let real = std::fs::canonicalize(path).map_err(stat_err)?;
    let mut chain = Vec::new();
    let mut cur = Some(real.as_path());
    while let Some(p) = cur {
        let m = std::fs::metadata(p).map_err(stat_err)?;
        chain.push((
            p.display().to_string(),
            PathMeta {
                uid: m.uid(),
                mode: m.mode(),
                is_file: m.is_file(),
                is_dir: m.is_dir(),
            },
        ));
        cur = p.parent();
    }
    check_translator_chain(&shown, &chain)
}

/// The translator's command line after `argv[0]` (Android clatd's flags; README "The translator"), plus
/// `-P <our pid>` so that a translator whose supervisor died before it started exits at once,
/// and `-s CLAT_PREFIX` in stateless mode (only the bundled `clatd` knows it).
#[allow(clippy::too_many_arguments)]
pub fn translator_args(
    uplink: &str,
    prefix: &str,
    v4: std::net::Ipv4Addr,
    v6: std::net::Ipv6Addr,
    tun_fd: RawFd,
    fwmark: Option<u32>,
    clat_prefix: Option<&str>,
    extra: &[(&str, RawFd)],
) -> Vec<String> {
    let mut args = vec![
        "-i".to_owned(),
        uplink.to_owned(),
        "-p".to_owned(),
        prefix.to_owned(),
        "-4".to_owned(),
        v4.to_string(),
        "-6".to_owned(),
        v6.to_string(),
        "-t".to_owned(),
        tun_fd.to_string(),
    ];
    if let Some(mark) = fwmark {
        args.push("-m".to_owned());
        args.push(mark.to_string());
    }
    if let Some(p) = clat_prefix {
        args.push("-s".to_owned());
        args.push(p.to_owned());
    }
    for (flag, fd) in extra {
        args.push((*flag).to_owned());
        args.push(fd.to_string());
    }
    args.push("-P".to_owned());
    args.push(std::process::id().to_string());
    args
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::fd::AsFd;

    #[test]
    fn command_line_has_the_android_flags_in_order() {
        let args = translator_args(
            "eth0",
            "2001:db8:64::/96",
            Ipv4Addr::new(192, 0, 0, 4),
            "2001:db8:1::464".parse::<Ipv6Addr>().unwrap(),
            9,
            Some(0x1234),
            None,
            &[("-r", 10), ("-w", 11)],
        );
        assert_eq!(
            args.join(" "),
            format!(
                "-i eth0 -p 2001:db8:64::/96 -4 192.0.0.4 -6 2001:db8:1::464 -t 9 -m 4660 -r 10 -w 11 -P {}",
                std::process::id()
            )
        );
        let plain = translator_args(
            "e",
            "64:ff9b::/96",
            Ipv4Addr::new(192, 0, 0, 4),
            Ipv6Addr::LOCALHOST,
            3,
            None,
            None,
            &[],
        );
        assert!(!plain.contains(&"-m".to_owned()));
        assert!(!plain.contains(&"-s".to_owned()));
        let stateless = translator_args(
            "e",
            "64:ff9b::/96",
            Ipv4Addr::new(192, 0, 0, 4),
            Ipv6Addr::LOCALHOST,
            3,
            None,
            Some("2001:db8:1:ff00::/64"),
            &[("-r", 4)],
        );
        assert_eq!(
            stateless.join(" "),
            format!(
                "-i e -p 64:ff9b::/96 -4 192.0.0.4 -6 ::1 -t 3 -s 2001:db8:1:ff00::/64 -r 4 -P {}",
                std::process::id()
            )
        );
    }

    fn meta(uid: u32, mode: u32, is_file: bool) -> PathMeta {
        PathMeta {
            uid,
            mode,
            is_file,
            is_dir: !is_file,
        }
    }

    #[test]
    fn the_translator_path_rule() {
        let chain = |file: PathMeta, dir: PathMeta| {
            vec![
                ("/usr/sbin/clatd".to_owned(), file),
                ("/usr/sbin".to_owned(), dir),
                ("/usr".to_owned(), meta(0, 0o40755, false)),
                ("/".to_owned(), meta(0, 0o40755, false)),
            ]
        };
        let ok_dir = meta(0, 0o40755, false);
        let p = "/usr/sbin/clatd";
        assert_eq!(
            check_translator_chain(p, &chain(meta(0, 0o100755, true), ok_dir)),
            Ok(())
        );
        // Group-writable root-owned directory (e.g. /usr/local with group staff) is allowed.
        assert_eq!(
            check_translator_chain(p, &chain(meta(0, 0o100755, true), meta(0, 0o42775, false))),
            Ok(())
        );
        let e = check_translator_chain(p, &chain(meta(1000, 0o100755, true), ok_dir)).unwrap_err();
        assert!(e.to_string().contains("owned by uid 1000, not root"), "{e}");
        let e = check_translator_chain(p, &chain(meta(0, 0o100775, true), ok_dir)).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        let e = check_translator_chain(p, &chain(meta(0, 0o100757, true), ok_dir)).unwrap_err();
        assert!(e.to_string().contains("mode 0757"), "{e}");
        // A sticky world-writable directory (a checkout under /tmp): others cannot rename or
        // remove root's entries in it, so it is allowed; without the sticky bit it is not.
        assert_eq!(
            check_translator_chain(p, &chain(meta(0, 0o100755, true), meta(0, 0o41777, false))),
            Ok(())
        );
        let e = check_translator_chain(p, &chain(meta(0, 0o100755, true), meta(0, 0o40777, false)))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("directory /usr/sbin is writable by others"),
            "{e}"
        );
        let e = check_translator_chain(p, &chain(meta(0, 0o100755, true), meta(7, 0o40755, false)))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("directory /usr/sbin is owned by uid 7"),
            "{e}"
        );
        let e = check_translator_chain(p, &chain(meta(0, 0o40755, false), ok_dir)).unwrap_err();
        assert_eq!(e, TranslatorPathError::NotAFile { path: p.into() });
    }

    #[test]
    fn the_translator_path_on_the_file_system() {
        // /bin/sh: root's, in root's directories.
        assert_eq!(check_translator_path(Path::new("/bin/sh")), Ok(()));
        let e = check_translator_path(Path::new("/nonexistent/clatd")).unwrap_err();
        assert!(matches!(e, TranslatorPathError::Stat { .. }), "{e}");
        // Anything under a world-writable /tmp is refused.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("clatd");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_translator_path(&f).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_translator_path(&f).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
    }

    #[test]
    fn reserved_numbers_are_distinct_and_close_on_exec() {
        let a = ReservedFd::new().unwrap();
        let b = ReservedFd::new().unwrap();
        assert_ne!(a.number(), b.number());
        assert!(a.number() > 2);
        // SAFETY: F_GETFD on our own open descriptor.
        let flags = unsafe { libc::fcntl(a.number(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn bad_targets_are_refused() {
        let r = ReservedFd::new().unwrap();
        let src = ReservedFd::new().unwrap();
        // SAFETY: `src` outlives the borrow.
        let b = unsafe { BorrowedFd::borrow_raw(src.number()) };
        let err = spawn_translator(Path::new("/bin/true"), "x", &[], &[(b, 1)]).unwrap_err();
        assert!(matches!(err, SpawnError::BadTarget(1)));
        let err = spawn_translator(
            Path::new("/bin/true"),
            "x",
            &[],
            &[(b, r.number()), (b, r.number())],
        )
        .unwrap_err();
        assert!(matches!(err, SpawnError::BadTarget(_)));
        let err =
            spawn_translator(Path::new("/bin/true"), "x", &[], &[(b, src.number())]).unwrap_err();
        assert!(matches!(err, SpawnError::BadTarget(_)));
    }

    #[test]
    fn a_missing_program_is_an_error_from_spawn() {
        let err =
            spawn_translator(Path::new("/nonexistent/clatd"), "clatd-x", &[], &[]).unwrap_err();
        assert!(
            matches!(
                err,
                SpawnError::Spawn {
                    source: nix::Error::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn child_exit_is_seen_through_the_pidfd() {
        let pid = spawn_translator(
            Path::new("/bin/sh"),
            "sh",
            &["-c".into(), "exit 7".into()],
            &[],
        )
        .unwrap();
        let watch = ChildWatch::new(pid).unwrap();
        assert_eq!(watch.exited().await.unwrap(), ExitStatusInfo::Exited(7));
        // Answered from the cache once reaped.
        assert_eq!(watch.exited().await.unwrap(), ExitStatusInfo::Exited(7));
    }

    #[tokio::test]
    async fn stop_terminates_then_kills() {
        let pid =
            spawn_translator(Path::new("/bin/sleep"), "clatd-test", &["1000".into()], &[]).unwrap();
        let watch = ChildWatch::new(pid).unwrap();
        assert_eq!(watch.try_reap().unwrap(), None);
        let status = watch.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, ExitStatusInfo::Signaled(Signal::SIGTERM));

        // A child that ignores SIGTERM gets SIGKILL after the grace period.
        let pid = spawn_translator(
            Path::new("/bin/sh"),
            "sh",
            &[
                "-c".into(),
                "trap '' TERM; while :; do sleep 1; done".into(),
            ],
            &[],
        )
        .unwrap();
        let watch = ChildWatch::new(pid).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // let the trap be installed
        let status = watch.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(status, ExitStatusInfo::Signaled(Signal::SIGKILL));
    }

    /// The descriptor numbers a live process holds, read from outside it.
    /// Waits until the spawned `/bin/sleep` is asleep in its nanosleep. posix_spawn returns
    /// before the exec has finished (close-on-exec descriptors still open), and the program's
    /// dynamic loader then opens its libraries as descriptor 3 for a moment: reading /proc
    /// before the child sleeps lists descriptors that are about to go (seen in CI).
    fn wait_exec(pid: Pid) {
        for _ in 0..500 {
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            if wchan.contains("nanosleep") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{pid} did not reach its nanosleep");
    }

    pub(crate) fn open_descriptors(pid: Pid) -> Vec<RawFd> {
        wait_exec(pid);
        let mut fds: Vec<RawFd> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        fds.sort();
        fds
    }

    #[tokio::test]
    async fn only_the_passed_descriptor_is_inherited() {
        let payload: OwnedFd = Socket::new(Domain::UNIX, Type::DGRAM, None).unwrap().into();
        let target = ReservedFd::new().unwrap();
        let n = target.number();
        // (Read from outside: a shell listing its own descriptors would add its own, e.g. dash's
        // saved descriptors at 10 and up.)
        let pid = spawn_translator(
            Path::new("/bin/sleep"),
            "clatd-test",
            &["1000".into()],
            &[(payload.as_fd(), n)],
        )
        .unwrap();
        drop(target);
        let watch = ChildWatch::new(pid).unwrap();
        assert_eq!(open_descriptors(pid), vec![0, 1, 2, n]);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(cmdline, b"clatd-test\x001000\x00");
        watch.stop(Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn a_descriptor_without_cloexec_does_not_leak() {
        let leaky: OwnedFd = Socket::new(Domain::UNIX, Type::DGRAM, None).unwrap().into();
        assert_eq!(
            // SAFETY: clearing FD_CLOEXEC on our own open descriptor.
            unsafe { libc::fcntl(leaky.as_raw_fd(), libc::F_SETFD, 0) },
            0
        );
        let pid =
            spawn_translator(Path::new("/bin/sleep"), "clatd-test", &["1000".into()], &[]).unwrap();
        let watch = ChildWatch::new(pid).unwrap();
        assert_eq!(open_descriptors(pid), vec![0, 1, 2]);
        watch.stop(Duration::from_secs(5)).await.unwrap();
    }
}
