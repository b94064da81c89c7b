//! Per-uplink NAT64 prefix state: the static prefix, the PREF64 learnt from RAs and the DNS64
//! result, each with its lifetime, chosen in the configured order. Pure: every method takes
//! `now`, so the daemon owns the clock and tests use synthetic instants.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use crate::discovery::dns::Dns64Answer;
use crate::discovery::resolvconf::Nameserver;
use crate::discovery::{DiscoveryError, Nat64Prefix, PrefixSource};

/// A DNS64 TTL shorter than this is treated as this long, so that a zero or tiny TTL does not
/// make the CLAT flap between queries (RFC 7050 §3.1 lets the node cache the result).
pub const DNS64_MIN_LIFETIME: Duration = Duration::from_secs(60);
/// A DNS64 TTL longer than this is treated as this long, so a changed prefix is noticed.
pub const DNS64_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Re-query when this fraction (in percent) of the lifetime has passed, before it expires.
pub const DNS64_REFRESH_PERCENT: u32 = 80;
/// Never re-query sooner than this after a success.
pub const DNS64_MIN_REFRESH: Duration = Duration::from_secs(10);
/// First retry delay after a failed query; doubles on each further failure.
pub const DNS64_BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const DNS64_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The DNS port.
const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timed {
    prefix: Nat64Prefix,
    expires: Instant,
}

/// The PREF64 (RFC 8781) known on an uplink and when its lifetime ends. The watcher's
/// inventory owns it (it learns it from router advertisements); the prefix state is only told.
pub type Pref64Seen = Option<(Nat64Prefix, Instant)>;

/// The prefix state of one uplink: the static prefix and what DNS64 discovery learnt. PREF64
/// is passed in from the inventory, which owns it.
#[derive(Debug, Clone)]
pub struct PrefixState {
    order: Vec<PrefixSource>,
    static_prefix: Option<Nat64Prefix>,
    dns64: Option<Timed>,
    /// When the next DNS64 query is due.
    dns64_next: Instant,
    /// A query was started and its result has not arrived.
    dns64_in_flight: bool,
    /// The delay to use after the next failure.
    dns64_backoff: Duration,
    /// Consecutive failures, for status and logs.
    dns64_failures: u32,
}

impl PrefixState {
    /// A fresh state: nothing learnt, a DNS64 query due at once (if DNS64 is in `order`).
    pub fn new(order: Vec<PrefixSource>, static_prefix: Option<Nat64Prefix>, now: Instant) -> Self {
        Self {
            order,
            static_prefix,
            dns64: None,
            dns64_next: now,
            dns64_in_flight: false,
            dns64_backoff: DNS64_BACKOFF_START,
            dns64_failures: 0,
        }
    }

    /// The prefix to use now and where it came from: the first source in the configured order
    /// that has a valid prefix.
    pub fn current(&self, pref64: Pref64Seen, now: Instant) -> Option<(Nat64Prefix, PrefixSource)> {
        self.order
            .iter()
            .find_map(|src| self.prefix_of(*src, pref64, now).map(|p| (p, *src)))
    }

    fn prefix_of(
        &self,
        src: PrefixSource,
        pref64: Pref64Seen,
        now: Instant,
    ) -> Option<Nat64Prefix> {
        match src {
            PrefixSource::Static => self.static_prefix,
            PrefixSource::Pref64 => pref64.filter(|(_, e)| *e > now).map(|(p, _)| p),
            PrefixSource::Dns64 => self.dns64.filter(|t| t.expires > now).map(|t| t.prefix),
        }
    }

    /// Whether DNS64 is worth asking: it is in the order and no source ranked before it has a
    /// prefix now.
    fn dns64_wanted(&self, pref64: Pref64Seen, now: Instant) -> bool {
        for src in &self.order {
            if *src == PrefixSource::Dns64 {
                return true;
            }
            if self.prefix_of(*src, pref64, now).is_some() {
                return false;
            }
        }
        false
    }

    /// Whether the daemon should start a DNS64 query now (`pref64`: the uplink's PREF64). Call [`Self::dns64_started`] when
    /// it does.
    pub fn dns64_due(&self, pref64: Pref64Seen, now: Instant) -> bool {
        !self.dns64_in_flight && self.dns64_wanted(pref64, now) && now >= self.dns64_next
    }

    /// A DNS64 query has been started; no other is due until its result arrives.
    pub fn dns64_started(&mut self, _now: Instant) {
        self.dns64_in_flight = true;
    }

    /// When the daemon must wake next for this uplink: a lifetime ending, or a DNS64 query
    /// falling due. `None` when nothing is pending. A due query gives a time `<= now` until
    /// it is started.
    pub fn next_deadline(&self, pref64: Pref64Seen, now: Instant) -> Option<Instant> {
        let expiries = pref64
            .map(|(_, e)| e)
            .into_iter()
            .chain(self.dns64.map(|t| t.expires))
            .filter(|e| *e > now);
        let query =
            (!self.dns64_in_flight && self.dns64_wanted(pref64, now)).then_some(self.dns64_next);
        expiries.chain(query).min()
    }

    /// The result of a DNS64 query. Success keeps the prefix for its TTL (bounded by
    /// [`DNS64_MIN_LIFETIME`] and [`DNS64_MAX_LIFETIME`]) and schedules a refresh at
    /// [`DNS64_REFRESH_PERCENT`] of it; failure keeps any earlier prefix until it expires and
    /// retries after an exponential backoff.
    pub fn on_dns64_result(&mut self, result: &Result<Dns64Answer, DiscoveryError>, now: Instant) {
        self.dns64_in_flight = false;
        match result {
            Ok(answer) => {
                let lifetime = answer.ttl.clamp(DNS64_MIN_LIFETIME, DNS64_MAX_LIFETIME);
                self.dns64 = Some(Timed {
                    prefix: answer.prefix,
                    expires: now + lifetime,
                });
                let refresh = (lifetime * DNS64_REFRESH_PERCENT / 100).max(DNS64_MIN_REFRESH);
                self.dns64_next = now + refresh;
                self.dns64_backoff = DNS64_BACKOFF_START;
                self.dns64_failures = 0;
            }
            Err(_) => {
                self.dns64_next = now + self.dns64_backoff;
                self.dns64_backoff = (self.dns64_backoff * 2).min(DNS64_BACKOFF_MAX);
                self.dns64_failures = self.dns64_failures.saturating_add(1);
            }
        }
    }

    /// Make a DNS64 query due now, whatever the backoff says (the servers to ask changed).
    pub fn dns64_retry_now(&mut self, now: Instant) {
        self.dns64_next = now;
        self.dns64_in_flight = false;
        self.dns64_backoff = DNS64_BACKOFF_START;
    }

    /// The static prefix from the configuration (or none).
    pub fn set_static(&mut self, prefix: Option<Nat64Prefix>) {
        self.static_prefix = prefix;
    }

    /// Forget what was learnt from the network (the link went down or moved to another
    /// network) and make a DNS64 query due at once.
    pub fn forget_learnt(&mut self, now: Instant) {
        self.dns64 = None;
        self.dns64_next = now;
        self.dns64_in_flight = false;
        self.dns64_backoff = DNS64_BACKOFF_START;
        self.dns64_failures = 0;
    }

    /// Consecutive DNS64 failures since the last success.
    pub fn dns64_failures(&self) -> u32 {
        self.dns64_failures
    }
}

/// The servers to send the `ipv4only.arpa` query to on one uplink: the configured
/// `dns_servers` if any (they override), else the RDNSS servers learnt on the uplink, else the
/// resolv.conf servers usable on it (unscoped ones, and link-local ones scoped to it; loopback
/// ones are skipped, as an uplink-bound socket cannot reach them). Link-local addresses get the
/// uplink's index as scope. Port 53, duplicates removed, order kept.
pub fn dns_servers(
    ifname: &str,
    ifindex: u32,
    rdnss: &[Ipv6Addr],
    resolv_conf: &[Nameserver],
    configured: &[IpAddr],
) -> Vec<SocketAddr> {
    let chosen: Vec<IpAddr> = if !configured.is_empty() {
        configured.to_vec()
    } else if !rdnss.is_empty() {
        rdnss.iter().map(|a| IpAddr::V6(*a)).collect()
    } else {
        resolv_conf
            .iter()
            .filter(|n| n.usable_on(ifname, ifindex) && !n.addr.is_loopback())
            .map(|n| n.addr)
            .collect()
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for ip in chosen {
        let sa = socket_addr(ip, ifindex);
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    out
}

/// `ip` port 53, with `ifindex` as scope if it is an IPv6 link-local address.
pub fn socket_addr(ip: IpAddr, ifindex: u32) -> SocketAddr {
    match ip {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(v6, DNS_PORT, 0, ifindex))
        }
        ip => SocketAddr::new(ip, DNS_PORT),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::discovery::resolvconf::parse_resolv_conf;

    /// No PREF64 on the uplink.
    const N: Pref64Seen = None;

    const ALL: [PrefixSource; 3] = [
        PrefixSource::Static,
        PrefixSource::Pref64,
        PrefixSource::Dns64,
    ];

    fn p(s: &str) -> Nat64Prefix {
        s.parse().unwrap()
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    fn answer(prefix: &str, ttl: u64) -> Result<Dns64Answer, DiscoveryError> {
        Ok(Dns64Answer {
            prefix: p(prefix),
            others: Vec::new(),
            ttl: secs(ttl),
            server: "[2001:db8::53]:53".parse().unwrap(),
        })
    }
    fn failure() -> Result<Dns64Answer, DiscoveryError> {
        Err(DiscoveryError::NoDns64 {
            server: "[2001:db8::53]:53".parse().unwrap(),
        })
    }

    #[test]
    fn retry_now_overrides_backoff_and_pref64_mirror() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(ALL.to_vec(), None, t0);
        assert!(s.dns64_due(N, t0));
        s.dns64_started(t0);
        assert!(!s.dns64_due(N, t0));
        s.on_dns64_result(&failure(), t0);
        s.dns64_started(t0);
        s.on_dns64_result(&failure(), t0);
        assert!(!s.dns64_due(N, t0 + secs(1)), "in backoff");
        s.dns64_retry_now(t0 + secs(1));
        assert!(s.dns64_due(N, t0 + secs(1)));
        // The inventory's PREF64 is used as given, and none means none.
        let pref = Some((p("2001:db8:100::/56"), t0 + secs(60)));
        assert_eq!(s.current(pref, t0).map(|c| c.1), Some(PrefixSource::Pref64));
        assert!(
            !s.dns64_due(pref, t0 + secs(2)),
            "no DNS64 while PREF64 is known"
        );
        assert_eq!(s.current(None, t0), None);
    }

    #[test]
    fn order_static_then_pref64_then_dns64() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(ALL.to_vec(), None, t0);
        assert_eq!(s.current(N, t0), None);
        s.on_dns64_result(&answer("2001:db8:64::/96", 300), t0);
        assert_eq!(
            s.current(N, t0),
            Some((p("2001:db8:64::/96"), PrefixSource::Dns64))
        );
        let pref = Some((p("2001:db8:100::/40"), t0 + secs(600)));
        assert_eq!(
            s.current(pref, t0),
            Some((p("2001:db8:100::/40"), PrefixSource::Pref64))
        );
        s.set_static(Some(p("2001:db8:ff::/96")));
        assert_eq!(
            s.current(pref, t0),
            Some((p("2001:db8:ff::/96"), PrefixSource::Static))
        );
        s.set_static(None);
        assert_eq!(s.current(pref, t0).map(|c| c.1), Some(PrefixSource::Pref64));
    }

    #[test]
    fn configured_order_is_honoured() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(
            vec![PrefixSource::Dns64, PrefixSource::Pref64],
            Some(p("2001:db8:ff::/96")),
            t0,
        );
        // Static is not in the order: never used.
        assert_eq!(s.current(N, t0), None);
        let pref = Some((p("2001:db8:100::/40"), t0 + secs(600)));
        s.on_dns64_result(&answer("2001:db8:64::/96", 300), t0);
        assert_eq!(s.current(pref, t0).map(|c| c.1), Some(PrefixSource::Dns64));
    }

    #[test]
    fn pref64_lifetime_is_honoured() {
        let t0 = Instant::now();
        let s = PrefixState::new(vec![PrefixSource::Pref64], None, t0);
        let pf = p("2001:db8:100::/40");
        let pref = Some((pf, t0 + secs(600)));
        assert_eq!(s.next_deadline(pref, t0), Some(t0 + secs(600)));
        assert_eq!(
            s.current(pref, t0 + secs(599)),
            Some((pf, PrefixSource::Pref64))
        );
        assert_eq!(s.current(pref, t0 + secs(600)), None);
        assert_eq!(s.next_deadline(pref, t0 + secs(600)), None);
    }

    #[test]
    fn dns64_refresh_before_expiry() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(vec![PrefixSource::Dns64], None, t0);
        assert!(s.dns64_due(N, t0));
        assert_eq!(s.next_deadline(N, t0), Some(t0));
        s.dns64_started(t0);
        assert!(!s.dns64_due(N, t0));
        assert_eq!(s.next_deadline(N, t0), None);
        s.on_dns64_result(&answer("2001:db8:64::/96", 600), t0);
        // Refresh at 80 % of 600 s = 480 s, expiry at 600 s.
        assert!(!s.dns64_due(N, t0 + secs(479)));
        assert!(s.dns64_due(N, t0 + secs(480)));
        assert_eq!(s.next_deadline(N, t0 + secs(1)), Some(t0 + secs(480)));
        assert!(s.current(N, t0 + secs(599)).is_some());
        assert!(s.current(N, t0 + secs(600)).is_none());
    }

    #[test]
    fn dns64_ttl_bounds() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(vec![PrefixSource::Dns64], None, t0);
        s.dns64_started(t0);
        s.on_dns64_result(&answer("2001:db8:64::/96", 0), t0);
        // A zero TTL counts as 60 s: valid for 60 s, refreshed at 48 s.
        assert!(s.current(N, t0 + secs(59)).is_some());
        assert!(s.current(N, t0 + secs(60)).is_none());
        assert!(!s.dns64_due(N, t0 + secs(47)));
        assert!(s.dns64_due(N, t0 + secs(48)));
        // A week-long TTL counts as one day.
        s.dns64_started(t0);
        s.on_dns64_result(&answer("2001:db8:64::/96", 7 * 86400), t0);
        assert!(s.current(N, t0 + secs(86399)).is_some());
        assert!(s.current(N, t0 + secs(86400)).is_none());
    }

    #[test]
    fn dns64_backoff_doubles_to_five_minutes_and_resets() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(vec![PrefixSource::Dns64], None, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..12 {
            assert!(s.dns64_due(N, now));
            s.dns64_started(now);
            s.on_dns64_result(&failure(), now);
            let next = s.next_deadline(N, now).unwrap();
            delays.push((next - now).as_secs());
            assert!(!s.dns64_due(N, next - Duration::from_millis(1)));
            now = next;
        }
        assert_eq!(
            delays,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        assert_eq!(s.dns64_failures(), 12);
        s.dns64_started(now);
        s.on_dns64_result(&answer("2001:db8:64::/96", 600), now);
        assert_eq!(s.dns64_failures(), 0);
        s.dns64_started(now);
        s.on_dns64_result(&failure(), now);
        assert_eq!(s.next_deadline(N, now), Some(now + secs(1)));
    }

    #[test]
    fn failure_keeps_previous_prefix_until_expiry() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(vec![PrefixSource::Dns64], None, t0);
        s.on_dns64_result(&answer("2001:db8:64::/96", 100), t0);
        s.on_dns64_result(&failure(), t0 + secs(80));
        assert!(s.current(N, t0 + secs(99)).is_some());
        // The retry (81 s) comes before the expiry (100 s).
        assert_eq!(s.next_deadline(N, t0 + secs(80)), Some(t0 + secs(81)));
        assert!(s.current(N, t0 + secs(100)).is_none());
    }

    #[test]
    fn no_dns64_wakeups_while_a_higher_source_holds() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(ALL.to_vec(), Some(p("2001:db8:ff::/96")), t0);
        assert!(!s.dns64_due(N, t0));
        assert_eq!(s.next_deadline(N, t0), None);
        // PREF64 ranked above DNS64: no query while it is valid; due once it expires.
        s.set_static(None);
        let pref = Some((p("2001:db8:100::/40"), t0 + secs(60)));
        assert!(!s.dns64_due(pref, t0 + secs(59)));
        assert_eq!(s.next_deadline(pref, t0), Some(t0 + secs(60)));
        assert!(s.dns64_due(pref, t0 + secs(60)));
    }

    #[test]
    fn forget_learnt_clears_network_state() {
        let t0 = Instant::now();
        let mut s = PrefixState::new(ALL.to_vec(), None, t0);
        s.on_dns64_result(&answer("2001:db8:64::/96", 600), t0);
        s.forget_learnt(t0 + secs(1));
        assert_eq!(s.current(N, t0 + secs(1)), None);
        assert!(s.dns64_due(N, t0 + secs(1)));
    }

    #[test]
    fn dns_server_precedence() {
        let rdnss: Vec<Ipv6Addr> =
            vec!["fe80::1".parse().unwrap(), "2001:db8::53".parse().unwrap()];
        let rc = parse_resolv_conf(
            "nameserver 127.0.0.53\nnameserver fe80::9%eth1\nnameserver fe80::8%eth0\nnameserver 2001:db8::99\n",
        );
        let configured: Vec<IpAddr> = vec!["2001:db8::1".parse().unwrap()];
        let ll = |a: &str| SocketAddr::V6(SocketAddrV6::new(a.parse().unwrap(), 53, 0, 4));

        assert_eq!(
            dns_servers("eth0", 4, &rdnss, &rc, &configured),
            vec!["[2001:db8::1]:53".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            dns_servers("eth0", 4, &rdnss, &rc, &[]),
            vec![ll("fe80::1"), "[2001:db8::53]:53".parse().unwrap()]
        );
        assert_eq!(
            dns_servers("eth0", 4, &[], &rc, &[]),
            vec![ll("fe80::8"), "[2001:db8::99]:53".parse().unwrap()]
        );
        assert!(dns_servers("eth0", 4, &[], &[], &[]).is_empty());
        // Duplicates collapse.
        let dup = vec![rdnss[1], rdnss[1]];
        assert_eq!(dns_servers("eth0", 4, &dup, &[], &[]).len(), 1);
    }
}
