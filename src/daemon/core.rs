//! The daemon's decisions, as a pure state machine: no I/O, no clock of its own.
//!
//! The event loop ([`super`]) feeds it the inventory (the watcher's view of the host), the
//! results of what it carried out ([`Input`]) and the time; [`Core::reconcile`] answers with
//! the [`Action`]s to carry out: ask DNS64, start, stop or repair a CLAT. Everything the
//! daemon decides — which uplinks get a CLAT and with what address and metric, when to retry
//! after a failure, what counts as a missing piece and when to put it back, when to stop
//! repairing a piece another program keeps removing — is decided here and unit tested without
//! root (see the tests at the end, and `ARCHITECTURE.md`).
//!
//! Facts have one owner each: the inventory owns what the kernel said (links, addresses,
//! routes, PREF64, RDNSS); [`PrefixState`] owns the static and DNS64 prefixes and whether a
//! query is in flight; the core owns decisions, backoffs and its record of each running CLAT
//! ([`ClatRecord`]); the controller owns the CLAT's resources.

use crate::nat64::{Nat64Prefix, PrefixSource};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::{UplinkState, UplinkStatus};
use crate::controller::addressing::{choose_v4, tun_name};
use crate::controller::backoff::Backoff;
use crate::controller::{Piece, MTU_DELTA};
use crate::discovery::dns::Dns64Answer;
use crate::discovery::resolvconf::Nameserver;
use crate::discovery::state::{Pref64Seen, PrefixState};
use crate::discovery::DiscoveryError;
use crate::policy::{decide_with_own_tuns, ClatPlan, Decision, SkipState};
use crate::watch::inventory::Family;
use crate::watch::{Inventory, Uplink};

/// CLATs started per reconcile pass. The starts of one pass run side by side: their 400 ms of
/// duplicate address detection overlap, their tens of ms of work each do not. With many uplinks
/// appearing at once the loop returns between batches, so `status` and SIGTERM are answered
/// while the rest start (README Performance: 8 is the balance of the first and the last).
pub const STARTS_PER_PASS: usize = 8;

/// How long a piece the controller just made may stay unseen in the inventory before it
/// counts as missing (its netlink event is normally there within milliseconds).
pub const CONFIRM_GRACE: Duration = Duration::from_secs(2);

/// A piece that goes missing again within this time of its repair is a fight with another
/// program, not a one-off change.
pub const FIGHT_WINDOW: Duration = Duration::from_secs(5);

/// Repairs in a row that are made at once, however quickly the piece goes again.
pub const FREE_REPAIRS: u32 = 3;

/// The longest a fought-over repair is held back.
pub const MAX_REPAIR_HOLD: Duration = Duration::from_secs(60);

/// Router solicitations sent per uplink when it becomes eligible without a PREF64 (RFC 4861
/// §6.3.7: MAX_RTR_SOLICITATIONS).
pub const ROUTER_SOLICITATIONS: u8 = 3;

/// Between two router solicitations (RFC 4861: RTR_SOLICITATION_INTERVAL).
pub const RS_INTERVAL: Duration = Duration::from_secs(4);

/// NAT64 prefix changes that restart the CLAT at once; after that each restart holds the next
/// change back twice as long as the one before, from [`PREFIX_HOLD_START`] to
/// [`PREFIX_HOLD_MAX`].
pub const FREE_PREFIX_CHANGES: u32 = 2;
/// The first prefix hold-down.
pub const PREFIX_HOLD_START: Duration = Duration::from_secs(4);
/// The longest prefix hold-down.
pub const PREFIX_HOLD_MAX: Duration = Duration::from_secs(600);
/// A prefix that stays this long (beyond the current hold) ends a run of changes.
pub const PREFIX_CALM: Duration = Duration::from_secs(60);

/// What the loop carried out, or learnt, since the last pass.
#[derive(Debug)]
pub enum Input {
    /// An RFC 7050 query on `ifindex` ended.
    Dns64 {
        ifindex: u32,
        result: Result<Dns64Answer, DiscoveryError>,
    },
    /// The translator of that CLAT generation exited, as `info` says.
    ChildExited {
        ifindex: u32,
        generation: u64,
        info: String,
    },
    /// An [`Action::Start`] ended.
    Started {
        ifindex: u32,
        result: Result<StartedClat, String>,
    },
    /// An [`Action::Repair`] ended. A failed repair makes the core restart the whole CLAT.
    Repaired {
        ifindex: u32,
        pieces: Vec<Piece>,
        result: Result<StartedClat, String>,
    },
    /// The eBPF programs of this CLAT are (not) all attached, as the kernel said just now
    /// (checked by the loop before each pass: TCX links send no netlink events).
    Programs { ifindex: u32, complete: bool },
}

/// What the controller reports of a CLAT it started or repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedClat {
    pub v6: Ipv6Addr,
    pub tun_ifindex: u32,
    pub pid: i32,
    pub fast_path: bool,
    pub fast_path_reason: Option<String>,
}

/// What the loop must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask `servers` for `ipv4only.arpa` through `uplink`; answer with [`Input::Dns64`].
    QueryDns64 {
        ifindex: u32,
        uplink: String,
        servers: Vec<SocketAddr>,
    },
    /// Start a CLAT; answer with [`Input::Started`]. The loop picks the IPv6 address (random
    /// interface identifier) inside `plan.v6_net`.
    Start {
        ifindex: u32,
        plan: ClatPlan,
        tun_name: String,
        v4: Ipv4Addr,
        route_metric: u32,
    },
    /// Stop the CLAT of `ifindex` (nothing to answer).
    Stop { ifindex: u32, why: String },
    /// Put these pieces back; answer with [`Input::Repaired`].
    Repair { ifindex: u32, pieces: Vec<Piece> },
    /// Send a router solicitation on `uplink` (nothing to answer: the RA that follows comes
    /// through the watcher). `nth` counts from 1.
    SolicitRouters {
        ifindex: u32,
        uplink: String,
        nth: u8,
    },
}

/// How the core sees one piece of a running CLAT in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Made (or put back) at this time; its netlink event may still be on its way.
    Pending(Instant),
    /// The inventory shows it.
    Present,
}

/// The core's record of a running CLAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClatRecord {
    pub plan: ClatPlan,
    pub tun_name: String,
    pub v4: Ipv4Addr,
    pub route_metric: u32,
    pub started: StartedClat,
    /// Bumped on every (re)spawn, so the exit of an older translator is ignored.
    pub generation: u64,
    pub child_alive: bool,
    /// Repairs of pieces someone else removed or changed, over the CLAT's life.
    pub repairs: u32,
    /// The eBPF programs were found incomplete at the last check.
    programs_missing: bool,
    seen: BTreeMap<Piece, Seen>,
    /// What the last pass found missing (empty: complete).
    pub missing: Vec<Piece>,
    /// Pieces put back by a repair that the inventory has not shown yet: the CLAT is not
    /// called `running` until they are seen (or, past [`CONFIRM_GRACE`], found missing).
    unconfirmed: Vec<Piece>,
    /// The tun's `(v4_addr_arrivals, v4_route_arrivals)` when the last repair was asked: an
    /// arrival since then, with the piece absent, means it was put back, seen, and deleted
    /// again — not that its event is still on its way.
    arrivals_at_repair: (u64, u64),
    fight: RepairFight,
    /// A repair failed: the CLAT is restarted whole.
    broken: Option<String>,
}

/// Another program that removes a piece again right after each repair is fought with
/// backoff: [`FREE_REPAIRS`] repairs in a row at once, then each held back twice as long as the
/// one before (2 s, 4 s, … up to [`MAX_REPAIR_HOLD`]). A piece that stays put for
/// [`FIGHT_WINDOW`] after its repair ends the fight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RepairFight {
    /// Repairs in a row, each needed again within [`FIGHT_WINDOW`] of the one before.
    in_a_row: u32,
    last_repair: Option<Instant>,
    /// No repair before this.
    hold_until: Option<Instant>,
    /// What was last found missing, for the status line.
    last_missing: Vec<Piece>,
}

impl RepairFight {
    /// Pieces were found missing at `now`: whether to repair now, else until when to wait.
    fn may_repair(&mut self, missing: &[Piece], now: Instant) -> Result<(), Instant> {
        if let Some(t) = self.hold_until {
            if now < t {
                return Err(t);
            }
        }
        let again = self
            .last_repair
            .is_some_and(|t| now.saturating_duration_since(t) < FIGHT_WINDOW + self.hold());
        self.in_a_row = if again { self.in_a_row + 1 } else { 1 };
        self.last_repair = Some(now);
        self.last_missing = missing.to_vec();
        self.hold_until = Some(now + self.hold());
        Ok(())
    }

    /// The hold after the current streak of repairs.
    fn hold(&self) -> Duration {
        match self.in_a_row.checked_sub(FREE_REPAIRS) {
            None => Duration::ZERO,
            Some(n) => {
                Duration::from_secs(2u64.saturating_pow(n.saturating_add(1))).min(MAX_REPAIR_HOLD)
            }
        }
    }

    fn fighting(&self) -> bool {
        self.in_a_row >= FREE_REPAIRS
    }
}

/// The state of one link that outlives its CLATs.
#[derive(Debug)]
struct LinkCore {
    prefix: PrefixState,
    /// The servers the last RFC 7050 query went to.
    dns_servers_asked: Vec<SocketAddr>,
    /// Up with carrier at the last pass (to forget learnt prefixes on a link bounce).
    was_up: bool,
    decision: Option<Decision>,
    /// Start and translator-restart backoff.
    backoff: Backoff,
    /// No start or translator restart before this.
    retry_at: Option<Instant>,
    /// Why the last start failed (shown while in backoff).
    failure: Option<String>,
    last_exit: Option<String>,
    /// A start was asked for (plan, IPv4 address, metric) and its result has not arrived.
    starting: Option<(ClatPlan, Ipv4Addr, u32)>,
    clat: Option<ClatRecord>,
    /// Repairs of earlier CLATs of this link (status shows the link's total).
    repairs_before: u32,
    /// Router solicitations sent since the link last became eligible, and when the next is due.
    rs_sent: u8,
    rs_next: Option<Instant>,
    /// Hold-down of NAT64 prefix changes.
    damp: PrefixDamp,
}

/// Damping of NAT64 prefix changes (issue 8: a router flapping PREF64 caused a restart storm).
/// The first [`FREE_PREFIX_CHANGES`] changes in a row restart the CLAT at once; after each
/// further restart the next change waits twice as long ([`PREFIX_HOLD_START`] …
/// [`PREFIX_HOLD_MAX`]). [`PREFIX_CALM`] without a change ends the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PrefixDamp {
    /// Prefix restarts in the current run.
    in_a_row: u32,
    last_restart: Option<Instant>,
    /// No prefix restart before this.
    hold_until: Option<Instant>,
    /// The prefix waiting for the hold to end (status shows it).
    waiting: Option<Nat64Prefix>,
}

impl PrefixDamp {
    fn hold(&self) -> Duration {
        match self.in_a_row.checked_sub(FREE_PREFIX_CHANGES) {
            None => Duration::ZERO,
            Some(n) => PREFIX_HOLD_START
                .saturating_mul(2u32.saturating_pow(n.min(16)))
                .min(PREFIX_HOLD_MAX),
        }
    }

    /// The prefix should change to `to` at `now`: whether the CLAT may restart now.
    fn may_change(&mut self, to: Nat64Prefix, now: Instant) -> bool {
        if self.hold_until.is_some_and(|t| now < t) {
            self.waiting = Some(to);
            return false;
        }
        let in_run = self
            .last_restart
            .is_some_and(|t| now.saturating_duration_since(t) < PREFIX_CALM + self.hold());
        self.in_a_row = if in_run { self.in_a_row + 1 } else { 1 };
        self.last_restart = Some(now);
        self.hold_until = Some(now + self.hold());
        self.waiting = None;
        true
    }
}

impl LinkCore {
    fn new(config: &Config, now: Instant) -> Self {
        Self {
            prefix: PrefixState::new(config.discovery.order.clone(), None, now),
            dns_servers_asked: Vec::new(),
            was_up: false,
            decision: None,
            backoff: Backoff::default(),
            retry_at: None,
            failure: None,
            last_exit: None,
            starting: None,
            clat: None,
            repairs_before: 0,
            rs_sent: 0,
            rs_next: None,
            damp: PrefixDamp::default(),
        }
    }

    fn repairs(&self) -> u32 {
        self.repairs_before + self.clat.as_ref().map_or(0, |c| c.repairs)
    }
}

/// The decisions of the daemon; see the module documentation.
#[derive(Debug)]
pub struct Core {
    config: Config,
    dry_run: bool,
    links: BTreeMap<u32, LinkCore>,
    generation: u64,
    /// A start was put off because the pass's budget ran out: pass again at once.
    starts_deferred: bool,
}

/// The pieces the inventory can show, and how to check each.
const OBSERVED: [Piece; 5] = [
    Piece::Tun,
    Piece::LinkUp,
    Piece::Mtu,
    Piece::Address,
    Piece::Route,
];

fn observed(piece: Piece, rec: &ClatRecord, inv: &Inventory) -> bool {
    let Some(tun) = inv.links.get(&rec.started.tun_ifindex) else {
        return false;
    };
    match piece {
        Piece::Tun => true,
        Piece::LinkUp => tun.admin_up,
        Piece::Mtu => rec
            .plan
            .uplink_mtu
            .checked_sub(MTU_DELTA)
            .is_some_and(|m| tun.mtu == m),
        Piece::Address => tun.v4_addrs.iter().any(|a| a.addr == rec.v4),
        Piece::Route => tun
            .default_routes
            .iter()
            .any(|r| r.family == Family::V4 && r.metric == rec.route_metric),
        Piece::Programs | Piece::Translator => true,
    }
}

/// Whether to send a router solicitation on `uplink` now: PREF64 is a source in the order, the
/// uplink could have a CLAT (enabled, up, not ours), it has no PREF64, and fewer than
/// [`ROUTER_SOLICITATIONS`] were sent since it became eligible, the last [`RS_INTERVAL`] ago.
fn rs_wanted(
    config: &Config,
    link: &LinkCore,
    uplink: &Uplink,
    own: bool,
    pref64: Pref64Seen,
    now: Instant,
) -> bool {
    config.discovery.order.contains(&PrefixSource::Pref64)
        && may_have_clat(config.rule_for(&uplink.name).enable, uplink, own)
        && pref64.is_none()
        && link.rs_sent < ROUTER_SOLICITATIONS
        && link.rs_next.is_none_or(|t| now >= t)
}

/// An uplink that could get a CLAT once it knows a prefix: enabled, not loopback or one of
/// ours, up with carrier.
fn may_have_clat(rule_enable: bool, uplink: &Uplink, own: bool) -> bool {
    rule_enable
        && !own
        && !uplink.is_ours()
        && !uplink.loopback
        && uplink.admin_up
        && uplink.carrier
}

/// RFC 7050 only where a CLAT could follow: [`may_have_clat`], and addressed.
fn dns64_may_ask(rule_enable: bool, uplink: &Uplink, own: bool) -> bool {
    may_have_clat(rule_enable, uplink, own)
        && crate::policy::choose_v6_source(&uplink.v6_addrs).is_some()
}

fn pref64_of(uplink: &Uplink) -> Pref64Seen {
    uplink.pref64().map(|p| (p.prefix, p.expires))
}

impl Core {
    /// A core for `config`; with `dry_run` it decides but never asks to start anything.
    pub fn new(config: Config, dry_run: bool) -> Self {
        Self {
            config,
            dry_run,
            links: BTreeMap::new(),
            generation: 0,
            starts_deferred: false,
        }
    }

    /// The configuration it decides by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The interface indexes of the running CLATs' tuns.
    pub fn own_tuns(&self) -> Vec<u32> {
        self.links
            .values()
            .filter_map(|l| l.clat.as_ref().map(|c| c.started.tun_ifindex))
            .collect()
    }

    /// Whether the uplink `ifindex` would get a CLAT if a NAT64 prefix were known: the prefix
    /// is all it waits for (so a failing discovery is worth a warning).
    pub fn would_run_with_a_prefix(&self, inv: &Inventory, ifindex: u32) -> bool {
        let Some(uplink) = inv.links.get(&ifindex) else {
            return false;
        };
        let any = Some((crate::nat64::WELL_KNOWN, PrefixSource::Static));
        decide_with_own_tuns(&self.config, inv, uplink, any, &self.own_tuns())
            .plan()
            .is_some()
    }

    /// The record of the CLAT running on `ifindex`, if any.
    pub fn clat(&self, ifindex: u32) -> Option<&ClatRecord> {
        self.links.get(&ifindex).and_then(|l| l.clat.as_ref())
    }

    /// Takes in what the loop carried out or learnt.
    pub fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Dns64 { ifindex, result } => {
                if let Some(link) = self.links.get_mut(&ifindex) {
                    link.prefix.on_dns64_result(&result, now);
                }
            }
            Input::ChildExited {
                ifindex,
                generation,
                info,
            } => {
                let Some(link) = self.links.get_mut(&ifindex) else {
                    return;
                };
                let Some(clat) = link.clat.as_mut() else {
                    return;
                };
                if clat.generation != generation || !clat.child_alive {
                    return;
                }
                clat.child_alive = false;
                let delay = link.backoff.on_exit(now);
                tracing::warn!(uplink = %clat.plan.uplink, "translator exited ({info}); restarting in {delay:?}");
                link.last_exit = Some(info);
                link.retry_at = Some(now + delay);
            }
            Input::Started { ifindex, result } => {
                let Some(link) = self.links.get_mut(&ifindex) else {
                    return;
                };
                let Some((plan, v4, route_metric)) = link.starting.take() else {
                    return;
                };
                match result {
                    Ok(started) => {
                        self.generation += 1;
                        link.failure = None;
                        link.retry_at = None;
                        link.backoff.on_start(now);
                        link.clat = Some(ClatRecord {
                            tun_name: tun_name(&plan.uplink),
                            plan,
                            v4,
                            route_metric,
                            started,
                            generation: self.generation,
                            child_alive: true,
                            repairs: 0,
                            programs_missing: false,
                            seen: OBSERVED.iter().map(|p| (*p, Seen::Pending(now))).collect(),
                            missing: Vec::new(),
                            unconfirmed: Vec::new(),
                            arrivals_at_repair: (0, 0),
                            fight: RepairFight::default(),
                            broken: None,
                        });
                    }
                    Err(reason) => {
                        let delay = link.backoff.on_exit(now);
                        tracing::error!(ifindex, "cannot start CLAT: {reason}; retry in {delay:?}");
                        link.failure = Some(reason);
                        link.retry_at = Some(now + delay);
                    }
                }
            }
            Input::Repaired {
                ifindex,
                pieces,
                result,
            } => {
                let Some(link) = self.links.get_mut(&ifindex) else {
                    return;
                };
                let Some(clat) = link.clat.as_mut() else {
                    return;
                };
                let restart_only = pieces == [Piece::Translator];
                match result {
                    Ok(started) => {
                        let respawned = started.pid != clat.started.pid;
                        let new_tun = started.tun_ifindex != clat.started.tun_ifindex;
                        clat.started = started;
                        if respawned {
                            self.generation += 1;
                            clat.generation = self.generation;
                            clat.child_alive = true;
                        }
                        if restart_only {
                            link.backoff.on_start(now);
                            link.retry_at = None;
                        } else {
                            clat.repairs = clat.repairs.saturating_add(1);
                            if pieces.contains(&Piece::Programs) {
                                clat.programs_missing = false;
                            }
                        }
                        if new_tun {
                            clat.arrivals_at_repair = (0, 0);
                        }
                        let renewed: &[Piece] = if new_tun || pieces.contains(&Piece::Tun) {
                            &OBSERVED
                        } else {
                            &pieces
                        };
                        for p in renewed {
                            if OBSERVED.contains(p) {
                                clat.seen.insert(*p, Seen::Pending(now));
                                if !clat.unconfirmed.contains(p) {
                                    clat.unconfirmed.push(*p);
                                }
                            }
                        }
                    }
                    Err(reason) if restart_only => {
                        let delay = link.backoff.on_exit(now);
                        tracing::error!(uplink = %clat.plan.uplink, "cannot restart the translator: {reason}; retry in {delay:?}");
                        link.failure = Some(reason);
                        link.retry_at = Some(now + delay);
                    }
                    Err(reason) => {
                        // Half-repaired is not a state to keep: the next pass stops the CLAT
                        // and starts it afresh (after the start backoff).
                        tracing::error!(uplink = %clat.plan.uplink, "repair failed: {reason}; restarting the CLAT");
                        clat.broken = Some(reason);
                    }
                }
            }
            Input::Programs { ifindex, complete } => {
                if let Some(clat) = self.links.get_mut(&ifindex).and_then(|l| l.clat.as_mut()) {
                    clat.programs_missing = !complete;
                }
            }
        }
    }

    /// One idempotent pass over every link: what to ask, start, stop and repair now.
    pub fn reconcile(
        &mut self,
        inv: &Inventory,
        resolv_conf: &[Nameserver],
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        self.starts_deferred = false;

        // Links that disappeared: stop their CLATs (the tun may already be gone with them).
        let gone: Vec<u32> = self
            .links
            .keys()
            .copied()
            .filter(|i| !inv.links.contains_key(i))
            .collect();
        for ifindex in gone {
            if let Some(link) = self.links.remove(&ifindex) {
                if link.clat.is_some() || link.starting.is_some() {
                    actions.push(Action::Stop {
                        ifindex,
                        why: "uplink disappeared".into(),
                    });
                }
            }
        }

        let own = self.own_tuns();
        let mut pass = Pass {
            budget: STARTS_PER_PASS,
            taken: Vec::new(),
            metrics: Vec::new(),
            deferred: false,
        };
        for link in self.links.values() {
            let running = link
                .clat
                .as_ref()
                .map(|c| (c.v4, c.route_metric))
                .or(link.starting.as_ref().map(|(_, v4, m)| (*v4, *m)));
            if let Some((v4, metric)) = running {
                pass.taken.push(v4);
                pass.metrics.push(metric);
            }
        }
        for uplink in inv.links.values() {
            let link = self
                .links
                .entry(uplink.ifindex)
                .or_insert_with(|| LinkCore::new(&self.config, now));
            reconcile_link(
                &self.config,
                self.dry_run,
                link,
                uplink,
                inv,
                &own,
                resolv_conf,
                now,
                &mut pass,
                &mut actions,
            );
        }
        self.starts_deferred = pass.deferred;
        actions
    }

    /// The earliest moment a pass has something to do without an event: a start put off by
    /// the budget, a lifetime running out, a DNS64 query, a retry after backoff, a piece whose
    /// confirmation is overdue, a held-back repair.
    pub fn next_deadline(&self, inv: &Inventory, now: Instant) -> Option<Instant> {
        let mut deadlines: Vec<Instant> = Vec::new();
        if self.starts_deferred {
            deadlines.push(now);
        }
        deadlines.extend(inv.next_expiry());
        let own = self.own_tuns();
        for (ifindex, link) in &self.links {
            let Some(uplink) = inv.links.get(ifindex) else {
                continue;
            };
            // Only where a query could start: elsewhere a due query (a time <= now) would wake
            // the loop on every timer tick and never be started. Those links' prefixes cannot
            // matter before an event makes them eligible, and events reconcile.
            let enable = self.config.rule_for(&uplink.name).enable;
            if dns64_may_ask(enable, uplink, own.contains(ifindex)) {
                deadlines.extend(link.prefix.next_deadline(pref64_of(uplink), now));
            }
            deadlines.extend(link.retry_at);
            if link.rs_sent > 0 && link.rs_sent < ROUTER_SOLICITATIONS && uplink.pref64().is_none()
            {
                deadlines.extend(link.rs_next.filter(|t| *t > now));
            }
            if link.damp.waiting.is_some() {
                deadlines.extend(link.damp.hold_until.filter(|t| *t > now));
            }
            if let Some(clat) = &link.clat {
                for seen in clat.seen.values() {
                    // Only ahead: an overdue piece is missing already (and repaired, or held).
                    if let Seen::Pending(t) = seen {
                        deadlines.extend(Some(*t + CONFIRM_GRACE).filter(|d| *d > now));
                    }
                }
                if !clat.missing.is_empty() {
                    deadlines.extend(clat.fight.hold_until);
                }
            }
        }
        deadlines.into_iter().min()
    }

    /// What `status` shows of each link the inventory knows (counters are the loop's to add).
    pub fn status(&self, inv: &Inventory, now: Instant) -> Vec<UplinkStatus> {
        inv.links
            .values()
            .map(|uplink| self.link_status(uplink, now))
            .collect()
    }

    fn link_status(&self, uplink: &Uplink, now: Instant) -> UplinkStatus {
        let link = self.links.get(&uplink.ifindex);
        let clat = link.and_then(|l| l.clat.as_ref());
        let (state, reason) = match (link, clat) {
            (Some(link), Some(c)) => clat_state(link, c, now),
            (Some(link), None) => match &link.decision {
                Some(Decision::Run(_)) => match &link.failure {
                    Some(f) => (UplinkState::Backoff, Some(f.clone())),
                    None if self.dry_run => (
                        UplinkState::Waiting,
                        Some("dry-run: would start a CLAT".into()),
                    ),
                    None => (UplinkState::Waiting, Some("starting".into())),
                },
                Some(Decision::Skip { state, reason }) => (
                    match state {
                        SkipState::Waiting => UplinkState::Waiting,
                        SkipState::Disabled => UplinkState::Disabled,
                    },
                    Some(reason.clone()),
                ),
                None => (UplinkState::Waiting, Some("not evaluated yet".into())),
            },
            (None, _) => (UplinkState::Waiting, Some("not evaluated yet".into())),
        };
        let prefix = match clat {
            Some(c) => Some((c.plan.prefix, c.plan.prefix_source)),
            None => link.and_then(|l| l.prefix.current(pref64_of(uplink), now)),
        };
        UplinkStatus {
            uplink: uplink.name.clone(),
            ifindex: uplink.ifindex,
            state,
            reason,
            prefix: prefix.map(|(p, _)| p.to_string()),
            prefix_source: prefix.map(|(_, s)| s),
            v4: clat.map(|c| c.v4),
            v6: clat.map(|c| c.started.v6),
            v4_iface: clat.map(|c| c.tun_name.clone()),
            v4_ifindex: clat.map(|c| c.started.tun_ifindex),
            route_metric: clat.map(|c| c.route_metric),
            pid: clat.filter(|c| c.child_alive).map(|c| c.started.pid),
            restarts: link.map_or(0, |l| l.backoff.restarts()),
            repairs: link.map_or(0, LinkCore::repairs),
            fast_path: clat.is_some_and(|c| c.started.fast_path),
            fast_path_reason: clat.and_then(|c| c.started.fast_path_reason.clone()),
            last_exit: link.and_then(|l| l.last_exit.clone()),
            counters: Default::default(),
        }
    }
}

/// The state and reason of a link whose CLAT runs: `running` only while every piece is in
/// place and the translator lives.
fn clat_state(link: &LinkCore, c: &ClatRecord, now: Instant) -> (UplinkState, Option<String>) {
    if let Some(why) = &c.broken {
        return (
            UplinkState::Repairing,
            Some(format!("repair failed ({why}); restarting the CLAT")),
        );
    }
    if !c.missing.is_empty() {
        let what = c
            .missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let reason = match c.fight.hold_until.filter(|t| *t > now) {
            Some(t) if c.fight.fighting() => format!(
                "{what} removed again right after {} repairs in a row (another program manages it?); next repair in {}s",
                c.fight.in_a_row,
                t.saturating_duration_since(now).as_secs().max(1)
            ),
            _ => format!("missing: {what}; repairing"),
        };
        return (UplinkState::Repairing, Some(reason));
    }
    if !c.unconfirmed.is_empty() {
        let what = c
            .unconfirmed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return (
            UplinkState::Repairing,
            Some(format!("put back {what}; waiting to see it in place")),
        );
    }
    if !c.child_alive {
        let exit = link.last_exit.clone().unwrap_or_default();
        let reason = match &link.failure {
            Some(f) => format!("translator exited ({exit}); restart failed: {f}"),
            None => format!("translator exited ({exit}); restarting"),
        };
        return (UplinkState::Backoff, Some(reason));
    }
    if let (Some(next), Some(until)) = (link.damp.waiting, link.damp.hold_until) {
        if until > now {
            return (
                UplinkState::Running,
                Some(format!(
                    "NAT64 prefix changed {} times in a row: held down on {} for {}s more, then {next}",
                    link.damp.in_a_row + 1,
                    c.plan.prefix,
                    until.saturating_duration_since(now).as_secs().max(1)
                )),
            );
        }
    }
    (UplinkState::Running, None)
}

/// Bookkeeping of one pass across links.
struct Pass {
    budget: usize,
    /// IPv4 addresses of running and starting CLATs.
    taken: Vec<Ipv4Addr>,
    /// Route metrics of running and starting CLATs.
    metrics: Vec<u32>,
    deferred: bool,
}

#[allow(clippy::too_many_arguments)]
fn reconcile_link(
    config: &Config,
    dry_run: bool,
    link: &mut LinkCore,
    uplink: &Uplink,
    inv: &Inventory,
    own: &[u32],
    resolv_conf: &[Nameserver],
    now: Instant,
    pass: &mut Pass,
    actions: &mut Vec<Action>,
) {
    let ifindex = uplink.ifindex;
    let up = uplink.admin_up && uplink.carrier;
    if link.was_up && !up {
        // The next network may have another NAT64: ask again when the link is back.
        link.prefix.forget_learnt(now);
    }
    if !up {
        // Solicit again when it is back.
        link.rs_sent = 0;
        link.rs_next = None;
    }
    link.was_up = up;
    let rule = config.rule_for(&uplink.name);
    link.prefix.set_static(rule.nat64_prefix);
    let pref64 = pref64_of(uplink);

    // RFC 8781 PREF64 comes only in RAs, and the kernel cannot be asked for the last one: an
    // eligible uplink without one (after a daemon restart, or on a new link) solicits them.
    if !dry_run && rs_wanted(config, link, uplink, own.contains(&ifindex), pref64, now) {
        link.rs_sent += 1;
        link.rs_next = Some(now + RS_INTERVAL);
        actions.push(Action::SolicitRouters {
            ifindex,
            uplink: uplink.name.clone(),
            nth: link.rs_sent,
        });
    }

    if dns64_may_ask(rule.enable, uplink, own.contains(&ifindex)) {
        let rdnss: Vec<Ipv6Addr> = uplink.rdnss.iter().map(|r| r.server).collect();
        let servers = crate::discovery::state::dns_servers(
            &uplink.name,
            ifindex,
            &rdnss,
            resolv_conf,
            &config.discovery.dns_servers,
        );
        // The servers changed (typically: the RA's RDNSS arrived just after its address, and
        // the first query went to /etc/resolv.conf's servers) while no prefix is known: ask the
        // new ones now rather than after a timeout and a backoff.
        let new_servers = !servers.is_empty() && servers != link.dns_servers_asked;
        if new_servers && link.prefix.current(pref64, now).is_none() {
            link.prefix.dns64_retry_now(now);
        }
        if link.prefix.dns64_due(pref64, now) {
            if servers.is_empty() {
                let err = DiscoveryError::NoDnsServers(uplink.name.clone());
                link.prefix.on_dns64_result(&Err(err), now);
            } else {
                link.dns_servers_asked.clone_from(&servers);
                link.prefix.dns64_started(now);
                actions.push(Action::QueryDns64 {
                    ifindex,
                    uplink: uplink.name.clone(),
                    servers,
                });
            }
        }
    }

    let prefix = link.prefix.current(pref64, now);
    let decision = decide_with_own_tuns(config, inv, uplink, prefix, own);
    if link.decision.as_ref() != Some(&decision) {
        match &decision {
            Decision::Run(plan) => tracing::info!(
                uplink = %uplink.name,
                "needs a CLAT: prefix {} ({}), source /64 {}",
                plan.prefix,
                plan.prefix_source,
                plan.v6_net
            ),
            Decision::Skip { reason, .. } => {
                tracing::info!(uplink = %uplink.name, "no CLAT: {reason}")
            }
        }
        if dry_run && decision.plan().is_some() {
            tracing::info!(uplink = %uplink.name, "dry-run: would start a CLAT");
        }
    }
    link.decision = Some(decision.clone());

    let plan = match decision {
        Decision::Run(plan) => plan,
        Decision::Skip { reason, .. } => {
            link.retry_at = None;
            link.failure = None;
            if let Some(c) = link.clat.take() {
                link.repairs_before = link.repairs_before.saturating_add(c.repairs);
                actions.push(Action::Stop {
                    ifindex,
                    why: format!("no longer wanted: {reason}"),
                });
            }
            return;
        }
    };

    // A running CLAT with other parameters, or one whose repair failed, is stopped; it starts
    // afresh below (at once for new parameters, after the backoff for a failed repair).
    if let Some(c) = link.clat.as_mut() {
        if c.plan.prefix == plan.prefix && c.plan.prefix_source != plan.prefix_source {
            // Same prefix, better source (RFC 9872: PREF64 confirming DNS64): no restart.
            tracing::info!(
                uplink = %uplink.name,
                "NAT64 prefix {} now from {} (was {})",
                plan.prefix,
                plan.prefix_source,
                c.plan.prefix_source
            );
            c.plan.prefix_source = plan.prefix_source;
        }
        if c.plan.prefix == plan.prefix {
            link.damp.waiting = None;
        }
    }
    if let Some(c) = &link.clat {
        let others_changed = c.plan.v6_net != plan.v6_net
            || c.plan.v6_covered != plan.v6_covered
            || c.plan.uplink_mtu != plan.uplink_mtu
            || c.plan.route_metric != plan.route_metric
            || c.plan.fast_path != plan.fast_path;
        let prefix_changed = c.plan.prefix != plan.prefix;
        let changed = others_changed
            || (prefix_changed && c.broken.is_none() && link.damp.may_change(plan.prefix, now));
        // Held down (`changed` false for a prefix change): the CLAT keeps its prefix, and its
        // pieces are still looked after below, until the hold ends.
        let why = match (&c.broken, changed) {
            (Some(why), _) => Some(format!("repair failed: {why}")),
            (None, true) => Some(format!("parameters changed (prefix now {})", plan.prefix)),
            (None, false) => None,
        };
        if let Some(why) = why {
            if c.broken.is_some() {
                let delay = link.backoff.on_exit(now);
                link.retry_at = Some(now + delay);
                link.failure = Some(why.clone());
            }
            link.repairs_before = link.repairs_before.saturating_add(c.repairs);
            pass.taken.retain(|a| *a != c.v4);
            pass.metrics.retain(|m| *m != c.route_metric);
            link.clat = None;
            actions.push(Action::Stop { ifindex, why });
        }
    }
    if dry_run || link.starting.is_some() {
        return;
    }
    let due = link.retry_at.is_none_or(|t| t <= now);
    let Some(clat) = link.clat.as_mut() else {
        if !due {
            return;
        }
        if pass.budget == 0 {
            pass.deferred = true;
            return;
        }
        // A CLAT address of its own while 192.0.0.0/29 has one free; beyond that, CLATs share
        // one (an address may sit on several interfaces, and only the CLAT with the best route
        // carries new connections), so any number of uplinks can have a CLAT.
        let foreign = inv
            .links
            .values()
            .filter(|l| !l.is_ours() && !own.contains(&l.ifindex))
            .flat_map(|l| l.v4_addrs.iter().map(|a| a.addr));
        let Some(v4) =
            choose_v4(inv.v4_addresses_in_use(), &pass.taken).or_else(|| choose_v4(foreign, &[]))
        else {
            let delay = link.backoff.on_exit(now);
            link.failure = Some("every address of 192.0.0.0/29 is in use by other software".into());
            link.retry_at = Some(now + delay);
            return;
        };
        // The kernel refuses two IPv4 default routes with one metric: a second CLAT with the
        // same configured metric takes the next free one (status shows which).
        let mut route_metric = plan.route_metric;
        while pass.metrics.contains(&route_metric) {
            route_metric = route_metric.saturating_add(1);
        }
        pass.budget -= 1;
        pass.taken.push(v4);
        pass.metrics.push(route_metric);
        link.starting = Some((plan.clone(), v4, route_metric));
        actions.push(Action::Start {
            ifindex,
            tun_name: tun_name(&plan.uplink),
            plan,
            v4,
            route_metric,
        });
        return;
    };

    // Desired against observed: every piece the inventory can show, and the programs.
    let mut missing = Vec::new();
    let arrivals = inv
        .links
        .get(&clat.started.tun_ifindex)
        .map_or((0, 0), |t| (t.v4_addr_arrivals, t.v4_route_arrivals));
    for piece in OBSERVED {
        if observed(piece, clat, inv) {
            clat.seen.insert(piece, Seen::Present);
            clat.unconfirmed.retain(|p| *p != piece);
        } else {
            let seen_and_gone = match piece {
                Piece::Address => arrivals.0 > clat.arrivals_at_repair.0,
                Piece::Route => arrivals.1 > clat.arrivals_at_repair.1,
                _ => false,
            };
            match clat.seen.get(&piece) {
                Some(Seen::Pending(t)) if now < *t + CONFIRM_GRACE && !seen_and_gone => {}
                _ => missing.push(piece),
            }
        }
    }
    if clat.programs_missing {
        missing.push(Piece::Programs);
    }
    if missing.contains(&Piece::Tun) {
        // A new tun brings everything that lives on it.
        missing = vec![Piece::Tun];
    }
    if !missing.is_empty() {
        if clat.missing != missing {
            tracing::warn!(uplink = %uplink.name, "missing: {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
        }
        clat.missing.clone_from(&missing);
        clat.unconfirmed.retain(|p| !missing.contains(p));
        if clat.fight.may_repair(&missing, now).is_ok() {
            clat.arrivals_at_repair = arrivals;
            actions.push(Action::Repair {
                ifindex,
                pieces: missing,
            });
        }
        return;
    }
    clat.missing.clear();
    if !clat.child_alive && due {
        actions.push(Action::Repair {
            ifindex,
            pieces: vec![Piece::Translator],
        });
    }
}
