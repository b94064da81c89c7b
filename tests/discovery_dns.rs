//! `query_dns64` against a tiny DNS responder on loopback (the sockets are bound to `lo`).
//! Needs root (SO_BINDTODEVICE); skipped otherwise.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use autoclat::discovery::dns::query_dns64;
use autoclat::discovery::rfc7050::{WKA_PRIMARY, WKA_SECONDARY};
use autoclat::discovery::{DiscoveryError, Nat64Prefix};
use tokio::net::UdpSocket;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// How the responder answers.
#[derive(Clone)]
enum Behaviour {
    /// AAAA records (address, ttl) for ipv4only.arpa.
    Aaaa(Vec<(Ipv6Addr, u32)>),
    /// RCODE 3.
    NxDomain,
    /// Never answers.
    Silent,
}

/// End of the question section (start at byte 12: labels, then type and class).
fn question_end(q: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            return Some(i + 4);
        }
        i += len;
    }
}

fn qname(q: &[u8]) -> String {
    let mut i = 12;
    let mut labels = Vec::new();
    while let Some(&len) = q.get(i) {
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + usize::from(len)]).to_string());
        i += 1 + usize::from(len);
    }
    labels.join(".")
}

fn respond(query: &[u8], behaviour: &Behaviour) -> Option<Vec<u8>> {
    let end = question_end(query)?;
    let records: &[(Ipv6Addr, u32)] = match behaviour {
        Behaviour::Silent => return None,
        Behaviour::NxDomain => &[],
        Behaviour::Aaaa(r) => r,
    };
    let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
    let records = if qtype == 28 && qname(query).eq_ignore_ascii_case("ipv4only.arpa") {
        records
    } else {
        &[]
    };
    let rcode = if matches!(behaviour, Behaviour::NxDomain) {
        3
    } else {
        0
    };
    let mut r = Vec::new();
    r.extend_from_slice(&query[0..2]); // id
    r.extend_from_slice(&[0x81, 0x80 | rcode]); // QR, RD, RA
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(records.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&query[12..end]);
    for (addr, ttl) in records {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 28, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&16u16.to_be_bytes());
        r.extend_from_slice(&addr.octets());
    }
    Some(r)
}

/// Start a responder on `bind` (port 0); returns its address.
async fn responder(bind: &str, behaviour: Behaviour) -> SocketAddr {
    let sock = UdpSocket::bind(bind).await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            if let Some(reply) = respond(&buf[..n], &behaviour) {
                let _ = sock.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

fn prefix(s: &str) -> Nat64Prefix {
    s.parse().unwrap()
}

#[tokio::test]
async fn finds_prefix_over_ipv6_loopback() {
    if !is_root() {
        eprintln!("skipped: needs root for SO_BINDTODEVICE");
        return;
    }
    let p = prefix("2001:db8:64::/96");
    let server = responder(
        "[::1]:0",
        Behaviour::Aaaa(vec![
            (p.embed(WKA_PRIMARY), 600),
            (p.embed(WKA_SECONDARY), 300),
        ]),
    )
    .await;
    let got = query_dns64("lo", &[server], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(got.prefix, p);
    assert!(got.others.is_empty());
    assert_eq!(got.ttl, Duration::from_secs(300));
    assert_eq!(got.server, server);
}

#[tokio::test]
async fn finds_non_96_prefix_over_ipv4_loopback_and_reports_others() {
    if !is_root() {
        return;
    }
    let p1 = prefix("2001:db8:100::/40");
    let p2 = prefix("2001:db8:122:300::/56");
    let server = responder(
        "127.0.0.1:0",
        Behaviour::Aaaa(vec![
            (p1.embed(WKA_PRIMARY), 60),
            (p2.embed(WKA_PRIMARY), 60),
        ]),
    )
    .await;
    let got = query_dns64("lo", &[server], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(got.prefix, p1);
    assert_eq!(got.others, vec![p2]);
}

#[tokio::test]
async fn nxdomain_means_no_dns64() {
    if !is_root() {
        return;
    }
    let server = responder("[::1]:0", Behaviour::NxDomain).await;
    let err = query_dns64("lo", &[server], Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::NoDns64 { .. }), "{err}");
}

#[tokio::test]
async fn bogus_answers_are_rejected_with_reasons() {
    if !is_root() {
        return;
    }
    let server = responder(
        "[::1]:0",
        Behaviour::Aaaa(vec![("2001:db8::1".parse().unwrap(), 60)]),
    )
    .await;
    let err = query_dns64("lo", &[server], Duration::from_secs(3))
        .await
        .unwrap_err();
    match err {
        DiscoveryError::NoUsablePrefix { reasons, .. } => assert_eq!(reasons.len(), 1),
        other => panic!("unexpected: {other}"),
    }
}

#[tokio::test]
async fn silent_server_times_out_in_time_and_next_server_answers() {
    if !is_root() {
        return;
    }
    let silent = responder("[::1]:0", Behaviour::Silent).await;
    let start = Instant::now();
    let err = query_dns64("lo", &[silent], Duration::from_millis(1500))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(
        matches!(
            err,
            DiscoveryError::Timeout { .. } | DiscoveryError::Resolve { .. }
        ),
        "{err}"
    );

    let p = prefix("2001:db8:64::/96");
    let good = responder("[::1]:0", Behaviour::Aaaa(vec![(p.embed(WKA_PRIMARY), 60)])).await;
    let got = query_dns64("lo", &[silent, good], Duration::from_secs(4))
        .await
        .unwrap();
    assert_eq!(got.prefix, p);
    assert_eq!(got.server, good);
}

#[tokio::test]
async fn unknown_interface_and_no_servers() {
    let err = query_dns64(
        "nonexist-d2",
        &["[::1]:53".parse().unwrap()],
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DiscoveryError::NoSuchInterface(_)), "{err}");
    let err = query_dns64("lo", &[], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, DiscoveryError::NoDnsServers(_)), "{err}");
}
