//! The CLAT's tun device: `/dev/net/tun` opened close-on-exec and bound to a name with
//! `TUNSETIFF` (`IFF_TUN | IFF_NO_PI | IFF_VNET_HDR`: IPv4/IPv6 packets without a
//! packet-information header, each after a 10-byte `struct virtio_net_hdr`).
//!
//! The virtio header lets the host hand the translator checksum-offloaded 64 KiB TCP
//! super-packets (`TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`): one read and one
//! translation per 64 KiB instead of per 1500 bytes, and no segmentation or checksumming in
//! the sending host's TCP stack. `clatd` detects the header with `TUNGETIFF` and works without
//! it too. The device also gets a longer transmit queue (bursts of the host's TCP must not
//! find it full while `clatd` is busy) and IPv6 disabled (the host would send router
//! solicitations and MLD reports into it, which `clatd` only has to skip).
//!
//! The device is not persistent: it exists exactly as long as some descriptor for it is open.
//! The supervisor keeps one (so the device survives translator restarts) and the translator gets
//! a duplicate; when both are gone, the kernel removes the device with its addresses and routes.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

pub use crate::tunif::MAX_NAME_LEN;
use crate::tunif::{
    ifreq, IFF_VNET_HDR, TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ, TUN_F_CSUM, TUN_F_TSO4,
    TUN_F_TSO6,
};

/// `sizeof(struct virtio_net_hdr)`: the header without `num_buffers`.
pub const VNET_HDR_LEN: libc::c_int = 10;
/// Transmit queue length of the tun: the default 500 overflows under a fast TCP sender.
pub const TX_QUEUE_LEN: libc::c_int = 5000;

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
    /// The kernel accepted `TUNSETOFFLOAD`: the translator gets checksum-offloaded TCP
    /// super-packets (it gets the virtio header either way).
    pub offload: bool,
}

/// Whether the kernel accepts `c` in an interface name (`dev_valid_name`: no NUL, `/`, `:` or
/// whitespace). The one rule for names in the project: the tun name shortening uses it too.
pub fn valid_name_char(c: char) -> bool {
    c != '\0' && c != '/' && c != ':' && !c.is_whitespace()
}

/// Whether `name` is acceptable to the kernel as an interface name (`dev_valid_name`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name.chars().all(valid_name_char)
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

    // The name is at most 15 bytes (checked above), so the 16th byte stays NUL.
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | IFF_VNET_HDR) as libc::c_short;
    // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` a valid, initialised `ifreq`
    // that outlives the call; TUNSETIFF reads it and writes the final name back into it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut libc::ifreq) };
    if rc < 0 {
        return Err(TunError::SetIff {
            name: name.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    // 10 is the kernel's default; say it, so that nobody's earlier TUNSETVNETHDRSZ on a
    // persistent device matters. clatd reads the size back with TUNGETVNETHDRSZ anyway.
    let hdr_len = VNET_HDR_LEN;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is live for the call.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            TUNSETVNETHDRSZ,
            &hdr_len as *const libc::c_int,
        )
    } < 0
    {
        tracing::warn!(
            tun = name,
            "TUNSETVNETHDRSZ: {}",
            std::io::Error::last_os_error()
        );
    }
    let features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes its unsigned int argument by value.
    let offload = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, features) } == 0;
    if !offload {
        // Still correct: the host then segments and checksums before the tun.
        tracing::warn!(
            tun = name,
            "TUNSETOFFLOAD: {}; the translator gets 1500-byte packets",
            std::io::Error::last_os_error()
        );
    }
    if let Err(e) = set_tx_queue_len(name, TX_QUEUE_LEN) {
        tracing::warn!(tun = name, "txqueuelen {TX_QUEUE_LEN}: {e}");
    }
    // While the device is still down: no link-local address, no RS, no MLD. ENOENT when the
    // host has no IPv6 at all, which is just as good.
    let sysctl = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&sysctl, "1") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(tun = name, "{sysctl}: {e}"),
    }
    let cname = CString::new(name).map_err(|_| TunError::BadName(name.to_owned()))?;
    let ifindex =
        nix::net::if_::if_nametoindex(cname.as_c_str()).map_err(|source| TunError::Index {
            name: name.to_owned(),
            source,
        })?;
    Ok(TunDevice {
        fd,
        ifindex,
        offload,
    })
}

/// `SIOCSIFTXQLEN` on `name` (needs CAP_NET_ADMIN).
fn set_tx_queue_len(name: &str, len: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain system call without pointers.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `s` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s) };
    let mut req = ifreq(name);
    // ifr_qlen shares the union with ifr_ifindex/ifr_mtu (an int).
    req.ifr_ifru.ifru_ifindex = len;
    // SAFETY: SIOCSIFTXQLEN reads one live, initialised `ifreq`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFTXQLEN as _, &req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
    fn offload_ioctls_have_the_kernel_values() {
        // <linux/if_tun.h>: TUNSETOFFLOAD _IOW('T', 208, unsigned int), TUNSETVNETHDRSZ
        // _IOW('T', 216, int).
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
    }

    #[test]
    fn a_bad_name_is_refused_before_any_syscall() {
        assert!(matches!(
            open_tun("a-name-that-is-too-long"),
            Err(TunError::BadName(_))
        ));
    }
}
