//! Router solicitations (RFC 4861 §6.3.7): after a daemon restart the kernel keeps no copy of
//! the last RA's PREF64, and routers may announce it only every few minutes, so an eligible
//! uplink without a PREF64 asks for an RA. The message is built here without I/O; sending it
//! is one raw ICMPv6 socket per solicitation.

use std::net::{Ipv6Addr, SocketAddrV6};

/// All-routers link-local multicast (RFC 4291).
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// Why a router solicitation could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum RsError {
    #[error("router solicitation on ifindex {ifindex}: {step}: {source}")]
    Io {
        ifindex: u32,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// An ICMPv6 router solicitation without options (type 133, code 0). The checksum is left
/// zero: the kernel fills it in for raw ICMPv6 sockets. Without the source link-layer address
/// option it is valid from any source, the unspecified address included (RFC 4861 §4.1).
pub fn router_solicitation() -> [u8; 8] {
    [133, 0, 0, 0, 0, 0, 0, 0]
}

/// Sends one router solicitation to ff02::2 out of `ifindex` (hop limit 255, as RFC 4861
/// requires of every ND message).
pub fn send_router_solicitation(ifindex: u32) -> Result<(), RsError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let io = |step: &'static str| {
        move |source| RsError::Io {
            ifindex,
            step,
            source,
        }
    };
    let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .map_err(io("socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)"))?;
    sock.set_cloexec(true).map_err(io("FD_CLOEXEC"))?;
    sock.set_multicast_hops_v6(255)
        .map_err(io("IPV6_MULTICAST_HOPS"))?;
    sock.set_multicast_if_v6(ifindex)
        .map_err(io("IPV6_MULTICAST_IF"))?;
    sock.set_multicast_loop_v6(false)
        .map_err(io("IPV6_MULTICAST_LOOP"))?;
    let dst = SocketAddrV6::new(ALL_ROUTERS, 0, 0, ifindex);
    sock.send_to(&router_solicitation(), &dst.into())
        .map_err(io("sendto ff02::2"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_solicitation_is_type_133_without_options() {
        let rs = router_solicitation();
        assert_eq!(rs[0], 133);
        assert_eq!(rs[1], 0);
        assert_eq!(rs.len(), 8, "header and reserved field only");
        assert!(ALL_ROUTERS.is_multicast());
    }
}
