//! The daemon's event loop: it feeds events in and carries actions out; every decision is the
//! pure [`core::Core`]'s.
//!
//! The loop owns the inventory (built from the watcher's netlink events), the running CLATs'
//! resources (each a [`Clat`], owned through the [`Controller`]), and the helper tasks (watcher,
//! control socket, DNS64 queries, child-exit watches). Each pass: expire lifetimes, check the
//! eBPF programs (TCX links send no events), ask the core what to do, do it, and tell the core
//! how it went. Nothing polls: when no deadline is pending the loop sleeps until an event.
//! See `ARCHITECTURE.md` for the whole picture.

pub mod core;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::control::{ClatCounters, ControlRequest, DirCounters, StatusReport};
use crate::controller::addressing::checksum_neutral_v6;
use crate::controller::restore::Journal;
use crate::controller::{Clat, ClatSpec, Controller};
use crate::discovery::dns::{query_dns64, Dns64Answer};
use crate::discovery::DiscoveryError;
use crate::watch::inventory::NetEvent;
use crate::watch::Inventory;

use self::core::{Action, Core, Input, StartedClat};

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
    /// The journal of original sysctl values cannot be used.
    #[error(transparent)]
    Journal(#[from] crate::controller::restore::RestoreError),
    /// The watcher stopped.
    #[error("netlink watcher failed: {0}")]
    Watch(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// Another daemon runs in this network namespace.
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
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
    /// `/etc/resolv.conf` (or systemd-resolved's upstream list) changed: its nameservers now.
    ResolvConf(Vec<crate::discovery::resolvconf::Nameserver>),
    /// The nftables ruleset or an interface's IPv4 configuration changed (router mode).
    RouterChanged,
}

/// The loop's state: the inventory, the core, and the running CLATs' resources.
struct Daemon {
    opts: DaemonOptions,
    inventory: Inventory,
    core: Core,
    clats: BTreeMap<u32, Clat>,
    controller: Controller,
    handle: rtnetlink::Handle,
    events: mpsc::Sender<Event>,
    resolv_conf: Vec<crate::discovery::resolvconf::Nameserver>,
    hooks: crate::hooks::Hooks,
    /// Where each running CLAT's prefix came from (for the hooks' environment).
    sources: BTreeMap<u32, crate::discovery::PrefixSource>,
    /// The watcher's first dump has been applied (systemd readiness waits for it).
    dumped: bool,
    /// Router mode's pieces, when `[router]` is configured.
    router: Option<crate::controller::router::Router>,
    /// The last router failure logged (each is logged once, not every pass).
    router_error_logged: Option<String>,
}

/// Run the daemon until SIGTERM or SIGINT; then stop every CLAT and return.
pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    // One daemon per network namespace: taken before anything else, held until we return.
    let _instance = crate::instance::acquire()?;
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

    // Original values of what we change on the host, kept beside the control socket (by
    // default /run/autoclat/), one journal per network namespace.
    let runtime_dir = listener_path
        .parent()
        .map_or_else(|| PathBuf::from("/run/autoclat"), |p| p.to_path_buf());
    let mut controller = Controller::new(handle.clone());
    if !opts.dry_run {
        controller = controller.with_journal(Journal::open(&runtime_dir)?);
    }

    let mut daemon = Daemon {
        core: Core::new(opts.config.clone(), opts.dry_run),
        controller,
        handle,
        inventory: Inventory::default(),
        clats: BTreeMap::new(),
        events: events_tx,
        resolv_conf: crate::discovery::resolvconf::read_system_nameservers(),
        hooks: crate::hooks::Hooks::new(opts.config.hooks.clone()),
        sources: BTreeMap::new(),
        dumped: false,
        router: opts
            .config
            .router
            .as_ref()
            .map(|_| crate::controller::router::Router::default()),
        router_error_logged: None,
        opts,
    };
    // systemd (Type=notify): READY=1 once the first dump is in and every uplink has a first
    // decision, STATUS= when the summary changes, WATCHDOG=1 from this loop, STOPPING=1.
    let mut notifier = crate::notify::Notifier::from_env();
    let mut watchdog = notifier
        .as_ref()
        .and_then(|n| n.watchdog_interval())
        .map(tokio::time::interval);
    let mut ready_sent = false;
    daemon.clean_leftovers().await;
    match crate::discovery::resolvwatch::ResolvWatch::new() {
        Ok(mut watch) => {
            let tx = daemon.events.clone();
            tokio::spawn(async move {
                loop {
                    match watch.changed().await {
                        Ok(servers) => {
                            if tx.send(Event::ResolvConf(servers)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("no longer watching /etc/resolv.conf: {e}");
                            return;
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot watch /etc/resolv.conf for changes: {e}"),
    }
    if daemon.router.is_some() && !daemon.opts.dry_run {
        match crate::watch::routerwatch::RouterWatch::new() {
            Ok(mut watch) => {
                let tx = daemon.events.clone();
                tokio::spawn(async move {
                    loop {
                        if let Err(e) = watch.changed().await {
                            tracing::warn!("router mode: no longer watching nftables: {e}");
                            return;
                        }
                        if tx.send(Event::RouterChanged).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(
                "router mode: cannot watch nftables and forwarding for changes ({e}); \
                 removed pieces are put back at the next event or status request"
            ),
        }
    }
    tracing::info!(
        dry_run = daemon.opts.dry_run,
        clatd = %daemon.opts.clatd_path.display(),
        "autoclat running; control socket {}",
        listener_path.display()
    );

    let result = loop {
        let deadline = daemon
            .core
            .next_deadline(&daemon.inventory, std::time::Instant::now())
            .map(Instant::from_std);
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
                daemon.handle_event(ev);
            }
            Some(req) = control_rx.recv() => {
                match req {
                    ControlRequest::Status(reply) => {
                        // TCX links send no events: a status request looks at the programs too,
                        // so that it never shows `running` over detached ones.
                        if daemon.check_programs() || daemon.router_needs_repair() {
                            daemon.pass().await;
                        }
                        let report = daemon.status().await;
                        let _ = reply.send(report);
                    }
                }
                continue;
            }
            _ = sleep => {}
            _ = async {
                match watchdog.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Some(Err(e)) = notifier.as_ref().map(|n| n.watchdog()) {
                    tracing::debug!("sd_notify WATCHDOG: {e}");
                }
                continue;
            }
        }
        // Drain what else is queued before the pass, so a burst of netlink events (a link
        // coming up brings a dozen) costs one pass.
        let mut failed = None;
        while let Ok(ev) = events_rx.try_recv() {
            if let Event::WatchFailed(msg) = ev {
                failed = Some(msg);
                break;
            }
            daemon.handle_event(ev);
        }
        if let Some(msg) = failed {
            break Err(DaemonError::Watch(msg));
        }
        daemon.pass().await;
        if let Some(n) = notifier.as_mut() {
            let report = daemon
                .core
                .status(&daemon.inventory, std::time::Instant::now());
            if !ready_sent && daemon.dumped {
                if let Err(e) = n.ready() {
                    tracing::debug!("sd_notify READY: {e}");
                }
                ready_sent = true;
            }
            let summary = crate::notify::status_summary(&StatusReport {
                uplinks: report,
                ..StatusReport::default()
            });
            if let Err(e) = n.status(&summary) {
                tracing::debug!("sd_notify STATUS: {e}");
            }
        }
    };
    if let Some(Err(e)) = notifier.as_ref().map(|n| n.stopping()) {
        tracing::debug!("sd_notify STOPPING: {e}");
    }
    daemon.stop_all().await;
    // The down hooks run to their end (each bounded by its timeout) before we exit.
    daemon.hooks.finish().await;
    let _ = std::fs::remove_file(&listener_path);
    result
}

impl Daemon {
    fn handle_event(&mut self, ev: Event) {
        let now = std::time::Instant::now();
        match ev {
            Event::Net(ev) => {
                self.dumped |= matches!(ev, NetEvent::Resync(_));
                self.inventory.apply(ev, now);
            }
            Event::WatchFailed(_) | Event::RouterChanged => {}
            Event::ResolvConf(servers) => {
                if servers != self.resolv_conf {
                    tracing::info!(
                        "resolver configuration changed: nameservers {}",
                        servers
                            .iter()
                            .map(|n| n.addr.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.resolv_conf = servers;
                }
            }
            Event::Dns64 { ifindex, result } => {
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
                    // Loud only where the prefix is all a CLAT waits for: a dual-stack uplink
                    // retrying DNS64 is not news.
                    Err(e) if self.core.would_run_with_a_prefix(&self.inventory, ifindex) => {
                        tracing::warn!(uplink = name, "DNS64 discovery failed: {e}")
                    }
                    Err(e) => tracing::debug!(uplink = name, "DNS64 discovery failed: {e}"),
                }
                self.core.on_input(Input::Dns64 { ifindex, result }, now);
            }
            Event::ChildExited {
                ifindex,
                generation,
            } => {
                let Some(clat) = self.clats.get(&ifindex) else {
                    return;
                };
                let info = match clat.child().map(|c| c.try_reap()) {
                    Some(Ok(Some(info))) => info.to_string(),
                    Some(Ok(None)) => return, // still running: a spurious wake-up
                    Some(Err(e)) => format!("cannot reap: {e}"),
                    None => "no translator".to_string(),
                };
                self.core.on_input(
                    Input::ChildExited {
                        ifindex,
                        generation,
                        info,
                    },
                    now,
                );
            }
        }
    }

    /// One pass: what the core wants now, carried out.
    async fn pass(&mut self) {
        let now = std::time::Instant::now();
        self.inventory.expire(now);
        self.check_programs();
        let actions = self.core.reconcile(&self.inventory, &self.resolv_conf, now);
        // Everything but the starts in order (a stop before the start of the same uplink);
        // then the starts of this pass side by side, since each waits for its duplicate
        // address detection.
        let (starts, others): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Start { .. }));
        for action in others {
            self.carry_out(action).await;
        }
        self.start_all(starts).await;
        self.reconcile_router();
    }

    /// What router mode wants now (`None` without `[router]`).
    fn router_want(&self) -> Option<crate::controller::router::RouterWant> {
        let cfg = self.opts.config.router.as_ref()?;
        Some(crate::controller::router::want(
            cfg,
            self.inventory.links.values().map(|l| l.name.as_str()),
            self.clats
                .values()
                .map(|c| (c.spec.tun_name.clone(), c.spec.v4)),
        ))
    }

    /// A router mode piece was removed by someone else (`Router::needs_repair`).
    fn router_needs_repair(&self) -> bool {
        self.router.as_ref().is_some_and(|r| r.needs_repair())
    }

    /// Router mode's pieces brought in line with the running CLATs and downstream links.
    fn reconcile_router(&mut self) {
        let (Some(want), Some(router)) = (self.router_want(), self.router.as_mut()) else {
            return;
        };
        if self.opts.dry_run {
            return;
        }
        match self.controller.reconcile_router(router, &want) {
            Ok(repaired) => {
                for what in repaired {
                    tracing::warn!("router mode: {what} (someone else had removed it)");
                }
                if self.router_error_logged.take().is_some() {
                    tracing::info!("router mode: all pieces in place again");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.router_error_logged.as_deref() != Some(msg.as_str()) {
                    tracing::error!("router mode: {msg}");
                    self.router_error_logged = Some(msg);
                }
            }
        }
    }

    /// Carries out `Action::Start`s side by side (each waits for its duplicate address
    /// detection); each result goes to the core. Other actions in `starts` are ignored.
    async fn start_all(&mut self, starts: Vec<Action>) {
        let prepared: Vec<_> = starts
            .into_iter()
            .filter_map(|a| match a {
                Action::Start {
                    ifindex,
                    plan,
                    tun_name,
                    v4,
                    route_metric,
                } => {
                    let spec = self.clat_spec(ifindex, &plan, tun_name, v4, route_metric);
                    Some((ifindex, plan, spec))
                }
                _ => None,
            })
            .collect();
        if prepared.is_empty() {
            return;
        }
        let controller = &self.controller;
        let results = futures::future::join_all(prepared.into_iter().map(
            |(ifindex, plan, spec)| async move {
                let started = match spec {
                    Ok(spec) => controller.start(spec).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                (ifindex, plan, started)
            },
        ))
        .await;
        for (ifindex, plan, started) in results {
            self.on_started(ifindex, plan, started);
        }
        release_freed_heap();
    }

    /// TCX links send no netlink events: asks the kernel whether each CLAT's programs are all
    /// there and tells the core. Returns whether any is incomplete.
    fn check_programs(&mut self) -> bool {
        let now = std::time::Instant::now();
        let mut any_missing = false;
        for (ifindex, clat) in self.clats.iter_mut() {
            let complete = clat.missing_programs().is_empty();
            any_missing |= !complete;
            self.core.on_input(
                Input::Programs {
                    ifindex: *ifindex,
                    complete,
                },
                now,
            );
        }
        any_missing
    }

    async fn carry_out(&mut self, action: Action) {
        match action {
            Action::QueryDns64 {
                ifindex,
                uplink,
                servers,
            } => {
                let tx = self.events.clone();
                tokio::spawn(async move {
                    let result = query_dns64(&uplink, &servers, DNS64_TIMEOUT).await;
                    let _ = tx.send(Event::Dns64 { ifindex, result }).await;
                });
            }
            start @ Action::Start { .. } => self.start_all(vec![start]).await,
            Action::Stop { ifindex, why } => {
                let ev = self.hook_event(crate::hooks::HookKind::Down, ifindex);
                if let Some(clat) = self.clats.remove(&ifindex) {
                    stop_clat(&self.controller, clat, &why).await;
                }
                // After the stop: the hook sees the system without this CLAT.
                if let Some(ev) = ev {
                    self.hooks.fire(ev);
                }
            }
            Action::SolicitRouters {
                ifindex,
                uplink,
                nth,
            } => match crate::discovery::rs::send_router_solicitation(ifindex) {
                Ok(()) => tracing::info!(
                    uplink = %uplink,
                    "no PREF64 known: router solicitation {nth} of {} sent",
                    crate::daemon::core::ROUTER_SOLICITATIONS
                ),
                Err(e) => tracing::debug!(uplink = %uplink, "{e}"),
            },
            Action::Repair { ifindex, pieces } => {
                let Some(clat) = self.clats.get_mut(&ifindex) else {
                    return;
                };
                let what = pieces
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let old_pid = clat.pid();
                let result = match self.controller.repair(clat, &pieces).await {
                    Ok(done) => {
                        tracing::info!(uplink = %clat.spec.uplink, "repaired {what}: {}", done.join("; "));
                        Ok(started_of(clat))
                    }
                    Err(e) => {
                        tracing::warn!(uplink = %clat.spec.uplink, "cannot repair {what}: {e}");
                        Err(e.to_string())
                    }
                };
                let new_pid = clat.pid();
                self.core.on_input(
                    Input::Repaired {
                        ifindex,
                        pieces,
                        result,
                    },
                    std::time::Instant::now(),
                );
                if new_pid != 0 && new_pid != old_pid {
                    self.watch_child(ifindex);
                }
            }
        }
    }

    /// What the controller is asked to start for an `Action::Start`, or why not (a
    /// `clatd_path` others could replace).
    fn clat_spec(
        &self,
        ifindex: u32,
        plan: &crate::policy::ClatPlan,
        tun_name: String,
        v4: std::net::Ipv4Addr,
        route_metric: u32,
    ) -> Result<ClatSpec, String> {
        let uplink_is_ethernet = self
            .inventory
            .links
            .get(&ifindex)
            .is_none_or(|u| u.kind.as_deref() != Some("tun"));
        // Not one of U's own addresses (a 1 in 2^48 chance, but cheap to rule out).
        let own: Vec<std::net::Ipv6Addr> = self
            .inventory
            .links
            .get(&ifindex)
            .map(|u| u.v6_addrs.iter().map(|a| a.addr).collect())
            .unwrap_or_default();
        let mut v6 = checksum_neutral_v6(plan.v6_net, v4, &plan.prefix, random_u64());
        while own.contains(&v6) {
            v6 = checksum_neutral_v6(plan.v6_net, v4, &plan.prefix, random_u64());
        }
        let spec = ClatSpec {
            uplink: plan.uplink.clone(),
            uplink_ifindex: ifindex,
            uplink_is_ethernet,
            tun_name,
            v4,
            v6,
            v6_covered: plan.v6_covered,
            prefix: plan.prefix,
            mtu: plan.uplink_mtu,
            route_metric,
            route_table: None,
            clatd_path: self.opts.clatd_path.clone(),
            fwmark: None,
            fast_path: plan.fast_path,
            stats_page: self.opts.config.daemon.clatd_path.is_empty(),
            // Router mode's stateless mapping of downstream hosts (none: NAT44 or no router).
            clat_prefix: self
                .opts
                .config
                .router
                .as_ref()
                .and_then(|r| r.clat_prefix()),
        };
        // `clatd_path` is executed with the daemon's privileges: only a file nobody but
        // root can change is run.
        let checked = crate::controller::spawn::check_translator_path(&spec.clatd_path);
        checked.map(|()| spec).map_err(|e| e.to_string())
    }

    /// The outcome of a start: recorded, told to the core, the child watched, the hook fired.
    fn on_started(
        &mut self,
        ifindex: u32,
        plan: crate::policy::ClatPlan,
        started: Result<Clat, String>,
    ) {
        let result = match started {
            Ok(clat) => {
                tracing::info!(
                    uplink = %clat.spec.uplink,
                    "CLAT up: {} -> {} on {} (pid {}, fast path {})",
                    clat.spec.v4,
                    clat.spec.v6,
                    clat.spec.tun_name,
                    clat.pid(),
                    if clat.fast_path() { "on" } else { "off" }
                );
                let started = started_of(&clat);
                self.clats.insert(ifindex, clat);
                Ok(started)
            }
            Err(e) => Err(e),
        };
        let ok = result.is_ok();
        self.core.on_input(
            Input::Started { ifindex, result },
            std::time::Instant::now(),
        );
        if ok {
            self.sources.insert(ifindex, plan.prefix_source);
            self.watch_child(ifindex);
            if let Some(ev) = self.hook_event(crate::hooks::HookKind::Up, ifindex) {
                self.hooks.fire(ev);
            }
        }
    }

    /// What the up or down hook of the CLAT on `ifindex` is told.
    fn hook_event(
        &self,
        kind: crate::hooks::HookKind,
        ifindex: u32,
    ) -> Option<crate::hooks::HookEvent> {
        let clat = self.clats.get(&ifindex)?;
        Some(crate::hooks::HookEvent {
            event: kind,
            uplink: clat.spec.uplink.clone(),
            v4: Some(clat.spec.v4),
            v6: Some(clat.spec.v6),
            prefix: Some(clat.spec.prefix.to_string()),
            prefix_source: self.sources.get(&ifindex).copied(),
            tun: Some(clat.spec.tun_name.clone()),
        })
    }

    /// Report the child's exit to the loop, without polling: a second pidfd of our own becomes
    /// readable when the child terminates. Reaping stays with the controller's `ChildWatch`.
    fn watch_child(&self, ifindex: u32) {
        let (Some(clat), Some(rec)) = (self.clats.get(&ifindex), self.core.clat(ifindex)) else {
            return;
        };
        let pid = clat.pid();
        let generation = rec.generation;
        let tx = self.events.clone();
        tokio::spawn(async move {
            if let Err(e) =
                crate::controller::spawn::terminated(nix::unistd::Pid::from_raw(pid)).await
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

    async fn clean_leftovers(&mut self) {
        if self.opts.dry_run {
            return;
        }
        // What a killed run changed on the host comes back first, so no value of ours is
        // ever taken for an original.
        let (restored, errors) = self.controller.restore_leftover_sysctls();
        for path in restored {
            tracing::info!("restored {} as a killed run found it", path.display());
        }
        for e in errors {
            tracing::warn!("cannot restore what a killed run changed: {e}");
        }
        // One dump serves both clean-ups below.
        let inventory = crate::watch::netlink::dump().await.ok();
        let links = || inventory.iter().flat_map(|inv| inv.links.values());
        // Translators a killed run left behind still hold their tun: stop them first.
        for link in links().filter(|l| l.is_ours()) {
            crate::controller::leftovers::stop_tun_holders(&link.name, Duration::from_secs(2))
                .await;
        }
        match crate::nft::remove() {
            Ok(true) => tracing::info!(
                "removed the nftables table `{}` of an earlier run",
                crate::nft::TABLE
            ),
            Ok(false) => {}
            // A kernel without nf_tables has no table to remove.
            Err(e) => tracing::debug!("no leftover nftables table removed: {e}"),
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

    /// Stops every CLAT, concurrently, so that the translators' exits overlap (64 CLATs:
    /// 5.3 s one after the other, 4.7 s so; the rest is the kernel removing each tun and
    /// detaching each program, serialised there).
    async fn stop_all(&mut self) {
        if let Some(router) = self.router.as_mut() {
            for e in self.controller.teardown_router(router) {
                tracing::warn!("router mode: stopping: {e}");
            }
        }
        let downs: Vec<_> = self
            .clats
            .keys()
            .filter_map(|i| self.hook_event(crate::hooks::HookKind::Down, *i))
            .collect();
        let clats = std::mem::take(&mut self.clats);
        let controller = &self.controller;
        futures::future::join_all(
            clats
                .into_values()
                .map(|clat| stop_clat(controller, clat, "daemon stopping")),
        )
        .await;
        for ev in downs {
            self.hooks.fire(ev);
        }
    }

    async fn status(&self) -> StatusReport {
        let mut uplinks = self.core.status(&self.inventory, std::time::Instant::now());
        for u in &mut uplinks {
            let Some(clat) = self.clats.get(&u.ifindex) else {
                continue;
            };
            let fp = clat.fast_path_counters();
            u.counters = ClatCounters {
                translator_drops: clat.translator_drops(),
                translator: self.tun_counters(clat.tun_ifindex()).await,
                fast_path: DirCounters {
                    v4_to_v6_packets: fp.v4_to_v6_packets,
                    v4_to_v6_bytes: fp.v4_to_v6_bytes,
                    v6_to_v4_packets: fp.v6_to_v4_packets,
                    v6_to_v4_bytes: fp.v6_to_v4_bytes,
                },
            };
        }
        let router = match (self.router.as_ref(), self.router_want()) {
            (Some(r), Some(want)) => Some(r.status(&want)),
            _ => None,
        };
        StatusReport { uplinks, router }
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

/// What the core keeps of a started or repaired CLAT.
fn started_of(clat: &Clat) -> StartedClat {
    StartedClat {
        v6: clat.spec.v6,
        tun_ifindex: clat.tun_ifindex(),
        pid: clat.pid(),
        fast_path: clat.fast_path(),
        fast_path_reason: clat.fast_path_reason().map(str::to_owned),
    }
}

async fn stop_clat(controller: &Controller, clat: Clat, why: &str) {
    let uplink = clat.spec.uplink.clone();
    tracing::info!(uplink = %uplink, "stopping CLAT: {why}");
    let errors = controller.stop(clat).await;
    if !errors.is_empty() {
        tracing::warn!(uplink = %uplink, "stopping left {} error(s): {errors}", errors.0.len());
    }
}

/// Hand heap freed during a CLAT start back to the kernel. Starting one (the eBPF loader above
/// all) leaves ~15 MiB of freed heap that glibc keeps: measured with netns-tests/bench, the idle
/// supervisor sat at 23.9 MiB RSS (16.5 MiB anonymous) and fell to 8.5 MiB after a
/// `malloc_trim` (the aim in README "Performance" is ≤ 10 MiB).
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers and
    // is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// 64 random bits for the CLAT's interface identifier (RFC 7217-style freshness is enough:
/// the address only has to be unpredictable and unused).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        // Fall back to time and pid; collisions are astronomically unlikely.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_ne_bytes(buf)
}
