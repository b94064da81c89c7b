//! The one `ifreq` and tun ioctl vocabulary of both binaries: the daemon creates the tun
//! (`controller::tun`), the translator checks the descriptor it inherits (`translator::tun`).
//! Constants from `<linux/if_tun.h>` and `<linux/if.h>`, and the `struct ifreq` name helpers.

/// Longest interface name the kernel accepts (IFNAMSIZ is 16 with the terminating NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// `TUNSETIFF` is `_IOW('T', 202, int)`; the kernel reads a `struct ifreq` through the pointer
/// despite the `int` in the encoding.
pub const TUNSETIFF: libc::c_ulong =
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;
/// `TUNSETOFFLOAD` is `_IOW('T', 208, unsigned int)`.
pub const TUNSETOFFLOAD: libc::c_ulong =
    nix::request_code_write!(b'T', 208, std::mem::size_of::<libc::c_uint>()) as libc::c_ulong;
/// `TUNGETVNETHDRSZ` is `_IOR('T', 215, int)`.
pub const TUNGETVNETHDRSZ: libc::c_ulong =
    nix::request_code_read!(b'T', 215, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;
/// `TUNSETVNETHDRSZ` is `_IOW('T', 216, int)`.
pub const TUNSETVNETHDRSZ: libc::c_ulong =
    nix::request_code_write!(b'T', 216, std::mem::size_of::<libc::c_int>()) as libc::c_ulong;
/// `TUN_F_CSUM`, `TUN_F_TSO4`, `TUN_F_TSO6`.
pub const TUN_F_CSUM: libc::c_uint = 0x01;
pub const TUN_F_TSO4: libc::c_uint = 0x02;
pub const TUN_F_TSO6: libc::c_uint = 0x04;
/// `IFF_VNET_HDR`.
pub const IFF_VNET_HDR: libc::c_int = 0x4000;

/// A zeroed `struct ifreq` carrying `name` (cut to [`MAX_NAME_LEN`] bytes, so it stays
/// NUL-terminated).
pub fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
        *dst = src as libc::c_char;
    }
    req
}

/// The name in a `struct ifreq` the kernel filled in.
pub fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(TUNSETIFF, 0x4004_54ca);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(TUNGETVNETHDRSZ, 0x8004_54d7);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
    }

    #[test]
    fn names_round_trip_and_are_cut_to_fit() {
        assert_eq!(ifreq_name(&ifreq("v4-eth0")), "v4-eth0");
        let long = "a-very-long-interface-name";
        assert_eq!(ifreq_name(&ifreq(long)), &long[..MAX_NAME_LEN]);
        assert_eq!(ifreq(long).ifr_name[MAX_NAME_LEN], 0);
    }
}
