//! One daemon per network namespace.
//!
//! The lock is an abstract Unix socket named [`LOCK_NAME`] (`@autoclat-lock` in `ss -xl` and
//! `/proc/net/unix`). Abstract socket names belong to the network namespace, so a second daemon
//! in the same namespace cannot bind it, while daemons in other namespaces (containers, parallel
//! tests) each have their own. The kernel releases the name when the socket is closed, also
//! when the daemon is killed: there is no stale lock to clean up. The socket is close-on-exec,
//! so the translators never hold it. [`crate::controller::leftovers`] uses it to recognise a
//! live daemon.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The abstract name of the lock (without the leading NUL byte).
pub const LOCK_NAME: &str = "autoclat-lock";

/// Held for as long as the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _socket: UnixDatagram,
    name: String,
}

impl InstanceLock {
    /// The abstract name held, as `ss` shows it (`@autoclat-lock`).
    pub fn name(&self) -> String {
        format!("@{}", self.name)
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another daemon holds it.
    #[error(
        "another autoclat daemon runs in this network namespace: it holds the lock @{name} \
         (see `ss -xlp | grep {name}`); nothing was changed"
    )]
    Held { name: String },
    /// The socket could not be created or bound for another reason.
    #[error("cannot take the single-instance lock @{name}: {error}")]
    Socket { name: String, error: std::io::Error },
}

/// Take the per-network-namespace lock. Call it first, before touching anything.
pub fn acquire() -> Result<InstanceLock, InstanceError> {
    acquire_named(LOCK_NAME)
}

/// [`acquire`] with another name (tests use unique names so they never meet a real daemon).
pub fn acquire_named(name: &str) -> Result<InstanceLock, InstanceError> {
    let err = |error| InstanceError::Socket {
        name: name.to_owned(),
        error,
    };
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?;
    match UnixDatagram::bind_addr(&addr) {
        Ok(socket) => Ok(InstanceLock {
            _socket: socket,
            name: name.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(InstanceError::Held {
            name: name.to_owned(),
        }),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> String {
        format!("autoclat-test-{tag}-{}", std::process::id())
    }

    #[test]
    fn a_second_acquire_fails_until_the_first_is_dropped() {
        let name = unique("twice");
        let first = acquire_named(&name).unwrap();
        assert_eq!(first.name(), format!("@{name}"));
        let err = acquire_named(&name).unwrap_err();
        assert!(matches!(err, InstanceError::Held { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("@{name}")), "{msg}");
        assert!(msg.contains("another autoclat daemon"), "{msg}");
        drop(first);
        let again = acquire_named(&name).unwrap();
        drop(again);
    }

    #[test]
    fn the_lock_is_close_on_exec() {
        use std::os::fd::AsRawFd;
        let lock = acquire_named(&unique("cloexec")).unwrap();
        // SAFETY: F_GETFD on our own open descriptor.
        let flags = unsafe { libc::fcntl(lock._socket.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn another_network_namespace_has_its_own_lock() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let name = unique("netns");
        let _here = acquire_named(&name).unwrap();
        let n = name.clone();
        // unshare(CLONE_NEWNET) moves only this thread into a new, empty namespace.
        let there = std::thread::spawn(move || {
            // SAFETY: unshare takes flags only; it affects this (short-lived) thread alone.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            acquire_named(&n).map(drop).map_err(|e| e.to_string())
        })
        .join()
        .unwrap();
        assert_eq!(there, Ok(()));
        assert!(acquire_named(&name).is_err());
    }
}
