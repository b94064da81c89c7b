//! The RFC 7050 query: AAAA `ipv4only.arpa.` through one uplink, with hickory-resolver.
//!
//! Every socket the resolver opens is bound to the uplink with `SO_BINDTODEVICE`, so the query
//! leaves through that uplink whatever the routing table says, and link-local servers
//! (`fe80::…`) are reached on it. The resolver has no cache, no hosts file and only the servers
//! given; each server gets its own resolver so the answer can be attributed to it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{
    RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::Resolver;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::discovery::rfc7050::{self, WELL_KNOWN_NAME};
use crate::discovery::{DiscoveryError, Nat64Prefix};

/// A successful DNS64 discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns64Answer {
    /// The prefix to use (the first one found, RFC 7050 §3).
    pub prefix: Nat64Prefix,
    /// Further distinct prefixes the answers held, in answer order.
    pub others: Vec<Nat64Prefix>,
    /// The smallest TTL of the AAAA records that gave a prefix.
    pub ttl: Duration,
    /// The server that answered.
    pub server: SocketAddr,
}

/// A runtime whose sockets are all bound to one interface.
#[derive(Clone)]
struct BoundRuntime {
    inner: TokioRuntimeProvider,
    device: Arc<str>,
}

fn bound_socket(device: &str, addr: &SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*addr), ty, Some(proto))?;
    socket.bind_device(Some(device.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    Ok(socket)
}

impl RuntimeProvider for BoundRuntime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = tokio::net::UdpSocket;
    type Tcp = AsyncIoTokioAsStd<tokio::net::TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.inner.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        let device = self.device.clone();
        Box::pin(async move {
            let socket = bound_socket(&device, &server_addr, Type::STREAM, Protocol::TCP)?;
            if let Some(bind) = bind_addr {
                socket.bind(&SockAddr::from(bind))?;
            }
            let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
            socket.set_nodelay(true)?;
            let wait = timeout.unwrap_or(Duration::from_secs(5));
            match tokio::time::timeout(wait, socket.connect(server_addr)).await {
                Ok(stream) => Ok(AsyncIoTokioAsStd(stream?)),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TCP connect timed out",
                )),
            }
        })
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        let device = self.device.clone();
        Box::pin(async move {
            let socket = bound_socket(&device, &local_addr, Type::DGRAM, Protocol::UDP)?;
            socket.bind(&SockAddr::from(local_addr))?;
            tokio::net::UdpSocket::from_std(socket.into())
        })
    }
}

/// Ask `servers`, in order, for AAAA `ipv4only.arpa.` through `ifname`, and derive the NAT64
/// prefix (RFC 7050). The first server that yields a prefix wins; the whole call never takes
/// longer than `timeout`. Rejected answers are logged with their reasons.
pub async fn query_dns64(
    ifname: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Dns64Answer, DiscoveryError> {
    if servers.is_empty() {
        return Err(DiscoveryError::NoDnsServers(ifname.to_string()));
    }
    if nix::net::if_::if_nametoindex(ifname).is_err() {
        return Err(DiscoveryError::NoSuchInterface(ifname.to_string()));
    }
    let deadline = Instant::now() + timeout;
    let runtime = BoundRuntime {
        inner: TokioRuntimeProvider::default(),
        device: Arc::from(ifname),
    };
    let mut best_error: Option<DiscoveryError> = None;
    for (i, server) in servers.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Share the remaining time among the servers not yet asked.
        let budget = left / u32::try_from(servers.len() - i).unwrap_or(u32::MAX);
        let result =
            match tokio::time::timeout(budget, query_one(runtime.clone(), *server, budget)).await {
                Ok(r) => r,
                Err(_) => Err(DiscoveryError::Timeout {
                    ifname: ifname.to_string(),
                    timeout: budget,
                }),
            };
        match result {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                tracing::info!(uplink = ifname, %server, error = %e, "DNS64 discovery: server gave no prefix");
                if best_error.as_ref().is_none_or(|b| rank(&e) > rank(b)) {
                    best_error = Some(e);
                }
            }
        }
    }
    Err(best_error.unwrap_or(DiscoveryError::Timeout {
        ifname: ifname.to_string(),
        timeout,
    }))
}

/// How much an error says about the network, to report the most telling one.
fn rank(e: &DiscoveryError) -> u8 {
    match e {
        DiscoveryError::NoUsablePrefix { .. } => 4,
        DiscoveryError::NoDns64 { .. } => 3,
        DiscoveryError::Resolve { .. } => 2,
        _ => 1,
    }
}

async fn query_one(
    runtime: BoundRuntime,
    server: SocketAddr,
    budget: Duration,
) -> Result<Dns64Answer, DiscoveryError> {
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.attempts = 2;
    opts.timeout = (budget / 3).max(Duration::from_millis(200));
    opts.try_tcp_on_error = true;
    let mut builder =
        Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), runtime);
    *builder.options_mut() = opts;
    let resolver = builder.build().map_err(|e| DiscoveryError::Resolve {
        server,
        message: e.to_string(),
    })?;
    let lookup = match resolver.lookup(WELL_KNOWN_NAME, RecordType::AAAA).await {
        Ok(l) => l,
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
            return Err(DiscoveryError::NoDns64 { server });
        }
        Err(e) => {
            return Err(DiscoveryError::Resolve {
                server,
                message: e.to_string(),
            })
        }
    };
    let aaaa: Vec<(std::net::Ipv6Addr, u32)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect();
    answer_from_records(server, &aaaa)
}

/// RFC 7050 on the AAAA records of one server's answer: `(address, ttl)` pairs.
pub fn answer_from_records(
    server: SocketAddr,
    records: &[(std::net::Ipv6Addr, u32)],
) -> Result<Dns64Answer, DiscoveryError> {
    if records.is_empty() {
        return Err(DiscoveryError::NoDns64 { server });
    }
    let addrs: Vec<_> = records.iter().map(|r| r.0).collect();
    let found = rfc7050::prefixes_from_answers(&addrs);
    for reason in &found.rejected {
        tracing::warn!(%server, %reason, "DNS64 discovery: answer rejected");
    }
    let Some((first, others)) = found.prefixes.split_first() else {
        return Err(DiscoveryError::NoUsablePrefix {
            server,
            reasons: found.rejected,
        });
    };
    // The TTL of the records that carry a usable prefix.
    let ttl = records
        .iter()
        .filter(|(a, _)| found.prefixes.iter().any(|p| p.contains(*a)))
        .map(|r| r.1)
        .min()
        .unwrap_or(0);
    Ok(Dns64Answer {
        prefix: *first,
        others: others.to_vec(),
        ttl: Duration::from_secs(u64::from(ttl)),
        server,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::discovery::rfc7050::{WKA_PRIMARY, WKA_SECONDARY};

    fn server() -> SocketAddr {
        "[2001:db8::53]:53".parse().unwrap()
    }

    #[test]
    fn records_to_answer_with_min_ttl() {
        let p: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
        let got = answer_from_records(
            server(),
            &[(p.embed(WKA_PRIMARY), 300), (p.embed(WKA_SECONDARY), 120)],
        )
        .unwrap();
        assert_eq!(got.prefix, p);
        assert!(got.others.is_empty());
        assert_eq!(got.ttl, Duration::from_secs(120));
    }

    #[test]
    fn no_records_means_no_dns64() {
        assert!(matches!(
            answer_from_records(server(), &[]),
            Err(DiscoveryError::NoDns64 { .. })
        ));
    }

    #[test]
    fn bad_records_give_reasons() {
        let err = answer_from_records(server(), &[("2001:db8::1".parse().unwrap(), 60)]);
        match err {
            Err(DiscoveryError::NoUsablePrefix { reasons, .. }) => assert_eq!(reasons.len(), 1),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ttl_ignores_rejected_records() {
        let p: Nat64Prefix = "2001:db8:100::/40".parse().unwrap();
        let got = answer_from_records(
            server(),
            &[
                ("2001:db8::1".parse().unwrap(), 5),
                (p.embed(WKA_PRIMARY), 900),
            ],
        )
        .unwrap();
        assert_eq!(got.ttl, Duration::from_secs(900));
    }
}
