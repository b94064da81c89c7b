//! Checks on the tun descriptor `clatd` inherits: open, a character device, a tun (not tap)
//! without packet information headers, and whether packets carry a `virtio_net_hdr`
//! (`IFF_VNET_HDR`, and of which size).

use std::io;
use std::mem;
use std::os::fd::RawFd;

/// Why an inherited descriptor is not a usable tun.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// `fcntl(F_GETFD)` says the number is not open.
    #[error("not an open descriptor")]
    NotOpen,
    /// `fstat` shows something other than a character device.
    #[error("not a tun descriptor (not a character device)")]
    NotCharDevice,
    /// `TUNGETIFF` fails: a character device, but not an attached tun.
    #[error("not a tun descriptor (TUNGETIFF: {0})")]
    NotTun(io::Error),
    /// The device is a tap (Ethernet frames), not a tun (IP packets).
    #[error("{0} is a tap device; clatd needs IFF_TUN")]
    Tap(String),
    /// Packets would carry a 4-byte packet information header.
    #[error("{0} was set up without IFF_NO_PI")]
    PacketInfo(String),
    /// `IFF_VNET_HDR` is set but the header size is unusable.
    #[error("{name}: virtio header size {len} (TUNGETVNETHDRSZ) is smaller than 10")]
    VnetHdrLen {
        /// The interface name.
        name: String,
        /// What the kernel reported.
        len: i32,
    },
    /// fstat/fcntl failed for another reason.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

use crate::tunif::{ifreq, ifreq_name, IFF_VNET_HDR, TUNGETVNETHDRSZ};

/// What `TUNGETIFF` reports about a tun descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunInfo {
    /// The interface name, e.g. `v4-eth0`.
    pub name: String,
    /// The `IFF_*` flags of the tun.
    pub flags: i32,
    /// With `IFF_VNET_HDR`: the size of the `virtio_net_hdr` before every packet read from
    /// and written to the tun (10, or 12 with `num_buffers`).
    pub vnet_hdr_len: Option<usize>,
}

/// Check that `fd` is an open tun descriptor set up with `IFF_TUN | IFF_NO_PI`, and make it
/// non-blocking. Takes a raw number because the number comes from the command line and may
/// not be open at all.
pub fn check_tun(fd: RawFd) -> Result<TunInfo, TunError> {
    // SAFETY: F_GETFD takes no pointer; an unopened number yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(TunError::NotOpen);
    }
    // SAFETY: `st` is a live, writable stat buffer.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: `st` is valid for writes of a `struct stat`.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(TunError::Sys {
            what: "fstat",
            source: io::Error::last_os_error(),
        });
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
        return Err(TunError::NotCharDevice);
    }
    let mut ifr = ifreq("");
    // SAFETY: TUNGETIFF writes one `struct ifreq` into `ifr`, which is live and writable.
    if unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut ifr) } != 0 {
        return Err(TunError::NotTun(io::Error::last_os_error()));
    }
    let name = ifreq_name(&ifr);
    // SAFETY: TUNGETIFF fills the flags member of the union.
    let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
    if flags & libc::IFF_TAP != 0 || flags & libc::IFF_TUN == 0 {
        return Err(TunError::Tap(name));
    }
    if flags & libc::IFF_NO_PI == 0 {
        return Err(TunError::PacketInfo(name));
    }
    let vnet_hdr_len = if flags & IFF_VNET_HDR != 0 {
        let mut len: libc::c_int = 0;
        // SAFETY: TUNGETVNETHDRSZ writes one int into `len`, which is live and writable.
        if unsafe { libc::ioctl(fd, TUNGETVNETHDRSZ, &mut len as *mut libc::c_int) } != 0 {
            return Err(TunError::Sys {
                what: "TUNGETVNETHDRSZ",
                source: io::Error::last_os_error(),
            });
        }
        match usize::try_from(len) {
            Ok(l) if l >= crate::xlat::VnetHdr::LEN => Some(l),
            _ => return Err(TunError::VnetHdrLen { name, len }),
        }
    } else {
        None
    };
    set_nonblocking(fd).map_err(|source| TunError::Sys {
        what: "fcntl(O_NONBLOCK)",
        source,
    })?;
    Ok(TunInfo {
        name,
        flags,
        vnet_hdr_len,
    })
}

/// Set `O_NONBLOCK` on an open descriptor.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    if fl & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL takes an int argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set `FD_CLOEXEC` on an open descriptor (inherited descriptors must not leak further).
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD takes an int argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no pointer.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}
