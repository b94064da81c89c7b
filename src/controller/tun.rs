//! The CLAT's tun device: `/dev/net/tun` opened close-on-exec and bound to a name with
//! `TUNSETIFF` (`IFF_TUN | IFF_NO_PI`: bare IPv4/IPv6 packets, no packet-information header).
//!
//! The device is not persistent: it exists exactly as long as some descriptor for it is open.
//! The supervisor keeps one (so the device survives translator restarts) and the translator gets
//! a duplicate; when both are gone, the kernel removes the device with its addresses and routes.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Longest interface name the kernel accepts (IFNAMSIZ is 16 with the terminating NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// `TUNSETIFF` is `_IOW('T', 202, int)`; the kernel reads a `struct ifreq` through the pointer
/// despite the `int` in the encoding.
const TUNSETIFF: libc::c_ulong =
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;

/// Why the tun device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name does not fit IFNAMSIZ, is empty, or contains a NUL or `/`.
    #[error("`{0}` is not a valid interface name (1..=15 bytes, no NUL, `/` or whitespace)")]
    BadName(String),
    /// `/dev/net/tun` could not be opened (module missing, no permission).
    #[error("cannot open /dev/net/tun: {0}")]
    Open(#[source] std::io::Error),
    /// The kernel refused `TUNSETIFF` (EBUSY: a tun of that name is attached elsewhere; EINVAL:
    /// a link of another kind has that name; EPERM: no CAP_NET_ADMIN).
    #[error("TUNSETIFF {name}: {source}")]
    SetIff {
        /// The requested interface name.
        name: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The device was created but its index could not be read back.
    #[error("cannot read the index of {name}: {source}")]
    Index {
        /// The interface name.
        name: String,
        /// The error from `if_nametoindex`.
        #[source]
        source: nix::Error,
    },
}

/// An open tun device: its descriptor (owned by the supervisor) and its interface index.
#[derive(Debug)]
pub struct TunDevice {
    /// The descriptor: dropping it (and every duplicate) removes the device.
    pub fd: OwnedFd,
    /// The kernel's interface index of the new device.
    pub ifindex: u32,
}

/// Whether `name` is acceptable to the kernel as an interface name (`dev_valid_name`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// Creates (or, for a persistent tun left by someone else, attaches to) the tun device `name`.
pub fn open_tun(name: &str) -> Result<TunDevice, TunError> {
    if !valid_name(name) {
        return Err(TunError::BadName(name.to_owned()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        // std adds O_CLOEXEC itself; O_NONBLOCK because the translator polls the descriptor.
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TunError::Open)?;
    let fd = OwnedFd::from(file);

    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The name is at most 15 bytes (checked above), so the 16th byte stays NUL.
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` a valid, initialised `ifreq`
    // that outlives the call; TUNSETIFF reads it and writes the final name back into it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(TunError::SetIff {
            name: name.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    let cname = CString::new(name).map_err(|_| TunError::BadName(name.to_owned()))?;
    let ifindex =
        nix::net::if_::if_nametoindex(cname.as_c_str()).map_err(|source| TunError::Index {
            name: name.to_owned(),
            source,
        })?;
    Ok(TunDevice { fd, ifindex })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_the_kernel_does() {
        assert!(valid_name("v4-eth0"));
        assert!(valid_name("v4-abcdefghijkl")); // 15 bytes
        assert!(!valid_name("v4-abcdefghijklm")); // 16 bytes
        assert!(!valid_name(""));
        assert!(!valid_name("v4 eth0"));
        assert!(!valid_name("v4/eth0"));
        assert!(!valid_name(".."));
    }

    #[test]
    fn tunsetiff_has_the_kernel_value() {
        // From <linux/if_tun.h>: #define TUNSETIFF _IOW('T', 202, int) == 0x400454ca.
        assert_eq!(TUNSETIFF, 0x4004_54ca);
    }

    #[test]
    fn a_bad_name_is_refused_before_any_syscall() {
        assert!(matches!(
            open_tun("a-name-that-is-too-long"),
            Err(TunError::BadName(_))
        ));
    }
}
