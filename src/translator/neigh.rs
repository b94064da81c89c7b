//! The link-layer address of the next hop towards an IPv6 destination, for sending GSO
//! super-packets on a packet socket (which bypasses the kernel's routing and neighbour
//! resolution): `RTM_GETROUTE` for the gateway (or on-link: the destination itself), then
//! `RTM_GETNEIGH` for its entry. Both need no privileges. Answers are cached for a short
//! time; a missing, failed or stale entry sends the caller back to the raw socket, whose
//! packets make the kernel resolve or re-confirm the neighbour.
//!
//! Message building and parsing are pure; [`NextHops`] does the (blocking, sub-millisecond)
//! netlink round trips.

use std::io;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use crate::nlmsg::{self, Request};
use crate::nlsock::NlSocket;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MARK: u16 = 16;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `NUD_INCOMPLETE | NUD_FAILED`: no usable address (`NUD_NONE` is 0, checked apart).
const NUD_UNUSABLE: u16 = 0x01 | 0x20;
/// `NUD_STALE`: usable, but the kernel should re-confirm it.
pub const NUD_STALE: u16 = 0x04;
/// How long a resolved next hop is used before it is looked up again.
pub const TTL: Duration = Duration::from_secs(1);
/// How long an unresolved one is left to the raw socket before the next lookup.
pub const NEGATIVE_TTL: Duration = Duration::from_millis(200);
/// Cached destinations (linear search; a CLAT talks to few NAT64 destinations at once).
const CACHE: usize = 32;

/// The `RTM_GETROUTE` request for `dst` out of `oif` (with `mark`, as the raw socket's
/// packets would carry it).
pub fn route_request(seq: u32, dst: Ipv6Addr, oif: u32, mark: Option<u32>) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type; flags u32.
    let mut m = Request::new(libc::RTM_GETROUTE, 0, seq)
        .fixed(&[libc::AF_INET6 as u8, 128, 0, 0, 0, 0, 0, 0])
        .fixed(&0u32.to_ne_bytes())
        .attr(RTA_DST, &dst.octets())
        .attr(RTA_OIF, &oif.to_ne_bytes());
    if let Some(mark) = mark {
        m = m.attr(RTA_MARK, &mark.to_ne_bytes());
    }
    m.finish()
}

/// The `RTM_GETNEIGH` request (single entry, Linux ≥ 4.20) for `addr` on `ifindex`.
pub fn neigh_request(seq: u32, addr: Ipv6Addr, ifindex: u32) -> Vec<u8> {
    // struct ndmsg: family, pad1, pad2 (u16), ifindex (i32), state (u16), flags, type.
    Request::new(libc::RTM_GETNEIGH, 0, seq)
        .fixed(&[libc::AF_INET6 as u8, 0, 0, 0])
        .fixed(&ifindex.to_ne_bytes())
        .fixed(&[0, 0, 0, 0])
        .attr(NDA_DST, &addr.octets())
        .finish()
}

/// The first netlink message in `buf`: (type, payload after the netlink header), or an
/// error for `NLMSG_ERROR` with a non-zero code.
fn first_message(buf: &[u8]) -> io::Result<(u16, &[u8])> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short netlink answer");
    let m = nlmsg::messages(buf)
        .next()
        .ok_or_else(bad)?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    match m.error() {
        Some(0) | None => Ok((m.ty, m.payload)),
        Some(code) => Err(io::Error::from_raw_os_error(code)),
    }
}

/// The attributes after a fixed header of `fixed` bytes (a malformed one ends the walk).
fn attrs(body: &[u8], fixed: usize) -> impl Iterator<Item = (u16, &[u8])> {
    nlmsg::attrs(body, fixed).map_while(Result::ok)
}

/// From an `RTM_NEWROUTE` answer: the gateway, or `dst` itself for an on-link route; `None`
/// when the route leaves through another interface than `oif`.
pub fn parse_route(buf: &[u8], dst: Ipv6Addr, oif: u32) -> io::Result<Option<Ipv6Addr>> {
    let (_, body) = first_message(buf)?;
    let mut hop = dst;
    let mut out_if = None;
    for (ty, data) in attrs(body, 12) {
        match (ty, data.len()) {
            (RTA_GATEWAY, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                hop = Ipv6Addr::from(a);
            }
            (RTA_OIF, 4) => out_if = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]])),
            _ => {}
        }
    }
    Ok((out_if == Some(oif)).then_some(hop))
}

/// From an `RTM_NEWNEIGH` answer: the Ethernet address and the `NUD_*` state, `None` if the
/// entry has no usable address.
pub fn parse_neigh(buf: &[u8]) -> io::Result<Option<([u8; 6], u16)>> {
    let (_, body) = first_message(buf)?;
    let state = body
        .get(8..10)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .unwrap_or(0);
    if state == 0 || state & NUD_UNUSABLE != 0 {
        return Ok(None);
    }
    Ok(attrs(body, 12).find_map(|(ty, data)| {
        let mac: [u8; 6] = data.try_into().ok()?;
        (ty == NDA_LLADDR).then_some((mac, state))
    }))
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dst: Ipv6Addr,
    mac: Option<[u8; 6]>,
    expires: Instant,
}

/// Next-hop Ethernet addresses on one uplink, looked up over rtnetlink and cached.
#[derive(Debug)]
pub struct NextHops {
    sock: NlSocket,
    ifindex: u32,
    mark: Option<u32>,
    seq: u32,
    cache: Vec<Entry>,
    buf: Vec<u8>,
    /// Lookups done (for the counters line).
    pub lookups: u64,
}

impl NextHops {
    /// A resolver for uplink `ifindex` (routes looked up with `mark`, if any).
    pub fn new(ifindex: u32, mark: Option<u32>) -> io::Result<Self> {
        // Never hang the packet loop on a lost answer.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        let sock = NlSocket::open(libc::NETLINK_ROUTE, Some(timeout))?;
        Ok(Self {
            sock,
            ifindex,
            mark,
            seq: 0,
            cache: Vec::with_capacity(CACHE),
            buf: vec![0; 8192],
            lookups: 0,
        })
    }

    /// The Ethernet address to send a packet for `dst` to, or `None` when the kernel has no
    /// usable (or only a stale) neighbour entry: then send through the kernel's IPv6 stack,
    /// which resolves or re-confirms it.
    pub fn lookup(&mut self, dst: Ipv6Addr, now: Instant) -> Option<[u8; 6]> {
        if let Some(e) = self.cache.iter().find(|e| e.dst == dst && e.expires > now) {
            return e.mac;
        }
        self.lookups += 1;
        let (mac, ttl) = match self.resolve(dst) {
            Ok(Some((mac, state))) if state & NUD_STALE == 0 => (Some(mac), TTL),
            // Stale: this packet goes through the kernel, which starts re-confirming.
            Ok(Some(_)) => (None, Duration::ZERO),
            Ok(None) => (None, NEGATIVE_TTL),
            Err(e) => {
                tracing::debug!("next hop for {dst}: {e}");
                (None, NEGATIVE_TTL)
            }
        };
        let entry = Entry {
            dst,
            mac,
            expires: now + ttl,
        };
        if let Some(e) = self.cache.iter_mut().find(|e| e.dst == dst) {
            *e = entry;
        } else if self.cache.len() < CACHE {
            self.cache.push(entry);
        } else if let Some(oldest) = self.cache.iter_mut().min_by_key(|e| e.expires) {
            *oldest = entry;
        }
        mac
    }

    fn resolve(&mut self, dst: Ipv6Addr) -> io::Result<Option<([u8; 6], u16)>> {
        self.seq = self.seq.wrapping_add(1);
        let req = route_request(self.seq, dst, self.ifindex, self.mark);
        let n = self.round_trip(&req)?;
        let Some(hop) = parse_route(&self.buf[..n], dst, self.ifindex)? else {
            return Ok(None);
        };
        self.seq = self.seq.wrapping_add(1);
        let req = neigh_request(self.seq, hop, self.ifindex);
        let n = match self.round_trip(&req) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_neigh(&self.buf[..n])
    }

    /// Send `req` to the kernel, receive the answer with our sequence number into `buf`.
    fn round_trip(&mut self, req: &[u8]) -> io::Result<usize> {
        self.sock.send(req)?;
        loop {
            let n = self.sock.recv(&mut self.buf)?;
            // An answer to an earlier, timed-out request: skip it.
            let seq = self
                .buf
                .get(8..12)
                .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
            if seq == Some(self.seq) {
                first_message(&self.buf[..n])?;
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(ty: u16, fixed: &[u8], attrs_: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = Request::new(ty, 0, 7).fixed(fixed);
        for (t, d) in attrs_ {
            m = m.attr(*t, d);
        }
        m.finish()
    }

    #[test]
    fn requests_are_well_formed() {
        let dst: Ipv6Addr = "2001:db8:64::c633:640a".parse().unwrap();
        let r = route_request(3, dst, 5, Some(0x74));
        assert_eq!(r.len(), 16 + 12 + 20 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(r[..4].try_into().unwrap()) as usize,
            r.len()
        );
        let a: Vec<_> = attrs(&r[16..], 12).collect();
        assert_eq!(a[0], (RTA_DST, &dst.octets()[..]));
        assert_eq!(a[1], (RTA_OIF, &5u32.to_ne_bytes()[..]));
        assert_eq!(a[2], (RTA_MARK, &0x74u32.to_ne_bytes()[..]));
        let n = neigh_request(4, dst, 9);
        assert_eq!(n.len(), 16 + 12 + 20);
        assert_eq!(&n[20..24], &9u32.to_ne_bytes());
    }

    #[test]
    fn a_route_gives_its_gateway_or_the_destination() {
        let dst: Ipv6Addr = "2001:db8:64::1".parse().unwrap();
        let gw: Ipv6Addr = "fe80::1".parse().unwrap();
        let fixed = [10u8, 128, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        let via = answer(
            24,
            &fixed,
            &[(RTA_GATEWAY, &gw.octets()), (RTA_OIF, &5u32.to_ne_bytes())],
        );
        assert_eq!(parse_route(&via, dst, 5).unwrap(), Some(gw));
        assert_eq!(
            parse_route(&via, dst, 6).unwrap(),
            None,
            "another interface"
        );
        let onlink = answer(24, &fixed, &[(RTA_OIF, &5u32.to_ne_bytes())]);
        assert_eq!(parse_route(&onlink, dst, 5).unwrap(), Some(dst));
        let err = Request::new(nlmsg::NLMSG_ERROR, 0, 7)
            .fixed(&(-libc::ENETUNREACH).to_ne_bytes())
            .fixed(&[0; 16])
            .finish();
        assert_eq!(
            parse_route(&err, dst, 5).unwrap_err().raw_os_error(),
            Some(libc::ENETUNREACH)
        );
    }

    #[test]
    fn a_neighbour_entry_gives_its_address_when_usable() {
        let mac = [2u8, 0, 0, 0, 0, 1];
        let fixed = |state: u16| {
            let mut f = vec![10u8, 0, 0, 0];
            f.extend_from_slice(&5u32.to_ne_bytes());
            f.extend_from_slice(&state.to_ne_bytes());
            f.extend_from_slice(&[0, 1]);
            f
        };
        let ok = answer(28, &fixed(libc::NUD_REACHABLE), &[(NDA_LLADDR, &mac)]);
        assert_eq!(parse_neigh(&ok).unwrap(), Some((mac, libc::NUD_REACHABLE)));
        let stale = answer(28, &fixed(NUD_STALE), &[(NDA_LLADDR, &mac)]);
        assert_eq!(parse_neigh(&stale).unwrap(), Some((mac, NUD_STALE)));
        let failed = answer(28, &fixed(0x20), &[(NDA_LLADDR, &mac)]);
        assert_eq!(parse_neigh(&failed).unwrap(), None);
        let incomplete = answer(28, &fixed(0x01), &[]);
        assert_eq!(parse_neigh(&incomplete).unwrap(), None);
    }
}
