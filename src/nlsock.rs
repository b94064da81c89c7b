//! A raw netlink socket (thin I/O edge): the one place that opens one, subscribes it to a
//! multicast group, sends a request to the kernel and receives a datagram. The messages are
//! built and walked by [`crate::nlmsg`] (pure). Users: the nf_tables requests ([`crate::nft`]),
//! router mode's change notices (`watch::routerwatch`) and the translator's next-hop lookups
//! (`translator::neigh`).

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::c_int;

/// A netlink socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct NlSocket(OwnedFd);

/// `setsockopt` with a plain value.
fn setsockopt<T>(fd: BorrowedFd<'_>, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size passed, `fd` is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl NlSocket {
    /// A socket for netlink `protocol`: blocking, with receives that give up after `timeout`
    /// (a `WouldBlock` error); non-blocking without one.
    pub fn open(protocol: c_int, timeout: Option<libc::timeval>) -> io::Result<Self> {
        let nonblock = if timeout.is_none() {
            libc::SOCK_NONBLOCK
        } else {
            0
        };
        // SAFETY: plain system call without pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | nonblock,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
        let sock = Self(unsafe { OwnedFd::from_raw_fd(raw) });
        if let Some(tv) = timeout {
            setsockopt(sock.as_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        }
        Ok(sock)
    }

    /// Sets a socket option of `level` (best-effort ones are the caller's to ignore).
    pub fn set_option<T>(&self, level: c_int, name: c_int, value: &T) -> io::Result<()> {
        setsockopt(self.as_fd(), level, name, value)
    }

    /// Binds (the kernel picks the port id: an unbound socket has id 0, which the kernel's own
    /// broadcasts skip) and joins multicast `group`.
    pub fn subscribe(&self, group: u32) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; all-zero (pid 0: the kernel assigns one) is
        // valid.
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a live sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                self.0.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.set_option(libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, &group)
    }

    /// Sends `bytes` (one or more netlink messages) to the kernel.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; all-zero is the kernel's address.
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` and `sa` are live for the call and their lengths are passed.
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram into `buf` (interrupted calls are retried); its length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is a live, writable buffer of its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n.unsigned_abs());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsFd for NlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
