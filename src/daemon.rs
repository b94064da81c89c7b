//! The daemon's event loop: the one owner of the inventory, the per-uplink discovery state and
//! the running CLATs. Netlink events, DNS64 answers, child exits, control requests and timer
//! expiries all end in the same idempotent [`Daemon::reconcile`] step. Nothing polls: when no
//! deadline is pending the loop sleeps until an event arrives.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bpf::{ClatBpf, ClatBpfConfig};
use crate::config::{Config, FastPathMode};
use crate::control::{
    ClatCounters, ControlRequest, DirCounters, StatusReport, UplinkState, UplinkStatus,
};
use crate::controller::addressing::{checksum_neutral_v6, choose_v4, tun_name};
use crate::controller::backoff::Backoff;
use crate::controller::{ClatSpec, Controller, RunningClat};
use crate::discovery::dns::{query_dns64, Dns64Answer};
use crate::discovery::state::PrefixState;
use crate::discovery::DiscoveryError;
use crate::policy::{decide, ClatPlan, Decision, SkipState};
use crate::translator::sockets::{open_rx, open_tx, rx_filter, set_rx_filter, FastPathExclusion};
use crate::watch::inventory::NetEvent;
use crate::watch::{Inventory, Uplink};

/// How long one RFC 7050 query may take before it counts as failed.
const DNS64_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The rtnetlink connection could not be opened.
    #[error("cannot open rtnetlink: {0}")]
    Netlink(#[source] std::io::Error),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The watcher stopped.
    #[error("netlink watcher failed: {0}")]
    Watch(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

/// What `autoclat run` was asked to do.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub config: Config,
    /// Change nothing; log what would be done.
    pub dry_run: bool,
    /// The translator binary to spawn.
    pub clatd_path: PathBuf,
}

/// Events from the helper tasks to the loop.
#[derive(Debug)]
enum Event {
    Net(NetEvent),
    WatchFailed(String),
    Dns64 {
        ifindex: u32,
        result: Result<Dns64Answer, DiscoveryError>,
    },
    /// The translator of that CLAT generation has exited (not yet reaped).
    ChildExited {
        ifindex: u32,
        generation: u64,
    },
}

/// A CLAT the daemon started, with everything needed to stop it exactly.
struct ActiveClat {
    plan: ClatPlan,
    running: RunningClat,
    bpf: Option<ClatBpf>,
    /// The supervisor's copy of the translator's receive socket, to swap its filter when the
    /// fast path goes on or off.
    rx_fd: std::os::fd::OwnedFd,
    /// The uplink's proxy_delay before we set it to 0, restored on stop.
    proxy_delay: Option<ProxyDelay>,
    /// Incremented on every (re)spawn, so exit events of an older child are ignored.
    generation: u64,
    child_alive: bool,
}

/// Per-link state that outlives individual CLATs.
struct LinkState {
    prefix: PrefixState,
    dns_in_flight: bool,
    clat: Option<ActiveClat>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    /// Why the last start attempt failed (shown while in backoff).
    failure: Option<String>,
    last_exit: Option<String>,
    fast_path_reason: Option<String>,
    decision: Option<Decision>,
    /// The servers the last RFC 7050 query went to.
    dns_servers_asked: Vec<std::net::SocketAddr>,
    /// Up with carrier at the last reconcile (to forget learnt prefixes on a link bounce).
    was_up: bool,
}

impl LinkState {
    fn new(config: &Config) -> Self {
        Self {
            prefix: PrefixState::new(
                config.discovery.order.clone(),
                None,
                std::time::Instant::now(),
            ),
            dns_in_flight: false,
            clat: None,
            backoff: Backoff::default(),
            restart_at: None,
            failure: None,
            last_exit: None,
            fast_path_reason: None,
            decision: None,
            was_up: false,
            dns_servers_asked: Vec::new(),
        }
    }
}

/// The daemon: owns all state; see the module documentation.
pub struct Daemon {
    opts: DaemonOptions,
    inventory: Inventory,
    links: BTreeMap<u32, LinkState>,
    controller: Controller,
    handle: rtnetlink::Handle,
    events: mpsc::Sender<Event>,
    generation: u64,
    resolv_conf: Vec<crate::discovery::resolvconf::Nameserver>,
    /// CLAT starts left in this reconcile pass ([`STARTS_PER_PASS`]).
    start_budget: usize,
    /// A start was put off because the budget ran out: reconcile again at once, after the loop
    /// has answered whatever else is waiting (status requests, signals).
    starts_deferred: bool,
}

/// CLATs started per reconcile pass. Each start takes some tens of ms; with many uplinks
/// appearing at once the loop returns between batches, so `status` and SIGTERM are answered
/// while the rest start.
const STARTS_PER_PASS: usize = 4;

/// Run the daemon until SIGTERM or SIGINT; then stop every CLAT and return.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;

    let listener_path = PathBuf::from(&opts.config.daemon.control_socket);
    let (control_tx, mut control_rx) = mpsc::channel(16);
    // Bind before touching the system, so a second daemon fails early and cleanly.
    let listener = crate::control::listen(&listener_path)?;
    tokio::spawn(async move {
        if let Err(e) = crate::control::serve_listener(listener, control_tx).await {
            tracing::error!("control socket stopped: {e}");
        }
    });

    let (conn, handle, _) = rtnetlink::new_connection().map_err(DaemonError::Netlink)?;
    tokio::spawn(conn);

    let (events_tx, mut events_rx) = mpsc::channel::<Event>(1024);
    let (net_tx, mut net_rx) = mpsc::channel::<NetEvent>(1024);
    {
        let events_tx = events_tx.clone();
        tokio::spawn(async move {
            let r = crate::watch::netlink::run(net_tx).await;
            let msg = match r {
                Ok(()) => "watcher ended".to_string(),
                Err(e) => e.to_string(),
            };
            let _ = events_tx.send(Event::WatchFailed(msg)).await;
        });
    }
    {
        let events_tx = events_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = net_rx.recv().await {
                if events_tx.send(Event::Net(ev)).await.is_err() {
                    break;
                }
            }
        });
    }

    let mut daemon = Daemon {
        controller: Controller::new(handle.clone()),
        handle,
        inventory: Inventory::default(),
        links: BTreeMap::new(),
        events: events_tx,
        generation: 0,
        resolv_conf: crate::discovery::resolvconf::read_system_nameservers(),
        start_budget: STARTS_PER_PASS,
        starts_deferred: false,
        opts,
    };
    daemon.clean_leftovers().await;
    tracing::info!(
        dry_run = daemon.opts.dry_run,
        clatd = %daemon.opts.clatd_path.display(),
        "autoclat running; control socket {}",
        listener_path.display()
    );

    let result = loop {
        let deadline = daemon.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break Ok(()); }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break Ok(()); }
            Some(ev) = events_rx.recv() => {
                if let Event::WatchFailed(msg) = ev {
                    break Err(DaemonError::Watch(msg));
                }
                daemon.handle_event(ev).await;
            }
            Some(req) = control_rx.recv() => {
                match req {
                    ControlRequest::Status(reply) => {
                        let report = daemon.status().await;
                        let _ = reply.send(report);
                    }
                }
                continue;
            }
            _ = sleep => {}
        }
        // Drain what else is queued before reconciling, so a burst of netlink events (a link
        // coming up brings a dozen) costs one reconcile.
        while let Ok(ev) = events_rx.try_recv() {
            if let Event::WatchFailed(msg) = ev {
                daemon.stop_all().await;
                let _ = std::fs::remove_file(&listener_path);
                return Err(DaemonError::Watch(msg));
            }
            daemon.handle_event(ev).await;
        }
        daemon.reconcile().await;
    };
    daemon.stop_all().await;
    let _ = std::fs::remove_file(&listener_path);
    result
}

impl Daemon {
    async fn handle_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Net(ev) => {
                self.inventory.apply(ev, now.into_std());
            }
            Event::WatchFailed(_) => {}
            Event::Dns64 { ifindex, result } => {
                if let Some(link) = self.links.get_mut(&ifindex) {
                    link.dns_in_flight = false;
                    let name = self
                        .inventory
                        .links
                        .get(&ifindex)
                        .map_or("?", |u| u.name.as_str());
                    match &result {
                        Ok(a) => tracing::info!(
                            uplink = name,
                            "DNS64 (RFC 7050) via {}: prefix {} (ttl {:?})",
                            a.server,
                            a.prefix,
                            a.ttl
                        ),
                        Err(e) => tracing::warn!(uplink = name, "DNS64 discovery failed: {e}"),
                    }
                    link.prefix.on_dns64_result(&result, now.into_std());
                }
            }
            Event::ChildExited {
                ifindex,
                generation,
            } => {
                let Some(link) = self.links.get_mut(&ifindex) else {
                    return;
                };
                let Some(clat) = link.clat.as_mut() else {
                    return;
                };
                if clat.generation != generation {
                    return;
                }
                let info = match clat.running.child().map(|c| c.try_reap()) {
                    Some(Ok(Some(info))) => info.to_string(),
                    Some(Ok(None)) => return, // still running: a spurious wake-up
                    Some(Err(e)) => format!("cannot reap: {e}"),
                    None => "no translator".to_string(),
                };
                clat.child_alive = false;
                let delay = link.backoff.on_exit(now.into_std());
                tracing::warn!(
                    uplink = %clat.plan.uplink,
                    "translator exited ({info}); restarting in {delay:?}"
                );
                link.last_exit = Some(info.to_string());
                link.restart_at = Some(now + delay);
            }
        }
    }

    /// The earliest moment something must happen without an event: a lifetime running out,
    /// a DNS64 re-query, a restart after backoff.
    fn next_deadline(&self) -> Option<Instant> {
        let now_std = std::time::Instant::now();
        let now = Instant::now();
        let to_tokio = |t: std::time::Instant| now + t.saturating_duration_since(now_std);
        let mut deadlines: Vec<Instant> = Vec::new();
        if self.starts_deferred {
            deadlines.push(now);
        }
        if let Some(t) = self.inventory.next_expiry() {
            deadlines.push(to_tokio(t));
        }
        for (ifindex, link) in &self.links {
            let Some(uplink) = self.inventory.links.get(ifindex) else {
                continue;
            };
            // Only where a query could start: elsewhere a due query (a time <= now) would wake
            // the loop on every timer tick (1 kHz) and never be started. Those links' prefixes
            // cannot matter before an event makes them eligible, and events reconcile.
            let enable = self.opts.config.rule_for(&uplink.name).enable;
            if dns64_may_ask(enable, uplink) {
                if let Some(t) = link.prefix.next_deadline(now_std) {
                    deadlines.push(to_tokio(t));
                }
            }
            if let Some(t) = link.restart_at {
                deadlines.push(t);
            }
        }
        deadlines.into_iter().min()
    }

    async fn clean_leftovers(&mut self) {
        if self.opts.dry_run {
            return;
        }
        // One dump serves both clean-ups below.
        let inventory = crate::watch::netlink::dump().await.ok();
        let links = || inventory.iter().flat_map(|inv| inv.links.values());
        // Translators a killed run left behind still hold their tun: stop them first.
        for link in links().filter(|l| l.is_ours()) {
            crate::controller::leftovers::stop_tun_holders(&link.name, Duration::from_secs(2))
                .await;
        }
        match self.controller.remove_leftovers().await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(
                    "removed leftovers of an earlier run: {}",
                    removed.join(", ")
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot clean leftovers of an earlier run: {e}"),
        }
        // tc leftovers (qdiscs of a killed daemon) on every other link; our own tuns are gone
        // with their tc state.
        for link in links().filter(|l| !l.is_ours()) {
            if let Err(e) = crate::bpf::remove_leftovers(link.ifindex) {
                tracing::debug!(uplink = %link.name, "bpf leftovers: {e}");
            }
        }
    }

    /// One idempotent pass: bring running CLATs in line with what the policy wants.
    async fn reconcile(&mut self) {
        let now = Instant::now();
        let now_std = now.into_std();
        self.inventory.expire(now_std);
        self.start_budget = STARTS_PER_PASS;
        self.starts_deferred = false;

        // Links that disappeared: stop their CLATs (the tun may already be gone with them).
        let gone: Vec<u32> = self
            .links
            .keys()
            .copied()
            .filter(|i| !self.inventory.links.contains_key(i))
            .collect();
        for ifindex in gone {
            if let Some(mut link) = self.links.remove(&ifindex) {
                if let Some(clat) = link.clat.take() {
                    self.stop_clat(clat, "uplink disappeared").await;
                }
            }
        }

        // Our tun devices are ours even before the kernel reports their alias (an alias change
        // alone sends no netlink event): their IPv4 default route is not native IPv4.
        for link in self.links.values() {
            if let Some(clat) = &link.clat {
                if let Some(tun) = self.inventory.links.get_mut(&clat.running.tun_ifindex) {
                    if !tun.is_ours() {
                        tun.alias = Some(format!("autoclat:{}", clat.plan.uplink));
                    }
                }
            }
        }

        let ifindexes: Vec<u32> = self.inventory.links.keys().copied().collect();
        for ifindex in ifindexes {
            let Some(uplink) = self.inventory.links.get(&ifindex).cloned() else {
                continue;
            };
            if !self.links.contains_key(&ifindex) {
                self.links
                    .insert(ifindex, LinkState::new(&self.opts.config));
            }
            self.reconcile_link(&uplink, now).await;
        }
    }

    async fn reconcile_link(&mut self, uplink: &Uplink, now: Instant) {
        let now_std = now.into_std();
        let rule = self.opts.config.rule_for(&uplink.name).clone();
        let Some(link) = self.links.get_mut(&uplink.ifindex) else {
            return;
        };
        let up = uplink.admin_up && uplink.carrier;
        if link.was_up && !up {
            // The next network may have another NAT64: ask again when the link is back.
            link.prefix.forget_learnt(now_std);
        }
        link.was_up = up;
        link.prefix.set_static(rule.nat64_prefix);
        link.prefix
            .set_pref64(uplink.pref64.as_ref().map(|p| (p.prefix, p.expires)));

        if dns64_may_ask(rule.enable, uplink) {
            let servers = crate::discovery::state::dns_servers(
                &uplink.name,
                uplink.ifindex,
                &uplink.rdnss.iter().map(|r| r.server).collect::<Vec<_>>(),
                &self.resolv_conf,
                &self.opts.config.discovery.dns_servers,
            );
            // The servers changed (typically: the RA's RDNSS arrived just after its address,
            // and the first query went to /etc/resolv.conf's servers) while no prefix is known:
            // ask the new ones now rather than after a timeout and a backoff.
            let new_servers = !servers.is_empty() && servers != link.dns_servers_asked;
            let retry_now = new_servers && link.prefix.current(now_std).is_none();
            if retry_now {
                link.prefix.dns64_retry_now(now_std);
            }
            if (retry_now || !link.dns_in_flight) && link.prefix.dns64_due(now_std) {
                if servers.is_empty() {
                    let err = DiscoveryError::NoDnsServers(uplink.name.clone());
                    link.prefix.on_dns64_result(&Err(err), now_std);
                } else {
                    link.dns_in_flight = true;
                    link.dns_servers_asked.clone_from(&servers);
                    link.prefix.dns64_started(now_std);
                    let tx = self.events.clone();
                    let ifname = uplink.name.clone();
                    let ifindex = uplink.ifindex;
                    tokio::spawn(async move {
                        let result = query_dns64(&ifname, &servers, DNS64_TIMEOUT).await;
                        let _ = tx.send(Event::Dns64 { ifindex, result }).await;
                    });
                }
            }
        }

        let prefix = link.prefix.current(now_std);
        let decision = decide(&self.opts.config, &self.inventory, uplink, prefix);
        let changed = link.decision.as_ref() != Some(&decision);
        if changed {
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
        }
        link.decision = Some(decision.clone());

        match decision {
            Decision::Run(plan) => {
                let needs_restart = link.clat.as_ref().is_some_and(|c| {
                    c.plan.prefix != plan.prefix
                        || c.plan.v6_net != plan.v6_net
                        || c.plan.uplink_mtu != plan.uplink_mtu
                        || c.plan.route_metric != plan.route_metric
                        || c.plan.fast_path != plan.fast_path
                });
                if needs_restart {
                    if let Some(clat) = link.clat.take() {
                        let why = format!("parameters changed (prefix now {})", plan.prefix);
                        self.stop_clat(clat, &why).await;
                    }
                }
                let Some(link) = self.links.get_mut(&uplink.ifindex) else {
                    return;
                };
                let due = link.restart_at.is_none_or(|t| t <= now);
                if !due {
                    return;
                }
                if self.opts.dry_run {
                    if changed {
                        tracing::info!(uplink = %uplink.name, "dry-run: would start a CLAT");
                    }
                    return;
                }
                match link.clat.as_ref().map(|c| c.child_alive) {
                    None if self.start_budget == 0 => self.starts_deferred = true,
                    None => {
                        self.start_budget -= 1;
                        self.start_clat(uplink, plan).await;
                    }
                    Some(false) => self.respawn(uplink.ifindex).await,
                    Some(true) => {}
                }
            }
            Decision::Skip { .. } => {
                link.restart_at = None;
                link.failure = None;
                if let Some(clat) = link.clat.take() {
                    self.stop_clat(clat, "no longer wanted").await;
                }
            }
        }
    }

    async fn start_clat(&mut self, uplink: &Uplink, plan: ClatPlan) {
        let now = Instant::now();
        let running = || self.links.values().filter_map(|l| l.clat.as_ref());
        let taken: Vec<Ipv4Addr> = running().map(|c| c.running.spec.v4).collect();
        // The kernel refuses two IPv4 default routes with one metric: a second CLAT with the
        // same configured metric takes the next free one (status shows which).
        let mut metric = plan.route_metric;
        while running().any(|c| c.running.spec.route_metric == metric) {
            metric = metric.saturating_add(1);
        }
        let result = self.try_start(uplink, &plan, &taken, metric).await;
        let Some(link) = self.links.get_mut(&uplink.ifindex) else {
            return;
        };
        match result {
            Ok(mut active) => {
                self.generation += 1;
                active.generation = self.generation;
                link.failure = None;
                link.restart_at = None;
                link.backoff.on_start(now.into_std());
                link.fast_path_reason = active.bpf_reason.take();
                let active = active.into_active();
                watch_child(&self.events, uplink.ifindex, &active);
                tracing::info!(
                    uplink = %uplink.name,
                    "CLAT up: {} -> {} on {} (pid {}, fast path {})",
                    active.running.spec.v4,
                    active.running.spec.v6,
                    active.running.spec.tun_name,
                    active.running.pid,
                    if active.bpf.as_ref().is_some_and(ClatBpf::fast_path) { "on" } else { "off" }
                );
                link.clat = Some(active);
                release_freed_heap();
            }
            Err(reason) => {
                let delay = link.backoff.on_exit(now.into_std());
                tracing::error!(uplink = %uplink.name, "cannot start CLAT: {reason}; retry in {delay:?}");
                link.failure = Some(reason);
                link.restart_at = Some(now + delay);
            }
        }
    }

    /// Every step of DESIGN §3 "What the controller does"; on failure nothing is left behind.
    async fn try_start(
        &self,
        uplink: &Uplink,
        plan: &ClatPlan,
        taken: &[Ipv4Addr],
        route_metric: u32,
    ) -> Result<PendingClat, String> {
        if !self.opts.clatd_path.exists() {
            return Err(format!(
                "translator binary {} is missing (build `clatd`, or set daemon.clatd_path)",
                self.opts.clatd_path.display()
            ));
        }
        // `fast_path = "on"` where eBPF cannot load: fail before anything is created, rather
        // than set up the tun, route and translator only to undo them on every retry.
        if plan.fast_path == FastPathMode::On {
            crate::bpf::probe().map_err(|e| {
                format!("fast_path = \"on\" but the eBPF fast path cannot attach: {e}")
            })?;
        }
        // A CLAT address of its own while 192.0.0.0/29 has one free; beyond that, CLATs share
        // one (an address may sit on several interfaces, and only the CLAT with the best route
        // carries new connections), so any number of uplinks can have a CLAT.
        let foreign = || {
            self.inventory
                .links
                .values()
                .filter(|l| !l.is_ours())
                .flat_map(|l| l.v4_addrs.iter().map(|a| a.addr))
        };
        let v4 = choose_v4(self.inventory.v4_addresses_in_use(), taken)
            .or_else(|| choose_v4(foreign(), &[]))
            .ok_or("every address of 192.0.0.0/29 is in use by other software")?;
        let v6 = checksum_neutral_v6(plan.v6_net, v4, &plan.prefix, random_u64());
        let rx = open_rx(uplink.ifindex, v6, None).map_err(|e| format!("receive socket: {e}"))?;
        let rx_copy = rx.try_clone().map_err(|e| format!("receive socket: {e}"))?;
        let tx = open_tx(uplink.ifindex, None).map_err(|e| format!("send socket: {e}"))?;
        let mut extra_fds = vec![(rx, "-r"), (tx, "-w")];
        // TCP super-packets from the tun leave whole through this one; without it the
        // translator cuts them itself, which is slower but correct.
        match crate::translator::open_gso_tx(uplink.ifindex, None) {
            Ok(gso) => extra_fds.push((gso, "-g")),
            Err(e) => tracing::warn!(uplink = %uplink.name, "GSO send socket: {e}"),
        }
        let spec = ClatSpec {
            uplink: uplink.name.clone(),
            uplink_ifindex: uplink.ifindex,
            tun_name: tun_name(&uplink.name),
            v4,
            v6,
            prefix: plan.prefix,
            mtu: plan.uplink_mtu,
            route_metric,
            clatd_path: self.opts.clatd_path.clone(),
            route_table: None,
            fwmark: None,
            extra_fds,
        };
        let running = self
            .controller
            .start(spec)
            .await
            .map_err(|e| e.to_string())?;

        // Step 5: the ingress guard (drops the kernel's copy of packets to the CLAT address)
        // and, when enabled, the fast path.
        let want_fast = plan.fast_path != FastPathMode::Off;
        let bpf_cfg = ClatBpfConfig {
            uplink_ifindex: uplink.ifindex,
            tun_ifindex: running.tun_ifindex,
            v4,
            v6,
            prefix: plan.prefix,
            fast_path: want_fast,
            uplink_is_ethernet: uplink.kind.as_deref() != Some("tun"),
        };
        let (bpf, bpf_reason) = match ClatBpf::attach(&bpf_cfg) {
            Ok(b) => (
                Some(b),
                if want_fast {
                    None
                } else {
                    Some("disabled by config".into())
                },
            ),
            Err(e) if plan.fast_path == FastPathMode::On => {
                let errs = self.controller.stop(running).await;
                for err in errs {
                    tracing::warn!("undo after failed fast path: {err}");
                }
                return Err(format!(
                    "fast_path = \"on\" but the eBPF fast path cannot attach: {e}"
                ));
            }
            Err(e) if want_fast => {
                tracing::warn!(uplink = %uplink.name, "eBPF fast path unavailable, userspace only: {e}");
                // Still try the guard alone.
                let guard = ClatBpf::attach(&ClatBpfConfig {
                    fast_path: false,
                    ..bpf_cfg
                })
                .ok();
                (guard, Some(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(uplink = %uplink.name, "cannot attach the ingress guard: {e}");
                (None, Some("disabled by config".into()))
            }
        };
        if bpf.as_ref().is_none_or(|b| !b.fast_path()) && bpf.is_none() {
            tracing::warn!(
                uplink = %uplink.name,
                "without the eBPF ingress guard the host may answer UDP sent to {v6} with ICMPv6 port unreachable"
            );
        }
        if let Some(b) = &bpf {
            if b.fast_path() {
                let filter = rx_filter(
                    v6,
                    Some(&FastPathExclusion {
                        prefix: plan.prefix,
                    }),
                );
                use std::os::fd::AsFd;
                if let Err(e) = set_rx_filter(rx_copy.as_fd(), &filter) {
                    tracing::warn!(uplink = %uplink.name, "cannot narrow the receive filter: {e}");
                }
            }
        }
        // Neighbour advertisements for an anycast address wait up to proxy_delay (0.8 s by
        // default): without this the router's first packet to the CLAT waits that long.
        let proxy_delay = ProxyDelay::set_zero(&uplink.name);
        Ok(PendingClat {
            proxy_delay,
            plan: plan.clone(),
            running,
            bpf,
            bpf_reason,
            rx_fd: rx_copy,
            generation: 0,
        })
    }

    async fn respawn(&mut self, ifindex: u32) {
        let now = Instant::now();
        self.generation += 1;
        let generation = self.generation;
        let Some(link) = self.links.get_mut(&ifindex) else {
            return;
        };
        let Some(clat) = link.clat.as_mut() else {
            return;
        };
        match self.controller.restart_translator(&mut clat.running).await {
            Ok(()) => {
                clat.generation = generation;
                clat.child_alive = true;
                link.backoff.on_start(now.into_std());
                link.restart_at = None;
                link.failure = None;
                tracing::info!(uplink = %clat.plan.uplink, "translator restarted (pid {})", clat.running.pid);
                watch_child(&self.events, ifindex, clat);
            }
            Err(e) => {
                let delay = link.backoff.on_exit(now.into_std());
                tracing::error!(uplink = %clat.plan.uplink, "cannot restart translator: {e}; retry in {delay:?}");
                link.failure = Some(e.to_string());
                link.restart_at = Some(now + delay);
            }
        }
    }

    async fn stop_clat(&mut self, clat: ActiveClat, why: &str) {
        stop_active(&self.controller, clat, why).await;
    }

    /// Stops every CLAT, concurrently, so that the translators' exits overlap (64 CLATs:
    /// 5.3 s one after the other, 4.7 s so; the rest is the kernel removing each tun and
    /// detaching each program, serialised there).
    async fn stop_all(&mut self) {
        let clats: Vec<ActiveClat> = self
            .links
            .values_mut()
            .filter_map(|l| l.clat.take())
            .collect();
        let controller = &self.controller;
        futures::future::join_all(
            clats
                .into_iter()
                .map(|clat| stop_active(controller, clat, "daemon stopping")),
        )
        .await;
    }

    async fn status(&self) -> StatusReport {
        let now = std::time::Instant::now();
        let mut uplinks = Vec::new();
        for (ifindex, uplink) in &self.inventory.links {
            let link = self.links.get(ifindex);
            let clat = link.and_then(|l| l.clat.as_ref());
            let (state, reason) = match (link.and_then(|l| l.decision.as_ref()), clat) {
                (_, Some(c)) if c.child_alive => (UplinkState::Running, None),
                (_, Some(_)) => (
                    UplinkState::Backoff,
                    Some(format!(
                        "translator exited ({}); restarting",
                        link.and_then(|l| l.last_exit.clone()).unwrap_or_default()
                    )),
                ),
                (Some(Decision::Run(_)), None) => match link.and_then(|l| l.failure.clone()) {
                    Some(f) => (UplinkState::Backoff, Some(f)),
                    None if self.opts.dry_run => (
                        UplinkState::Waiting,
                        Some("dry-run: would start a CLAT".into()),
                    ),
                    None => (UplinkState::Waiting, Some("starting".into())),
                },
                (Some(Decision::Skip { state, reason }), None) => (
                    match state {
                        SkipState::Waiting => UplinkState::Waiting,
                        SkipState::Disabled => UplinkState::Disabled,
                    },
                    Some(reason.clone()),
                ),
                (None, None) => (UplinkState::Waiting, Some("not evaluated yet".into())),
            };
            let prefix = match clat {
                Some(c) => Some((c.plan.prefix, c.plan.prefix_source)),
                None => link.and_then(|l| l.prefix.current(now)),
            };
            let mut counters = ClatCounters::default();
            if let Some(c) = clat {
                counters.translator = self.tun_counters(c.running.tun_ifindex).await;
                if let Some(b) = &c.bpf {
                    if let Ok(fp) = b.counters() {
                        counters.fast_path = DirCounters {
                            v4_to_v6_packets: fp.v4_to_v6_packets,
                            v4_to_v6_bytes: fp.v4_to_v6_bytes,
                            v6_to_v4_packets: fp.v6_to_v4_packets,
                            v6_to_v4_bytes: fp.v6_to_v4_bytes,
                        };
                    }
                }
            }
            uplinks.push(UplinkStatus {
                uplink: uplink.name.clone(),
                ifindex: *ifindex,
                state,
                reason,
                prefix: prefix.map(|(p, _)| p.to_string()),
                prefix_source: prefix.map(|(_, s)| s),
                v4: clat.map(|c| c.running.spec.v4),
                v6: clat.map(|c| c.running.spec.v6),
                v4_iface: clat.map(|c| c.running.spec.tun_name.clone()),
                v4_ifindex: clat.map(|c| c.running.tun_ifindex),
                route_metric: clat.map(|c| c.running.spec.route_metric),
                pid: clat.filter(|c| c.child_alive).map(|c| c.running.pid),
                restarts: link.map_or(0, |l| l.backoff.restarts()),
                repairs: 0,
                fast_path: clat
                    .and_then(|c| c.bpf.as_ref())
                    .is_some_and(ClatBpf::fast_path),
                fast_path_reason: clat.and_then(|_| link.and_then(|l| l.fast_path_reason.clone())),
                last_exit: link.and_then(|l| l.last_exit.clone()),
                counters,
            });
        }
        StatusReport { uplinks }
    }

    /// The translator's share of the traffic, from the tun's own statistics: what the host
    /// sent into the tun went to `clatd` (IPv4 → IPv6); what `clatd` wrote came back.
    async fn tun_counters(&self, tun_ifindex: u32) -> DirCounters {
        use netlink_packet_route::link::LinkAttribute;
        let mut req = self.handle.link().get().match_index(tun_ifindex).execute();
        let mut out = DirCounters::default();
        if let Ok(Some(msg)) = req.try_next().await {
            for attr in msg.attributes {
                if let LinkAttribute::Stats64(s) = attr {
                    out.v4_to_v6_packets = s.tx_packets;
                    out.v4_to_v6_bytes = s.tx_bytes;
                    out.v6_to_v4_packets = s.rx_packets;
                    out.v6_to_v4_bytes = s.rx_bytes;
                }
            }
        }
        out
    }
}

/// A started CLAT before it is filed into its link's state.
struct PendingClat {
    proxy_delay: Option<ProxyDelay>,
    plan: ClatPlan,
    running: RunningClat,
    bpf: Option<ClatBpf>,
    bpf_reason: Option<String>,
    rx_fd: std::os::fd::OwnedFd,
    generation: u64,
}

impl PendingClat {
    fn into_active(self) -> ActiveClat {
        ActiveClat {
            plan: self.plan,
            running: self.running,
            bpf: self.bpf,
            rx_fd: self.rx_fd,
            proxy_delay: self.proxy_delay,
            generation: self.generation,
            child_alive: true,
        }
    }
}

/// Report the child's exit to the loop, without polling: a second pidfd of our own becomes
/// readable when the child terminates. Reaping stays with the controller's `ChildWatch`.
fn watch_child(events: &mpsc::Sender<Event>, ifindex: u32, clat: &ActiveClat) {
    let pid = clat.running.pid;
    let generation = clat.generation;
    let tx = events.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::controller::spawn::terminated(nix::unistd::Pid::from_raw(pid)).await
        {
            tracing::warn!(pid, "cannot watch translator: {e}");
            return;
        }
        let _ = tx
            .send(Event::ChildExited {
                ifindex,
                generation,
            })
            .await;
    });
}

/// The reverse of a CLAT start: fast path detached, receive socket closed, proxy_delay
/// restored, then the controller's undo steps.
async fn stop_active(controller: &Controller, clat: ActiveClat, why: &str) {
    tracing::info!(uplink = %clat.plan.uplink, "stopping CLAT: {why}");
    if let Some(bpf) = clat.bpf {
        if let Err(e) = bpf.detach() {
            tracing::warn!(uplink = %clat.plan.uplink, "detaching eBPF: {e}");
        }
    }
    drop(clat.rx_fd);
    if let Some(pd) = clat.proxy_delay {
        pd.restore();
    }
    for e in controller.stop(clat.running).await {
        tracing::warn!(uplink = %clat.plan.uplink, "while stopping: {e}");
    }
}

/// Hand heap freed during a CLAT start back to the kernel. Starting one (the eBPF loader above
/// all) leaves ~15 MiB of freed heap that glibc keeps: measured with netns-tests/bench, the idle
/// supervisor sat at 23.9 MiB RSS (16.5 MiB anonymous) and fell to 8.5 MiB after a
/// `malloc_trim` (DESIGN §5 aims at ≤ 10 MiB).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers and
    // is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// RFC 7050 only where a CLAT could follow: enabled, up, addressed.
fn dns64_may_ask(rule_enable: bool, uplink: &Uplink) -> bool {
    rule_enable
        && !uplink.is_ours()
        && !uplink.loopback
        && uplink.admin_up
        && uplink.carrier
        && crate::policy::choose_v6_source(&uplink.v6_addrs).is_some()
}

/// 64 random bits for the CLAT's interface identifier (RFC 7217-style freshness is enough:
/// the address only has to be unpredictable and unused).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        // Fall back to time and pid; uniqueness on the link is checked by DAD-free anycast
        // anyway and collisions are astronomically unlikely.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_ne_bytes(buf)
}

/// `net.ipv6.neigh.<uplink>.proxy_delay`, set to 0 while a CLAT runs and restored after.
struct ProxyDelay {
    path: PathBuf,
    old: String,
}

impl ProxyDelay {
    fn set_zero(uplink: &str) -> Option<Self> {
        let path = PathBuf::from(format!("/proc/sys/net/ipv6/neigh/{uplink}/proxy_delay"));
        let old = std::fs::read_to_string(&path).ok()?.trim().to_string();
        if old == "0" {
            return None;
        }
        match std::fs::write(&path, "0") {
            Ok(()) => Some(Self { path, old }),
            Err(e) => {
                tracing::warn!(uplink, "cannot set proxy_delay to 0 (first packets to the CLAT may wait up to 0.8 s): {e}");
                None
            }
        }
    }

    fn restore(self) {
        // Only if nobody changed it meanwhile; a vanished uplink has nothing to restore.
        if std::fs::read_to_string(&self.path).is_ok_and(|v| v.trim() == "0") {
            if let Err(e) = std::fs::write(&self.path, &self.old) {
                tracing::debug!("cannot restore {}: {e}", self.path.display());
            }
        }
    }
}
