//! The controller: the one owner of everything a CLAT puts on the system.
//!
//! A [`Clat`] holds every piece of one CLAT (see `ARCHITECTURE.md`): the tun `v4-U` and its
//! descriptor, the CLAT IPv6 address's anycast membership on U (or, where no address of U
//! covers it, autoclat's own neighbour-solicitation responder), the uplink's `proxy_delay`
//! (changed through the crash-safe [`restore::Journal`]), the translator's packet sockets and
//! their filter, the eBPF programs (ingress guard, fast path, and the fallback decision), the
//! translator child, and on `v4-U` the IPv4 address, MTU, up state and IPv4 default route.
//! [`Controller::start`] creates them in that order; a failure tears down what was made.
//! [`Controller::stop`] removes them in reverse and returns every error of the teardown, not
//! just the first. [`Controller::repair`] puts back individual [`Piece`]s that someone else
//! removed or changed, without touching the ones that are fine.
//!
//! Each system-facing step lives in a small edge module with its own error type: [`tun`],
//! [`netconf`] (rtnetlink on `v4-U`), [`anycast`], [`spawn`] (the translator child and its
//! pidfd), [`restore`] (sysctls and their journal), [`leftovers`].

pub mod addressing;
pub mod anycast;
pub mod backoff;
pub mod leftovers;
pub mod ndp;
pub mod ndsock;
pub mod netconf;
pub mod restore;
pub mod router;
pub mod spawn;
pub mod tun;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bpf::{BpfError, ClatBpf, ClatBpfConfig};
use crate::config::FastPathMode;
use crate::nat64::Nat64Prefix;
use crate::translator::{FastPathExclusion, SocketError};

use self::anycast::{AnycastError, AnycastMembership};
use self::ndsock::{NdError, NdResponder};
use self::netconf::NetconfError;
use self::restore::{Journal, RestoreError};
use self::spawn::{ChildWatch, ExitStatusInfo, ReservedFd, SpawnError};
use self::tun::{TunDevice, TunError};

/// IPv6 header (40) − IPv4 header (20) + IPv6 fragment header (8): what translation adds to a
/// packet at most, so the tun's MTU is the uplink's minus this (as Android's clatd).
pub const MTU_DELTA: u32 = 28;

/// The smallest MTU IPv4 allows (RFC 791); an uplink too small for it cannot carry a CLAT.
const MIN_V4_MTU: u32 = 68;

/// How long duplicate address detection listens for an answer to its probe. RFC 4861's
/// RetransTimer is 1 s, but on a LAN an owner answers within milliseconds; a CLAT start should
/// not wait a second.
pub const DEFAULT_DAD_WAIT: Duration = Duration::from_millis(400);

/// How many generated addresses duplicate address detection tries before the start fails.
pub const DAD_TRIES: usize = 3;

/// How long a translator gets after SIGTERM before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// What a CLAT should be: everything the controller needs, decided beforehand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClatSpec {
    /// The uplink's name (U).
    pub uplink: String,
    /// The uplink's interface index.
    pub uplink_ifindex: u32,
    /// U has an Ethernet header (false: a raw-IP link such as a tun).
    pub uplink_is_ethernet: bool,
    /// The tun's name (`v4-U`, shortened to fit IFNAMSIZ).
    pub tun_name: String,
    /// The CLAT's IPv4 address (from 192.0.0.0/29).
    pub v4: Ipv4Addr,
    /// The CLAT's IPv6 address inside U's /64 (checksum-neutral). The start may replace it by
    /// another of the same kind when duplicate address detection finds it in use.
    pub v6: Ipv6Addr,
    /// An address of U covers `v6`'s /64, so U answers neighbour solicitation for `v6` through
    /// an anycast membership; otherwise (a DHCPv6 `/128` next to an on-link /64) autoclat's own
    /// responder ([`ndsock::NdResponder`]) answers.
    pub v6_covered: bool,
    /// The NAT64 prefix.
    pub prefix: Nat64Prefix,
    /// The uplink's MTU; the tun gets `mtu - MTU_DELTA`.
    pub mtu: u32,
    /// The IPv4 default route's metric.
    pub route_metric: u32,
    /// The IPv4 default route's table (`None`: main).
    pub route_table: Option<u32>,
    /// The translator program.
    pub clatd_path: PathBuf,
    /// Passed to the translator as `-m` (mark for its IPv6 sockets).
    pub fwmark: Option<u32>,
    /// The eBPF fast path: `On` fails the start if it cannot attach.
    pub fast_path: FastPathMode,
    /// Hand the translator a shared counter page (`-c`): only the bundled `clatd` knows the
    /// flag (Android's would refuse it).
    pub stats_page: bool,
    /// Stateless mode (RFC 6877 §6.3): a /64 routed to this host into which downstream IPv4
    /// sources are mapped (clatd `-s`, the fast path and the receive filter get it). `None`:
    /// only the CLAT's own IPv4 address is translated (downstream hosts need NAT44).
    pub clat_prefix: Option<Nat64Prefix>,
}

impl ClatSpec {
    /// The MTU `v4-U` gets, or why the uplink's MTU leaves no room for IPv4.
    pub fn tun_mtu(&self) -> Result<u32, String> {
        match self.mtu.checked_sub(MTU_DELTA) {
            Some(m) if m >= MIN_V4_MTU => Ok(m),
            _ => Err(format!("uplink MTU {} leaves no room for IPv4", self.mtu)),
        }
    }

    /// `clatd-U`: the translator's argv[0], which `ps` shows.
    pub fn argv0(&self) -> String {
        format!("clatd-{}", self.uplink)
    }
}

/// A piece of a running CLAT that can go missing and be put back on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Piece {
    /// The tun `v4-U` itself (a new one needs a new translator and programs on it).
    Tun,
    /// The eBPF programs (ingress guard on U, fast path egress on `v4-U`).
    Programs,
    /// The IPv4 address on `v4-U`.
    Address,
    /// `v4-U`'s MTU.
    Mtu,
    /// `v4-U` administratively up.
    LinkUp,
    /// The IPv4 default route through `v4-U`.
    Route,
    /// The translator process.
    Translator,
}

impl std::fmt::Display for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Piece::Tun => "the tun",
            Piece::Programs => "the eBPF programs",
            Piece::Address => "the IPv4 address",
            Piece::Mtu => "the tun's MTU",
            Piece::LinkUp => "the tun's up state",
            Piece::Route => "the IPv4 default route",
            Piece::Translator => "the translator",
        })
    }
}

/// The system-facing operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Opening the tun device.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// An rtnetlink request.
    #[error(transparent)]
    Netlink(#[from] NetconfError),
    /// The anycast membership.
    #[error(transparent)]
    Anycast(#[from] AnycastError),
    /// Duplicate address detection or the neighbour-solicitation responder.
    #[error(transparent)]
    Nd(#[from] NdError),
    /// Spawning, signalling or reaping the translator.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The translator's packet sockets.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The eBPF programs.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// A sysctl or the journal of original values.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A precondition that does not hold (with the reason).
    #[error("{0}")]
    Refused(String),
}

/// A controller failure, naming the step (e.g. `set alias on v4-eth0`) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// One step of starting, repairing, stopping or cleaning up failed.
    #[error("{step}: {source}")]
    Step {
        /// What was being done, with the names involved.
        step: String,
        /// Why it failed.
        #[source]
        source: StepError,
    },
}

impl ControllerError {
    fn step(step: impl Into<String>, source: impl Into<StepError>) -> Self {
        ControllerError::Step {
            step: step.into(),
            source: source.into(),
        }
    }

    /// The step's description.
    pub fn step_name(&self) -> &str {
        match self {
            ControllerError::Step { step, .. } => step,
        }
    }

    /// Whether `fast_path = "on"` failed because the fast path cannot attach.
    pub fn is_fast_path_refusal(&self) -> bool {
        self.step_name().starts_with("fast_path = \"on\"")
    }
}

/// Every failure of one teardown (empty: the system is as it was before the start).
#[derive(Debug, Default, thiserror::Error)]
#[error("{}", display_all(.0))]
pub struct TeardownErrors(pub Vec<ControllerError>);

fn display_all(errors: &[ControllerError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl TeardownErrors {
    /// Whether the teardown was complete.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The translator's packet sockets, opened by the supervisor so that `clatd` needs no
/// privilege: receive (`-r`, `ETH_P_ALL` with its filter), send (`-w`, raw IPv6) and the GSO
/// send socket (`-g`, optional). The supervisor keeps them, so every respawn gets them again.
#[derive(Debug)]
struct Sockets {
    rx: OwnedFd,
    tx: OwnedFd,
    gso: Option<OwnedFd>,
}

/// One CLAT and every piece it put on the system. Only [`Controller`] creates and changes it.
#[derive(Debug)]
pub struct Clat {
    /// What it should be.
    pub spec: ClatSpec,
    tun: Option<TunDevice>,
    anycast: Option<AnycastMembership>,
    /// Answers neighbour solicitations for the CLAT address when no address of U covers it.
    nd_responder: Option<NdResponder>,
    /// The sysctl we changed (the uplink's proxy_delay), to restore on stop.
    proxy_delay: Option<PathBuf>,
    bpf: Option<ClatBpf>,
    /// Why the fast path is not on (config, or the kernel's refusal under `auto`).
    fast_path_reason: Option<String>,
    sockets: Option<Sockets>,
    child: Option<ChildWatch>,
    /// The running translator's counter page (a fresh one per spawn).
    stats: Option<crate::translator::stats::StatsPage>,
    address: bool,
    up: bool,
    route: bool,
}

impl Clat {
    fn new(spec: ClatSpec) -> Self {
        Self {
            spec,
            tun: None,
            anycast: None,
            nd_responder: None,
            proxy_delay: None,
            bpf: None,
            fast_path_reason: None,
            sockets: None,
            child: None,
            stats: None,
            address: false,
            up: false,
            route: false,
        }
    }

    /// The tun's interface index (0 while there is none).
    pub fn tun_ifindex(&self) -> u32 {
        self.tun.as_ref().map_or(0, |t| t.ifindex)
    }

    /// The translator's pid (0 when none runs).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.pid().as_raw())
    }

    /// The translator's watch, if one runs.
    pub fn child(&self) -> Option<&ChildWatch> {
        self.child.as_ref()
    }

    /// Waits until the translator exits and says how (pending forever when none runs).
    pub async fn translator_exited(&self) -> Result<ExitStatusInfo, ControllerError> {
        match &self.child {
            Some(child) => child
                .exited()
                .await
                .map_err(|e| ControllerError::step(format!("wait for {}", self.spec.argv0()), e)),
            None => std::future::pending().await,
        }
    }

    /// The running translator's drop counters, from its counter page (none without one).
    pub fn translator_drops(&self) -> Option<crate::control::TranslatorDrops> {
        self.stats
            .as_ref()
            .and_then(crate::translator::stats::StatsPage::read)
            .map(|s| s.drops())
    }

    /// Whether the eBPF fast path translates for this CLAT.
    pub fn fast_path(&self) -> bool {
        self.bpf.as_ref().is_some_and(ClatBpf::fast_path)
    }

    /// Why the fast path is off, if it is.
    pub fn fast_path_reason(&self) -> Option<&str> {
        self.fast_path_reason.as_deref()
    }

    /// The fast path's counters (zero without it).
    pub fn fast_path_counters(&self) -> crate::bpf::FastPathCounters {
        self.bpf
            .as_ref()
            .and_then(|b| b.counters().ok())
            .unwrap_or_default()
    }

    /// The eBPF programs that are no longer attached (a third party detached them). Links
    /// checked through the kernel; nothing is changed.
    pub fn missing_programs(&mut self) -> Vec<&'static str> {
        match self.bpf.as_mut() {
            Some(b) => b.missing_programs().unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// Starts, repairs and stops CLATs through one rtnetlink handle.
#[derive(Debug, Clone)]
pub struct Controller {
    handle: rtnetlink::Handle,
    grace: Duration,
    journal: Option<Arc<Mutex<Journal>>>,
    dad_wait: Option<Duration>,
}

impl Controller {
    /// A controller using `handle` (its connection must be driven by the caller's runtime).
    /// Without [`Controller::with_journal`] it changes no sysctl.
    pub fn new(handle: rtnetlink::Handle) -> Self {
        Self {
            handle,
            grace: DEFAULT_GRACE,
            journal: None,
            dad_wait: Some(DEFAULT_DAD_WAIT),
        }
    }

    /// The same controller listening `wait` for answers to its duplicate address detection
    /// probe (`None`: no DAD at all).
    pub fn with_dad_wait(mut self, wait: Option<Duration>) -> Self {
        self.dad_wait = wait;
        self
    }

    /// The same controller with another SIGTERM grace period for translators.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The same controller recording original sysctl values in `journal` before it changes
    /// them (see [`restore`]).
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(Arc::new(Mutex::new(journal)));
        self
    }

    /// Starts a CLAT: every piece in order. On failure everything made so far is removed
    /// again (teardown failures are logged) and the error that stopped the start returned.
    pub async fn start(&self, spec: ClatSpec) -> Result<Clat, ControllerError> {
        let mut clat = Clat::new(spec);
        match self.start_pieces(&mut clat).await {
            Ok(()) => {
                tracing::info!(
                    uplink = %clat.spec.uplink, tun = %clat.spec.tun_name, ifindex = clat.tun_ifindex(),
                    pid = clat.pid(), v4 = %clat.spec.v4, v6 = %clat.spec.v6, prefix = %clat.spec.prefix,
                    fast_path = clat.fast_path(), "CLAT started"
                );
                Ok(clat)
            }
            Err(err) => {
                tracing::warn!(uplink = %clat.spec.uplink, error = %err, "CLAT start failed: undoing");
                for undo_err in self.teardown(&mut clat).await.0 {
                    tracing::error!(uplink = %clat.spec.uplink, error = %undo_err, "undo after failed start");
                }
                Err(err)
            }
        }
    }

    async fn start_pieces(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let spec = clat.spec.clone();
        let h = &self.handle;

        // The uplink exists under its name; the tun's name is free; the MTU leaves room.
        let step = format!(
            "look up uplink {} (index {})",
            spec.uplink, spec.uplink_ifindex
        );
        let uplink = netconf::get_link(h, spec.uplink_ifindex)
            .await
            .map_err(|e| ControllerError::step(&step, e))?;
        if uplink.name != spec.uplink {
            let why = format!("index {} is now `{}`", spec.uplink_ifindex, uplink.name);
            return Err(ControllerError::step(step, StepError::Refused(why)));
        }
        spec.tun_mtu().map_err(|why| {
            ControllerError::step(format!("size {}", spec.tun_name), StepError::Refused(why))
        })?;
        if !spec.clatd_path.exists() {
            let why = "missing (build `clatd`, or set daemon.clatd_path)".to_owned();
            return Err(ControllerError::step(
                format!("translator {}", spec.clatd_path.display()),
                StepError::Refused(why),
            ));
        }
        // `fast_path = "on"` where eBPF cannot load: fail before anything is created, rather
        // than make the tun, route and translator only to undo them on every retry.
        if spec.fast_path == FastPathMode::On {
            crate::bpf::probe().map_err(|e| {
                ControllerError::step("fast_path = \"on\" but the eBPF fast path cannot attach", e)
            })?;
        }

        // Nobody else on U's link may use the address (a raw-IP link has no neighbours).
        if spec.uplink_is_ethernet {
            self.detect_duplicate(clat).await?;
        }
        let spec = clat.spec.clone();

        self.create_tun(clat).await?;

        // U answers neighbour solicitation for the CLAT's IPv6 address: through an anycast
        // membership where an address of U covers it, else through our own responder (the
        // kernel joins anycast only inside a prefix U has an address in; proxy NDP answers only
        // on interfaces that forward).
        if spec.v6_covered {
            let membership =
                AnycastMembership::join(spec.v6, spec.uplink_ifindex).map_err(|e| {
                    ControllerError::step(
                        format!("join {} as anycast on {}", spec.v6, spec.uplink),
                        e,
                    )
                })?;
            clat.anycast = Some(membership);
            // Neighbour advertisements for an anycast address wait up to proxy_delay (0.8 s by
            // default): without this the router's first packet to the CLAT waits that long.
            self.zero_proxy_delay(clat);
        } else if spec.uplink_is_ethernet {
            let step = || {
                format!(
                    "answer neighbour solicitation for {} on {}",
                    spec.v6, spec.uplink
                )
            };
            match ndsock::ethernet_address(spec.uplink_ifindex) {
                Ok(mac) => {
                    let responder = NdResponder::start(spec.uplink_ifindex, spec.v6, mac)
                        .map_err(|e| ControllerError::step(step(), e))?;
                    clat.nd_responder = Some(responder);
                }
                // A link without a link-layer address (WireGuard, PPP) resolves no neighbours.
                Err(NdError::NoMac(_)) => {
                    tracing::debug!(uplink = %spec.uplink, "no link-layer address: no neighbour solicitation to answer");
                }
                Err(e) => return Err(ControllerError::step(step(), e)),
            }
        }

        self.attach_programs(clat)?;
        self.open_sockets(clat)?;
        self.spawn_translator(clat)?;
        self.configure_tun(clat).await
    }

    /// Duplicate address detection of `clat.spec.v6` on U: a probe, then [`Controller::dad_wait`]
    /// for an answer; an address in use is replaced by another checksum-neutral one in the same
    /// /64 (up to [`DAD_TRIES`] addresses). DAD that cannot run (no socket) is logged and
    /// skipped: the start does not depend on it.
    async fn detect_duplicate(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let Some(wait) = self.dad_wait else {
            return Ok(());
        };
        let spec = &mut clat.spec;
        for attempt in 1..=DAD_TRIES {
            match ndsock::address_in_use(spec.uplink_ifindex, spec.v6, wait).await {
                Ok(None) => return Ok(()),
                Ok(Some(owner)) => {
                    let next = addressing::checksum_neutral_v6(
                        spec.v6,
                        spec.v4,
                        &spec.prefix,
                        random_u64(),
                    );
                    tracing::warn!(
                        uplink = %spec.uplink,
                        "{} is in use on {} (answer from {owner}): trying {next} ({attempt} of {DAD_TRIES})",
                        spec.v6, spec.uplink
                    );
                    if attempt == DAD_TRIES {
                        break;
                    }
                    spec.v6 = next;
                }
                Err(e) => {
                    tracing::warn!(uplink = %spec.uplink, "duplicate address detection of {} skipped: {e}", spec.v6);
                    return Ok(());
                }
            }
        }
        let why = format!(
            "{DAD_TRIES} generated addresses in {}/64 were all in use",
            crate::policy::slash64(spec.v6)
        );
        Err(ControllerError::step(
            format!("duplicate address detection on {}", spec.uplink),
            StepError::Refused(why),
        ))
    }

    /// Opens the tun `v4-U` and marks it as ours (alias `autoclat:U`).
    async fn create_tun(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let tun_name = clat.spec.tun_name.clone();
        if let Ok(name) = std::ffi::CString::new(tun_name.as_str()) {
            if nix::net::if_::if_nametoindex(name.as_c_str()).is_ok() {
                let why = "an interface of that name exists (not ours to take over)".to_owned();
                return Err(ControllerError::step(
                    format!("create {tun_name}"),
                    StepError::Refused(why),
                ));
            }
        }
        // Non-persistent: it vanishes with its last descriptor, so a supervisor crash before a
        // translator holds it leaves nothing.
        let dev = tun::open_tun(&tun_name)
            .map_err(|e| ControllerError::step(format!("create {tun_name}"), e))?;
        let ifindex = dev.ifindex;
        clat.tun = Some(dev);
        let alias = netconf::alias_for(&clat.spec.uplink);
        netconf::set_alias(&self.handle, ifindex, &alias)
            .await
            .map_err(|e| ControllerError::step(format!("set alias on {tun_name}"), e))
    }

    fn zero_proxy_delay(&self, clat: &mut Clat) {
        let Some(journal) = &self.journal else {
            return;
        };
        let path = restore::proxy_delay_path(&clat.spec.uplink);
        let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
        match journal.set_sysctl(&path, "0") {
            Ok(Some(_)) => clat.proxy_delay = Some(path),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                uplink = %clat.spec.uplink,
                "cannot set proxy_delay to 0 (first packets to the CLAT may wait up to 0.8 s): {e}"
            ),
        }
    }

    /// The ingress guard (drops the kernel's copy of packets to the CLAT address) and, when
    /// enabled, the fast path. Under `auto`, a fast path the kernel refuses falls back to the
    /// guard alone and says why; under `on` it fails the start.
    fn attach_programs(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let spec = &clat.spec;
        let want_fast = spec.fast_path != FastPathMode::Off;
        let cfg = ClatBpfConfig {
            uplink_ifindex: spec.uplink_ifindex,
            tun_ifindex: clat.tun_ifindex(),
            v4: spec.v4,
            v6: spec.v6,
            prefix: spec.prefix,
            clat_prefix: spec.clat_prefix,
            fast_path: want_fast,
            uplink_is_ethernet: spec.uplink_is_ethernet,
        };
        let (bpf, reason) = match ClatBpf::attach(&cfg) {
            Ok(b) => (
                Some(b),
                (!want_fast).then(|| "disabled by config".to_owned()),
            ),
            Err(e) if spec.fast_path == FastPathMode::On => {
                return Err(ControllerError::step(
                    "fast_path = \"on\" but the eBPF fast path cannot attach",
                    e,
                ));
            }
            Err(e) if want_fast => {
                tracing::warn!(uplink = %spec.uplink, "eBPF fast path unavailable, userspace only: {e}");
                let guard = ClatBpf::attach(&ClatBpfConfig {
                    fast_path: false,
                    ..cfg
                });
                (guard.ok(), Some(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(uplink = %spec.uplink, "cannot attach the ingress guard: {e}");
                (None, Some("disabled by config".to_owned()))
            }
        };
        if bpf.is_none() {
            tracing::warn!(
                uplink = %spec.uplink,
                "without the eBPF ingress guard the host may answer UDP sent to {} with ICMPv6 port unreachable",
                spec.v6
            );
        }
        clat.bpf = bpf;
        clat.fast_path_reason = reason;
        Ok(())
    }

    /// The translator's sockets on U. The receive filter is final here: it leaves out what the
    /// fast path translates, decided just before.
    fn open_sockets(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let spec = &clat.spec;
        let exclude = clat.fast_path().then_some(FastPathExclusion {
            prefix: spec.prefix,
        });
        let step = |what: &str| format!("open the translator's {what} socket on {}", spec.uplink);
        // With our IPv4 address known, the filter leaves out exactly what the fast path takes.
        let (rx, _framing) = crate::translator::open_rx(
            spec.uplink_ifindex,
            spec.v6,
            Some(spec.v4),
            spec.clat_prefix,
            exclude,
        )
        .map_err(|e| ControllerError::step(step("receive"), e))?;
        // Final: locked before the translator gets it, so not even a compromised translator
        // can widen what it receives.
        crate::translator::lock_rx_filter(rx.as_fd())
            .map_err(|e| ControllerError::step(step("receive"), e))?;
        let tx = crate::translator::open_tx(spec.uplink_ifindex, spec.fwmark)
            .map_err(|e| ControllerError::step(step("send"), e))?;
        // TCP super-packets from the tun leave whole through this one; without it the
        // translator cuts them itself, which is slower but correct.
        let gso = match crate::translator::open_gso_tx(spec.uplink_ifindex, spec.fwmark) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(uplink = %spec.uplink, "GSO send socket: {e}");
                None
            }
        };
        clat.sockets = Some(Sockets { rx, tx, gso });
        Ok(())
    }

    /// Spawns the translator on the tun with the sockets; records it in `clat.child`.
    fn spawn_translator(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let argv0 = clat.spec.argv0();
        let step = format!("spawn {} as {argv0}", clat.spec.clatd_path.display());
        let refused = |why: &str| ControllerError::step(&step, StepError::Refused(why.into()));
        let tun = clat
            .tun
            .as_ref()
            .ok_or_else(|| refused("the tun is closed"))?;
        let sockets = clat
            .sockets
            .as_ref()
            .ok_or_else(|| refused("the sockets are closed"))?;
        let err = |e: SpawnError| ControllerError::step(&step, e);
        let stats = if clat.spec.stats_page {
            match crate::translator::stats::StatsPage::create() {
                Ok(page) => Some(page),
                Err(e) => {
                    tracing::warn!(uplink = %clat.spec.uplink, "no counter page for the translator: {e}");
                    None
                }
            }
        } else {
            None
        };
        let mut handed: Vec<(BorrowedFd<'_>, &'static str)> =
            vec![(sockets.rx.as_fd(), "-r"), (sockets.tx.as_fd(), "-w")];
        if let Some(gso) = &sockets.gso {
            handed.push((gso.as_fd(), "-g"));
        }
        if let Some(page) = &stats {
            handed.push((page.fd(), "-c"));
        }
        let tun_slot = ReservedFd::new().map_err(err)?;
        let mut slots = Vec::with_capacity(handed.len());
        for _ in &handed {
            slots.push(ReservedFd::new().map_err(err)?);
        }
        let flags: Vec<(&str, RawFd)> = handed
            .iter()
            .zip(&slots)
            .map(|((_, flag), slot)| (*flag, slot.number()))
            .collect();
        let clat_prefix = clat.spec.clat_prefix.map(|p| p.to_string());
        let args = spawn::translator_args(
            &clat.spec.uplink,
            &clat.spec.prefix.to_string(),
            clat.spec.v4,
            clat.spec.v6,
            tun_slot.number(),
            clat.spec.fwmark,
            clat_prefix.as_deref(),
            &flags,
        );
        let mut fds = vec![(tun.fd.as_fd(), tun_slot.number())];
        for ((fd, _), slot) in handed.iter().zip(&slots) {
            fds.push((*fd, slot.number()));
        }
        let pid =
            spawn::spawn_translator(&clat.spec.clatd_path, &argv0, &args, &fds).map_err(err)?;
        // The numbers only had to be free until the child's dup2s ran.
        drop(fds);
        drop(handed);
        drop(slots);
        drop(tun_slot);
        match ChildWatch::new(pid) {
            Ok(watch) => {
                clat.child = Some(watch);
                clat.stats = stats;
                tracing::info!(pid = pid.as_raw(), argv0 = %argv0, args = %args.join(" "), "translator spawned");
                Ok(())
            }
            Err(e) => {
                // Without a pidfd we cannot supervise it: do not leave it running.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                Err(err(e))
            }
        }
    }

    /// `v4-U`: its IPv4 address, MTU, up, and the IPv4 default route through it.
    async fn configure_tun(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        for piece in [Piece::Address, Piece::Mtu, Piece::LinkUp, Piece::Route] {
            self.put_back(clat, piece, false).await?;
        }
        Ok(())
    }

    /// Makes one link-level piece of `v4-U` as it should be. When `repairing`, an address or
    /// route that is already there again counts as done; at start it is someone else's and an
    /// error (nothing is silently taken over).
    async fn put_back(
        &self,
        clat: &mut Clat,
        piece: Piece,
        repairing: bool,
    ) -> Result<(), ControllerError> {
        let h = &self.handle;
        let ifindex = clat.tun_ifindex();
        let tun_name = clat.spec.tun_name.clone();
        let exists_ok = |r: Result<(), NetconfError>| match r {
            Err(e) if repairing && e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        };
        match piece {
            Piece::Address => {
                let v4 = clat.spec.v4;
                exists_ok(netconf::add_v4_address(h, ifindex, v4).await).map_err(|e| {
                    ControllerError::step(
                        format!("add {v4}/{} to {tun_name}", netconf::V4_PREFIX_LEN),
                        e,
                    )
                })?;
                clat.address = true;
            }
            Piece::Mtu => {
                let mtu = clat.spec.tun_mtu().map_err(|why| {
                    ControllerError::step(format!("size {tun_name}"), StepError::Refused(why))
                })?;
                netconf::set_mtu(h, ifindex, mtu).await.map_err(|e| {
                    ControllerError::step(format!("set mtu {mtu} on {tun_name}"), e)
                })?;
            }
            Piece::LinkUp => {
                netconf::set_up(h, ifindex)
                    .await
                    .map_err(|e| ControllerError::step(format!("set {tun_name} up"), e))?;
                clat.up = true;
            }
            Piece::Route => {
                let (metric, table) = (clat.spec.route_metric, clat.spec.route_table);
                exists_ok(netconf::add_default_route(h, ifindex, metric, table).await).map_err(
                    |e| {
                        ControllerError::step(
                            format!("add IPv4 default route via {tun_name} metric {metric}"),
                            e,
                        )
                    },
                )?;
                clat.route = true;
            }
            Piece::Tun | Piece::Programs | Piece::Translator => {}
        }
        Ok(())
    }

    /// Puts back the pieces that are missing or changed, leaving the others alone: a new tun
    /// (with new programs on it and a new translator, never a respawn on a dead descriptor),
    /// re-attached programs, a respawned translator, the address, MTU, up state and route.
    /// Returns what was done, for the log.
    pub async fn repair(
        &self,
        clat: &mut Clat,
        pieces: &[Piece],
    ) -> Result<Vec<String>, ControllerError> {
        let mut done = Vec::new();
        // The kernel reports a deleted tun as down, without its address and route, a moment
        // before it reports it gone: whatever was asked, a tun that is gone is rebuilt.
        let tun_gone = clat.tun_ifindex() == 0
            || matches!(
                netconf::get_link(&self.handle, clat.tun_ifindex()).await,
                Err(e) if e.is_already_gone()
            );
        if pieces.contains(&Piece::Tun) || tun_gone {
            self.rebuild_tun(clat).await?;
            done.push(format!(
                "new {} (index {}) with a new translator (pid {})",
                clat.spec.tun_name,
                clat.tun_ifindex(),
                clat.pid()
            ));
            return Ok(done);
        }
        if pieces.contains(&Piece::Programs) {
            let had_fast_path = clat.fast_path();
            if let Some(old) = clat.bpf.take() {
                // What is left of them (the kernel may have detached only one).
                if let Err(e) = old.detach() {
                    tracing::debug!(uplink = %clat.spec.uplink, "detaching what was left of the programs: {e}");
                }
            }
            self.attach_programs(clat)?;
            if clat.fast_path() != had_fast_path {
                // The translator's receive filter was made for the other case: only a full
                // restart gives it the right one.
                return Err(ControllerError::step(
                    "re-attach the eBPF programs",
                    StepError::Refused(format!(
                        "the fast path is now {}: the CLAT must restart",
                        if clat.fast_path() { "on" } else { "off" }
                    )),
                ));
            }
            done.push("eBPF programs re-attached".to_owned());
        }
        for piece in [Piece::Address, Piece::Mtu, Piece::LinkUp, Piece::Route] {
            if pieces.contains(&piece) {
                self.put_back(clat, piece, true).await?;
                done.push(format!("{piece} put back on {}", clat.spec.tun_name));
            }
        }
        if pieces.contains(&Piece::Translator) {
            self.restart_translator(clat).await?;
            done.push(format!("translator respawned (pid {})", clat.pid()));
        }
        Ok(done)
    }

    /// The tun was deleted: stop the translator (its descriptor is dead), let go of the old
    /// tun and its programs, and build the tun side again — tun, programs, translator, address,
    /// MTU, up, route. The anycast membership, sysctls and sockets on U stay.
    async fn rebuild_tun(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let had_fast_path = clat.fast_path();
        self.stop_translator(clat).await?;
        if let Some(old) = clat.bpf.take() {
            if let Err(e) = old.detach() {
                tracing::debug!(uplink = %clat.spec.uplink, "detaching the old tun's programs: {e}");
            }
        }
        clat.address = false;
        clat.up = false;
        clat.route = false;
        if let Some(old) = clat.tun.take() {
            // Someone deleted it; if it somehow still exists, it is ours to remove.
            match netconf::delete_link(&self.handle, old.ifindex).await {
                Err(e) if !e.is_already_gone() => {
                    tracing::warn!(tun = %clat.spec.tun_name, "deleting the old tun: {e}")
                }
                _ => {}
            }
        }
        self.create_tun(clat).await?;
        self.attach_programs(clat)?;
        if clat.fast_path() != had_fast_path {
            return Err(ControllerError::step(
                "re-attach the eBPF programs",
                StepError::Refused("the fast path changed: the CLAT must restart".into()),
            ));
        }
        self.spawn_translator(clat)?;
        self.configure_tun(clat).await
    }

    /// Respawns the translator on the same tun (after it exited): stops the old one first if it
    /// still runs. Refuses when the tun is gone (that needs [`Piece::Tun`]).
    pub async fn restart_translator(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        self.stop_translator(clat).await?;
        let ifindex = clat.tun_ifindex();
        if netconf::get_link(&self.handle, ifindex).await.is_err() {
            return Err(ControllerError::step(
                format!("respawn {}", clat.spec.argv0()),
                StepError::Refused(format!("{} is gone", clat.spec.tun_name)),
            ));
        }
        self.spawn_translator(clat)
    }

    async fn stop_translator(&self, clat: &mut Clat) -> Result<(), ControllerError> {
        let Some(child) = clat.child.take() else {
            return Ok(());
        };
        let step = format!("stop {} (pid {})", clat.spec.argv0(), child.pid());
        let status = child
            .stop(self.grace)
            .await
            .map_err(|e| ControllerError::step(step, e))?;
        tracing::info!(pid = child.pid().as_raw(), %status, "translator stopped");
        Ok(())
    }

    /// Stops a CLAT: removes every piece in the reverse order of the start, never stopping
    /// early, and returns every failure.
    pub async fn stop(&self, mut clat: Clat) -> TeardownErrors {
        let errors = self.teardown(&mut clat).await;
        tracing::info!(uplink = %clat.spec.uplink, tun = %clat.spec.tun_name, failures = errors.0.len(), "CLAT stopped");
        errors
    }

    async fn teardown(&self, clat: &mut Clat) -> TeardownErrors {
        let h = &self.handle;
        let mut errors = Vec::new();
        let ifindex = clat.tun_ifindex();
        let tun_name = clat.spec.tun_name.clone();
        let mut gone_ok = |r: Result<(), NetconfError>, what: String| match r {
            Err(e) if e.is_already_gone() => tracing::debug!(what = %what, "already gone"),
            Err(e) => errors.push(ControllerError::step(what, e)),
            Ok(()) => {}
        };
        if std::mem::take(&mut clat.route) {
            let (metric, table) = (clat.spec.route_metric, clat.spec.route_table);
            gone_ok(
                netconf::del_default_route(h, ifindex, metric, table).await,
                format!("delete IPv4 default route via {tun_name} metric {metric}"),
            );
        }
        if std::mem::take(&mut clat.up) {
            gone_ok(
                netconf::set_down(h, ifindex).await,
                format!("set {tun_name} down"),
            );
        }
        if std::mem::take(&mut clat.address) {
            let v4 = clat.spec.v4;
            gone_ok(
                netconf::del_v4_address(h, ifindex, v4).await,
                format!("delete {v4}/{} from {tun_name}", netconf::V4_PREFIX_LEN),
            );
        }
        if let Err(e) = self.stop_translator(clat).await {
            errors.push(e);
        }
        drop(clat.sockets.take());
        if let Some(bpf) = clat.bpf.take() {
            if let Err(e) = bpf.detach() {
                errors.push(ControllerError::step("detach the eBPF programs", e));
            }
        }
        if let (Some(path), Some(journal)) = (clat.proxy_delay.take(), &self.journal) {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = journal.restore(&path, "0") {
                errors.push(ControllerError::step("restore proxy_delay", e));
            }
        }
        drop(clat.anycast.take());
        drop(clat.nd_responder.take());
        if let Some(tun) = clat.tun.take() {
            match netconf::delete_link(h, tun.ifindex).await {
                Err(e) if !e.is_already_gone() => {
                    errors.push(ControllerError::step(format!("delete {tun_name}"), e))
                }
                _ => {}
            }
            // Closing our descriptor removes a non-persistent tun even if the delete failed.
            drop(tun);
        }
        TeardownErrors(errors)
    }

    /// Deletes every link whose alias starts with `autoclat:` (a crashed run's tuns; addresses
    /// and routes go with them). Returns the names removed. Call before starting any CLAT.
    pub async fn remove_leftovers(&self) -> Result<Vec<String>, TeardownErrors> {
        let links = netconf::links_with_our_alias(&self.handle)
            .await
            .map_err(|e| {
                TeardownErrors(vec![ControllerError::step(
                    "list links with an autoclat: alias",
                    e,
                )])
            })?;
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for link in links {
            match netconf::delete_link(&self.handle, link.ifindex).await {
                Ok(()) => {
                    tracing::info!(name = %link.name, ifindex = link.ifindex, alias = ?link.alias, "removed leftover interface");
                    removed.push(link.name);
                }
                Err(e) if e.is_already_gone() => {}
                Err(e) => errors.push(ControllerError::step(
                    format!("delete leftover {} (index {})", link.name, link.ifindex),
                    e,
                )),
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(TeardownErrors(errors))
        }
    }

    /// Brings router mode's pieces in line with `want` ([`router::Router::reconcile`]).
    /// Without a journal (a dry run) nothing is changed.
    pub fn reconcile_router(
        &self,
        router: &mut router::Router,
        want: &router::RouterWant,
    ) -> Result<Vec<String>, router::RouterError> {
        match &self.journal {
            Some(j) => router.reconcile(want, j),
            None => Ok(Vec::new()),
        }
    }

    /// Takes router mode's pieces away ([`router::Router::teardown`]).
    pub fn teardown_router(&self, router: &mut router::Router) -> Vec<router::RouterError> {
        match &self.journal {
            Some(j) => router.teardown(j),
            None => Vec::new(),
        }
    }

    /// Restores the sysctls a killed run changed (its journal), before anything else changes.
    pub fn restore_leftover_sysctls(&self) -> (Vec<PathBuf>, Vec<RestoreError>) {
        match &self.journal {
            Some(j) => j.lock().unwrap_or_else(|e| e.into_inner()).restore_all(),
            None => (Vec::new(), Vec::new()),
        }
    }
}

/// 64 random bits for a fresh interface identifier (the time and pid if /dev/urandom fails).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok()
    {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_step() {
        let err = ControllerError::step("set alias on v4-eth0", StepError::Refused("no".into()));
        assert_eq!(err.to_string(), "set alias on v4-eth0: no");
        assert_eq!(err.step_name(), "set alias on v4-eth0");
    }

    #[test]
    fn teardown_reports_every_error() {
        let errs = TeardownErrors(vec![
            ControllerError::step("delete route", StepError::Refused("a".into())),
            ControllerError::step("delete v4-eth0", StepError::Refused("b".into())),
        ]);
        assert_eq!(errs.to_string(), "delete route: a; delete v4-eth0: b");
    }

    #[test]
    fn mtu_delta_matches_translation_overhead() {
        // IPv6 header 40 − IPv4 header 20 + fragment header 8.
        assert_eq!(MTU_DELTA, 40 - 20 + 8);
    }
}
