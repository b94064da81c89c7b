//! `/etc/resolv.conf`: the `nameserver` lines, with `%scope` suffixes on link-local addresses.
//! Parsing is pure; [`read_system_nameservers`] is the only I/O.

use std::net::IpAddr;
use std::path::Path;

/// The usual location.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of real upstream servers, used when /etc/resolv.conf only names its
/// loopback stub (which cannot be reached through an uplink-bound socket).
pub const SYSTEMD_RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// The scope of a link-local name server: an interface name or index after `%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Name(String),
    Index(u32),
}

/// One `nameserver` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    pub addr: IpAddr,
    pub scope: Option<Scope>,
}

impl Nameserver {
    /// Whether this server may be asked through the interface `ifname`/`ifindex`: unscoped
    /// servers may, scoped ones only on their own interface.
    pub fn usable_on(&self, ifname: &str, ifindex: u32) -> bool {
        match &self.scope {
            None => true,
            Some(Scope::Name(n)) => n == ifname,
            Some(Scope::Index(i)) => *i == ifindex,
        }
    }
}

/// The `nameserver` lines of a resolv.conf text, in order. Malformed lines are skipped, as the
/// C library does; comments start with `#` or `;`.
pub fn parse_resolv_conf(text: &str) -> Vec<Nameserver> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            parse_server(words.next()?)
        })
        .collect()
}

fn parse_server(word: &str) -> Option<Nameserver> {
    let (addr, scope) = match word.split_once('%') {
        Some((a, s)) if !s.is_empty() => (a, Some(s)),
        Some(_) => return None,
        None => (word, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let scope = scope.map(|s| match s.parse::<u32>() {
        Ok(i) => Scope::Index(i),
        Err(_) => Scope::Name(s.to_string()),
    });
    Some(Nameserver { addr, scope })
}

/// The system's name servers: /etc/resolv.conf, or systemd-resolved's upstream list when
/// /etc/resolv.conf names only loopback servers (its stub). A missing file gives an empty list.
pub fn read_system_nameservers() -> Vec<Nameserver> {
    let main = read_file(Path::new(RESOLV_CONF));
    if main.iter().any(|n| !n.addr.is_loopback()) {
        return main;
    }
    let upstream = read_file(Path::new(SYSTEMD_RESOLVED_UPSTREAM));
    if upstream.is_empty() {
        main
    } else {
        upstream
    }
}

fn read_file(path: &Path) -> Vec<Nameserver> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot read resolver configuration");
            Vec::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_servers_scopes_and_comments() {
        let text = "\
# generated
search example.org
nameserver 192.0.2.53
nameserver   2001:db8::53   # trailing comment
;nameserver 192.0.2.99
nameserver fe80::1%eth0
nameserver fe80::2%3
nameserver not-an-address
nameserver fe80::3%
nameserver
options edns0
";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                Nameserver {
                    addr: "192.0.2.53".parse().unwrap(),
                    scope: None
                },
                Nameserver {
                    addr: "2001:db8::53".parse().unwrap(),
                    scope: None
                },
                Nameserver {
                    addr: "fe80::1".parse().unwrap(),
                    scope: Some(Scope::Name("eth0".into()))
                },
                Nameserver {
                    addr: "fe80::2".parse().unwrap(),
                    scope: Some(Scope::Index(3))
                },
            ]
        );
    }

    #[test]
    fn scope_matching() {
        let ns = parse_resolv_conf(
            "nameserver fe80::1%eth0\nnameserver fe80::2%4\nnameserver 2001:db8::1",
        );
        assert!(ns[0].usable_on("eth0", 9));
        assert!(!ns[0].usable_on("eth1", 9));
        assert!(ns[1].usable_on("whatever", 4));
        assert!(!ns[1].usable_on("whatever", 5));
        assert!(ns[2].usable_on("eth1", 1));
    }

    #[test]
    fn empty_text() {
        assert!(parse_resolv_conf("").is_empty());
    }
}
