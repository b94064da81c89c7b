//! `clatd`'s privilege drop, done by itself once every descriptor it needs is open and before it
//! reads its first packet (the order Android's clatd and netd follow):
//!
//! 1. (as root) every capability out of the bounding set, the ambient set cleared, no
//!    supplementary groups, then `setresgid`/`setresuid` to [`DEFAULT_USER`] (a system user the
//!    package creates), else [`FALLBACK_USER`], or the user named with `-u`;
//! 2. effective, permitted and inheritable capabilities cleared (`capset`), also when started
//!    without root, `PR_SET_NO_NEW_PRIVS`, not dumpable (other processes of the same user cannot
//!    ptrace it);
//! 3. a seccomp allow-list ([`ALLOWED_SYSCALLS`]): any other system call kills the process
//!    (`SECCOMP_RET_KILL_PROCESS`; the supervisor sees "killed by SIGSYS" and restarts it with
//!    back-off). Killing rather than `EPERM` means a compromised translator cannot probe.
//!
//! The syscalls in the list were taken from `strace -f` of the real translator in the netns
//! tests (packets both ways, GSO sends, rtnetlink next-hop lookups, fragments, ICMP errors,
//! SIGTERM) plus what the Rust runtime needs to allocate memory and exit.

use std::io;

/// The dedicated system user the package creates for the translator.
pub const DEFAULT_USER: &str = "autoclat-clatd";
/// Used when [`DEFAULT_USER`] does not exist.
pub const FALLBACK_USER: &str = "nobody";

/// Why the sandbox could not be set up. The translator refuses to run then.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The user to run as does not exist.
    #[error("user {0:?} does not exist")]
    NoUser(String),
    /// Neither the dedicated user nor the fallback exists.
    #[error("neither user {DEFAULT_USER:?} nor {FALLBACK_USER:?} exists: name one with -u")]
    NoDefaultUser,
    /// Looking the user up failed.
    #[error("cannot look up user {user:?}: {error}")]
    Lookup { user: String, error: io::Error },
    /// The user to run as is root.
    #[error("user {0:?} has uid 0: the translator must not run as root")]
    RootUser(String),
    /// A system call of the drop failed.
    #[error("{what}: {error}")]
    Sys {
        what: &'static str,
        error: io::Error,
    },
    /// After the drop, root could be regained.
    #[error("privileges could be regained after the drop")]
    NotDropped,
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// Whom to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user to run as: `requested` (from `-u`), else [`DEFAULT_USER`] if it exists, else
/// [`FALLBACK_USER`]. Call it before the drop (it reads /etc/passwd through NSS).
pub fn resolve_user(requested: Option<&str>) -> Result<Identity, SandboxError> {
    let lookup = |name: &str| -> Result<Option<Identity>, SandboxError> {
        nix::unistd::User::from_name(name)
            .map_err(|e| SandboxError::Lookup {
                user: name.to_owned(),
                error: e.into(),
            })
            .map(|u| {
                u.map(|u| Identity {
                    name: name.to_owned(),
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                })
            })
    };
    let id = match requested {
        Some(name) => lookup(name)?.ok_or_else(|| SandboxError::NoUser(name.to_owned()))?,
        None => match lookup(DEFAULT_USER)? {
            Some(id) => id,
            None => lookup(FALLBACK_USER)?.ok_or(SandboxError::NoDefaultUser)?,
        },
    };
    if id.uid == 0 {
        return Err(SandboxError::RootUser(id.name));
    }
    Ok(id)
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |error| SandboxError::Sys { what, error }
}

fn check(rc: libc::c_int, what: &'static str) -> Result<(), SandboxError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(sys(what)(io::Error::last_os_error()))
    }
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Steps 1 and 2 of the module doc. `identity` is used only when running as root.
pub fn drop_privileges(identity: &Identity) -> Result<(), SandboxError> {
    let root = nix::unistd::geteuid().is_root();
    if root {
        for cap in 0..=last_cap() {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(sys("prctl(PR_CAPBSET_DROP)")(io::Error::last_os_error()));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(rc, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")?;
    if root {
        // SAFETY: an empty group list: the pointer is not read for a size of 0.
        let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
        check(rc, "setgroups([])")?;
        let (u, g) = (identity.uid, identity.gid);
        // SAFETY: plain id arguments.
        check(unsafe { libc::setresgid(g, g, g) }, "setresgid")?;
        // SAFETY: plain id arguments.
        check(unsafe { libc::setresuid(u, u, u) }, "setresuid")?;
    }
    clear_capabilities()?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc, "prctl(PR_SET_NO_NEW_PRIVS)")?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    check(rc, "prctl(PR_SET_DUMPABLE)")?;
    if root {
        // SAFETY: plain id argument; it must fail now.
        if unsafe { libc::setuid(0) } == 0 {
            return Err(SandboxError::NotDropped);
        }
    }
    Ok(())
}

/// Effective, permitted and inheritable sets to zero.
fn clear_capabilities() -> Result<(), SandboxError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    /// `_LINUX_CAPABILITY_VERSION_3`: two `Data` (64 capabilities).
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(header, data) with a version-3 header and the two data structs it reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(sys("capset")(io::Error::last_os_error()));
    }
    Ok(())
}

/// The system calls the translator makes once the sandbox is on (x86_64 and aarch64 names).
pub const ALLOWED_SYSCALLS: &[libc::c_long] = &[
    // The packet loop: tun, packet and raw sockets, signalfd, rtnetlink next-hop lookups.
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_recvmmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_sendmmsg,
    libc::SYS_ppoll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    // Time (normally the vDSO; the fallback is a syscall).
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    // Locks and signals of the runtime.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    // Exit.
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// `SOL_PACKET` / `PACKET_AUXDATA`: the one socket option the loop sets (on the receive socket,
/// at its start); every other `setsockopt` (`SO_ATTACH_FILTER` above all) stays forbidden.
const SOL_PACKET: u64 = 263;
const PACKET_AUXDATA: u64 = 8;

/// The filter: [`ALLOWED_SYSCALLS`] unconditionally, `setsockopt(_, SOL_PACKET,
/// PACKET_AUXDATA, ..)`, `fcntl` with `F_GETFD`/`F_SETFD`/`F_GETFL`/`F_SETFL`; anything else
/// kills the process.
pub fn filter() -> Result<seccompiler::BpfProgram, SandboxError> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let err = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err(&format!("{e:?}")))?;
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED_SYSCALLS.iter().map(|&n| (n, vec![])).collect();
    let cond = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .map_err(|e| err(&e))
    };
    let auxdata = SeccompRule::new(vec![cond(1, SOL_PACKET)?, cond(2, PACKET_AUXDATA)?])
        .map_err(|e| err(&e))?;
    rules.insert(libc::SYS_setsockopt, vec![auxdata]);
    // The loop checks its descriptors' flags at start; no F_SETOWN/F_SETSIG (signals to
    // others), no locks.
    let mut fcntl = Vec::new();
    for cmd in [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL] {
        fcntl.push(SeccompRule::new(vec![cond(1, cmd as u64)?]).map_err(|e| err(&e))?);
    }
    rules.insert(libc::SYS_fcntl, fcntl);
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| err(&e))?;
    f.try_into().map_err(|e: seccompiler::BackendError| err(&e))
}

/// Step 3: install the allow-list on every thread. Needs `PR_SET_NO_NEW_PRIVS` (set by
/// [`drop_privileges`]) when not privileged.
pub fn install_seccomp() -> Result<(), SandboxError> {
    seccompiler::apply_filter_all_threads(&filter()?)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_user_is_found_and_root_is_refused() {
        // Every Debian system has nobody; the dedicated user may be missing here.
        let id = resolve_user(Some(FALLBACK_USER)).unwrap();
        assert_ne!(id.uid, 0);
        let default = resolve_user(None).unwrap();
        assert!(default.name == DEFAULT_USER || default.name == FALLBACK_USER);
        assert!(matches!(
            resolve_user(Some("root")),
            Err(SandboxError::RootUser(_))
        ));
        assert!(matches!(
            resolve_user(Some("no-such-user-autoclat")),
            Err(SandboxError::NoUser(_))
        ));
    }

    #[test]
    fn the_allow_list_has_no_duplicates_and_nothing_that_opens_or_executes() {
        let mut v = ALLOWED_SYSCALLS.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), ALLOWED_SYSCALLS.len());
        for forbidden in [
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_execve,
            libc::SYS_setsockopt,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_ioctl,
            libc::SYS_setuid,
        ] {
            assert!(!ALLOWED_SYSCALLS.contains(&forbidden), "{forbidden}");
        }
    }

    #[test]
    fn the_filter_compiles_for_this_architecture() {
        let p = filter().unwrap();
        assert!(p.len() > ALLOWED_SYSCALLS.len());
    }

    /// Re-runs one ignored test of this binary in a child process.
    fn child(test: &str, what: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AUTOCLAT_TEST_SECCOMP", what)
            .output()
            .unwrap()
    }

    #[test]
    fn a_syscall_outside_the_list_kills_the_process() {
        use std::os::unix::process::ExitStatusExt;
        for what in ["socket", "attach"] {
            let out = child("translator::sandbox::tests::child_under_seccomp", what);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // It got as far as the forbidden call, and died of it (not of a panic).
            assert!(stdout.contains("filter on"), "{what}: {stdout}");
            assert!(!stdout.contains("survived"), "{what}: {stdout}");
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGSYS),
                "{what}: {:?}",
                out.status
            );
            if what == "attach" {
                assert!(stdout.contains("auxdata allowed"), "{stdout}");
            }
        }
    }

    /// Run by the test above in its own process: the filter on, `setsockopt(SOL_PACKET,
    /// PACKET_AUXDATA)` allowed, then `socket()` or a filter change kills.
    #[test]
    #[ignore = "a child of a_syscall_outside_the_list_kills_the_process"]
    fn child_under_seccomp() {
        let what = std::env::var("AUTOCLAT_TEST_SECCOMP").unwrap();
        // SAFETY: plain system call without pointers.
        let udp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(udp >= 0);
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(rc, 0);
        install_seccomp().unwrap();
        println!("filter on");
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&one as *const libc::c_int).cast::<libc::c_void>();
        let rc = if what == "socket" {
            // SAFETY: plain system call without pointers; the filter must kill us here.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) }
        } else {
            // SAFETY: `one` is a live int of `len` bytes. Allowed by the filter (the kernel
            // answers ENOPROTOOPT on a UDP socket).
            unsafe { libc::setsockopt(udp, 263, 8, p, len) };
            println!("auxdata allowed");
            // SAFETY: as above; a filter change (SOL_SOCKET level) must kill us here.
            unsafe { libc::setsockopt(udp, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, p, len) }
        };
        println!("survived with {rc}");
    }
}
