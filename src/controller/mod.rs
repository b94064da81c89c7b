//! The controller: reconciles wanted CLATs against running ones (tun, addresses, child, route).
//!
//! This module starts and stops one CLAT (DESIGN §3 "What the controller does to start a CLAT
//! on uplink U"). Each system-facing step lives in a small edge module with its own error type:
//! [`tun`] (the tun device), [`netconf`] (rtnetlink: alias, MTU, up, address, route, leftovers),
//! [`anycast`] (neighbour solicitation for the CLAT's IPv6 address) and [`spawn`] (the translator
//! child and its pidfd). [`Controller::start`] records an [`UndoStep`] after every change it makes;
//! a failure undoes the recorded steps in reverse, and [`Controller::stop`] does the same for a
//! running CLAT, collecting every failure instead of stopping at the first.
//!
//! Order, and why a failure or a crash at any point leaves nothing behind:
//! 1. the uplink must exist under its name (ENODEV otherwise), and the tun's name must be free;
//! 2. tun opened (non-persistent: it vanishes with its last descriptor, so a supervisor crash
//!    before the translator holds it leaves nothing), then marked with the alias `autoclat:U`
//!    so that, once a translator holds it too, a crashed run's device is recognised at start-up;
//! 3. the CLAT's IPv6 address joined as anycast on U (a socket option: dies with the process);
//! 4. translator spawned with the tun descriptor;
//! 5. (eBPF fast path: attached by the caller after `start`, see the note in `start`);
//! 6. `v4-U` configured: IPv4 /32, MTU = U's MTU − 28, up, IPv4 default route with the metric.
//!    Address and route go with the link if it is deleted, so only the link can be left over.

pub mod addressing;
pub mod anycast;
pub mod backoff;
pub mod leftovers;
pub mod netconf;
pub mod spawn;
pub mod tun;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::discovery::prefix::Nat64Prefix;

use self::anycast::{AnycastError, AnycastMembership};
use self::netconf::NetconfError;
use self::spawn::{ChildWatch, ExitStatusInfo, ReservedFd, SpawnError};
use self::tun::TunError;

/// IPv6 header (40) − IPv4 header (20) + IPv6 fragment header (8): what translation adds to a
/// packet at most, so the tun's MTU is the uplink's minus this (as Android's clatd).
pub const MTU_DELTA: u32 = 28;

/// The smallest MTU IPv4 allows (RFC 791); an uplink too small for it cannot carry a CLAT.
const MIN_V4_MTU: u32 = 68;

/// How long a translator gets after SIGTERM before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// What to start: everything the controller needs, decided beforehand (addresses included).
#[derive(Debug)]
pub struct ClatSpec {
    /// The uplink's name (U).
    pub uplink: String,
    /// The uplink's interface index.
    pub uplink_ifindex: u32,
    /// The tun's name (`v4-U`, shortened to fit IFNAMSIZ by the caller).
    pub tun_name: String,
    /// The CLAT's IPv4 address (from 192.0.0.0/29).
    pub v4: Ipv4Addr,
    /// The CLAT's IPv6 address inside U's /64 (checksum-neutral).
    pub v6: Ipv6Addr,
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
    /// Passed to the translator as `-m` (mark for its IPv6 socket).
    pub fwmark: Option<u32>,
    /// Further descriptors handed to the translator with their flag (e.g. packet sockets as
    /// `-r` and `-w`). The supervisor keeps them, so each restart gets them again.
    pub extra_fds: Vec<(OwnedFd, &'static str)>,
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
    /// Spawning, signalling or reaping the translator.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A precondition that does not hold (with the reason).
    #[error("{0}")]
    Refused(String),
}

/// A controller failure, naming the step (e.g. `set alias on v4-eth0`) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// One step of starting, stopping or cleaning up failed.
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
}

/// One change the controller made, recorded so that it can be undone exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoStep {
    /// The tun exists: delete the link, then close our descriptor.
    DeleteTun {
        /// The tun's index.
        ifindex: u32,
    },
    /// The anycast membership exists: drop its socket.
    LeaveAnycast,
    /// A translator may be running: stop it (SIGTERM, grace, SIGKILL) and reap it.
    StopTranslator,
    /// The IPv4 address is on the tun.
    DeleteAddress {
        /// The tun's index.
        ifindex: u32,
        /// The address.
        v4: Ipv4Addr,
    },
    /// The tun is up.
    SetDown {
        /// The tun's index.
        ifindex: u32,
    },
    /// The IPv4 default route through the tun exists.
    DeleteRoute {
        /// The tun's index.
        ifindex: u32,
        /// Its metric.
        metric: u32,
        /// Its table.
        table: Option<u32>,
    },
}

/// A CLAT the controller started: what it holds open, and what it changed.
#[derive(Debug)]
pub struct RunningClat {
    /// What was started.
    pub spec: ClatSpec,
    /// The tun's interface index (0 until created).
    pub tun_ifindex: u32,
    /// The translator's pid (0 when none runs).
    pub pid: i32,
    /// Kept open so the tun survives translator restarts.
    tun: Option<OwnedFd>,
    anycast: Option<AnycastMembership>,
    child: Option<ChildWatch>,
    undo: Vec<UndoStep>,
}

impl RunningClat {
    /// The translator's watch, if one runs: `child().exited().await` learns of a crash.
    pub fn child(&self) -> Option<&ChildWatch> {
        self.child.as_ref()
    }

    /// Waits until the translator exits and says how (pending forever when none runs).
    pub async fn translator_exited(&self) -> Result<ExitStatusInfo, ControllerError> {
        match &self.child {
            Some(child) => child
                .exited()
                .await
                .map_err(|e| ControllerError::step(format!("wait for {}", self.argv0()), e)),
            None => std::future::pending().await,
        }
    }

    /// The changes recorded so far, in the order they were made.
    pub fn undo_steps(&self) -> &[UndoStep] {
        &self.undo
    }

    /// `clatd-U`: the translator's argv[0], which `ps` shows.
    pub fn argv0(&self) -> String {
        format!("clatd-{}", self.spec.uplink)
    }
}

/// Starts and stops CLATs through one rtnetlink handle.
#[derive(Debug, Clone)]
pub struct Controller {
    handle: rtnetlink::Handle,
    grace: Duration,
}

impl Controller {
    /// A controller using `handle` (its connection must be driven by the caller's runtime).
    pub fn new(handle: rtnetlink::Handle) -> Self {
        Self {
            handle,
            grace: DEFAULT_GRACE,
        }
    }

    /// The same controller with another SIGTERM grace period for translators.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Starts a CLAT (DESIGN steps 1–4 and 6; addresses are decided by the caller). On failure
    /// every step already made is undone (undo failures are logged) and the first error returned.
    pub async fn start(&self, spec: ClatSpec) -> Result<RunningClat, ControllerError> {
        let mut clat = RunningClat {
            spec,
            tun_ifindex: 0,
            pid: 0,
            tun: None,
            anycast: None,
            child: None,
            undo: Vec::new(),
        };
        match self.start_steps(&mut clat).await {
            Ok(()) => {
                tracing::info!(
                    uplink = %clat.spec.uplink, tun = %clat.spec.tun_name, ifindex = clat.tun_ifindex,
                    pid = clat.pid, v4 = %clat.spec.v4, v6 = %clat.spec.v6, prefix = %clat.spec.prefix,
                    "CLAT started"
                );
                Ok(clat)
            }
            Err(err) => {
                tracing::warn!(uplink = %clat.spec.uplink, error = %err, "CLAT start failed: undoing");
                for undo_err in self.unwind(&mut clat).await {
                    tracing::error!(uplink = %clat.spec.uplink, error = %undo_err, "undo after failed start");
                }
                Err(err)
            }
        }
    }

    async fn start_steps(&self, clat: &mut RunningClat) -> Result<(), ControllerError> {
        let spec = &clat.spec;
        let tun_name = spec.tun_name.clone();
        let h = &self.handle;

        // Step 1: the uplink exists under its name; the tun's name is free.
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
        let tun_mtu = match spec.mtu.checked_sub(MTU_DELTA) {
            Some(m) if m >= MIN_V4_MTU => m,
            _ => {
                let why = format!("uplink MTU {} leaves no room for IPv4", spec.mtu);
                return Err(ControllerError::step(
                    format!("size {tun_name}"),
                    StepError::Refused(why),
                ));
            }
        };
        if let Ok(name) = std::ffi::CString::new(tun_name.as_str()) {
            if nix::net::if_::if_nametoindex(name.as_c_str()).is_ok() {
                let why = "an interface of that name exists (not ours to take over)".to_owned();
                return Err(ControllerError::step(
                    format!("create {tun_name}"),
                    StepError::Refused(why),
                ));
            }
        }

        // Step 2: the tun, marked as ours.
        let dev = tun::open_tun(&tun_name)
            .map_err(|e| ControllerError::step(format!("create {tun_name}"), e))?;
        clat.tun = Some(dev.fd);
        clat.tun_ifindex = dev.ifindex;
        clat.undo.push(UndoStep::DeleteTun {
            ifindex: dev.ifindex,
        });
        let alias = netconf::alias_for(&clat.spec.uplink);
        netconf::set_alias(h, dev.ifindex, &alias)
            .await
            .map_err(|e| ControllerError::step(format!("set alias on {tun_name}"), e))?;

        // Step 3: U answers neighbour solicitation for the CLAT's IPv6 address.
        let membership =
            AnycastMembership::join(clat.spec.v6, clat.spec.uplink_ifindex).map_err(|e| {
                ControllerError::step(
                    format!("join {} as anycast on {}", clat.spec.v6, clat.spec.uplink),
                    e,
                )
            })?;
        clat.anycast = Some(membership);
        clat.undo.push(UndoStep::LeaveAnycast);

        // Step 4: the translator, holding a duplicate of the tun descriptor.
        clat.undo.push(UndoStep::StopTranslator);
        self.spawn_translator(clat)?;

        // Step 5 — HOOK for the eBPF fast path (crate::bpf, done by others): attach it to U and
        // v4-U here when enabled; record an undo step that detaches it. Until then the caller
        // attaches after `start` returns and must detach before `stop`.

        // Step 6: configure v4-U and route IPv4 through it.
        let ifindex = clat.tun_ifindex;
        let v4 = clat.spec.v4;
        netconf::add_v4_address(h, ifindex, v4).await.map_err(|e| {
            ControllerError::step(
                format!("add {v4}/{} to {tun_name}", netconf::V4_PREFIX_LEN),
                e,
            )
        })?;
        clat.undo.push(UndoStep::DeleteAddress { ifindex, v4 });
        netconf::set_mtu(h, ifindex, tun_mtu)
            .await
            .map_err(|e| ControllerError::step(format!("set mtu {tun_mtu} on {tun_name}"), e))?;
        netconf::set_up(h, ifindex)
            .await
            .map_err(|e| ControllerError::step(format!("set {tun_name} up"), e))?;
        clat.undo.push(UndoStep::SetDown { ifindex });
        let (metric, table) = (clat.spec.route_metric, clat.spec.route_table);
        netconf::add_default_route(h, ifindex, metric, table)
            .await
            .map_err(|e| {
                ControllerError::step(
                    format!("add IPv4 default route via {tun_name} metric {metric}"),
                    e,
                )
            })?;
        clat.undo.push(UndoStep::DeleteRoute {
            ifindex,
            metric,
            table,
        });
        Ok(())
    }

    /// Spawns the translator on `clat`'s tun and records it in `clat.child` / `clat.pid`.
    fn spawn_translator(&self, clat: &mut RunningClat) -> Result<(), ControllerError> {
        let argv0 = clat.argv0();
        let step = format!("spawn {} as {argv0}", clat.spec.clatd_path.display());
        let Some(tun) = clat.tun.as_ref() else {
            return Err(ControllerError::step(
                step,
                StepError::Refused("the tun is closed".into()),
            ));
        };
        let err = |e: SpawnError| ControllerError::step(&step, e);
        let tun_slot = ReservedFd::new().map_err(err)?;
        let mut extra_slots = Vec::with_capacity(clat.spec.extra_fds.len());
        for _ in &clat.spec.extra_fds {
            extra_slots.push(ReservedFd::new().map_err(err)?);
        }
        let extra_flags: Vec<(&str, RawFd)> = clat
            .spec
            .extra_fds
            .iter()
            .zip(&extra_slots)
            .map(|((_, flag), slot)| (*flag, slot.number()))
            .collect();
        let args = spawn::translator_args(
            &clat.spec.uplink,
            &clat.spec.prefix.to_string(),
            clat.spec.v4,
            clat.spec.v6,
            tun_slot.number(),
            clat.spec.fwmark,
            &extra_flags,
        );
        let mut fds = vec![(tun.as_fd(), tun_slot.number())];
        for ((fd, _), slot) in clat.spec.extra_fds.iter().zip(&extra_slots) {
            fds.push((fd.as_fd(), slot.number()));
        }
        let pid =
            spawn::spawn_translator(&clat.spec.clatd_path, &argv0, &args, &fds).map_err(err)?;
        // The numbers only had to be free until the child's dup2s ran.
        drop(fds);
        drop(extra_slots);
        drop(tun_slot);
        match ChildWatch::new(pid) {
            Ok(watch) => {
                clat.child = Some(watch);
                clat.pid = pid.as_raw();
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

    /// Stops a CLAT: undoes every recorded step in exact reverse order, never stopping early.
    /// Returns every failure (empty: the system is as it was before `start`).
    pub async fn stop(&self, mut clat: RunningClat) -> Vec<ControllerError> {
        let errors = self.unwind(&mut clat).await;
        tracing::info!(uplink = %clat.spec.uplink, tun = %clat.spec.tun_name, failures = errors.len(), "CLAT stopped");
        errors
    }

    /// Respawns the translator on the same tun (after it exited): stops the old one first if it
    /// still runs. On failure no translator runs and `clat.pid` is 0; `stop` still works.
    pub async fn restart_translator(&self, clat: &mut RunningClat) -> Result<(), ControllerError> {
        if let Some(old) = clat.child.take() {
            let step = format!("stop {} (pid {})", clat.argv0(), old.pid());
            let status = old
                .stop(self.grace)
                .await
                .map_err(|e| ControllerError::step(step, e))?;
            tracing::info!(pid = old.pid().as_raw(), %status, "old translator gone");
        }
        clat.pid = 0;
        self.spawn_translator(clat)
    }

    /// Deletes every link whose alias starts with `autoclat:` (a crashed run's tuns; addresses
    /// and routes go with them). Returns the names removed. Call before starting any CLAT.
    pub async fn remove_leftovers(&self) -> Result<Vec<String>, ControllerError> {
        let links = netconf::links_with_our_alias(&self.handle)
            .await
            .map_err(|e| ControllerError::step("list links with an autoclat: alias", e))?;
        let mut removed = Vec::new();
        let mut first_error = None;
        for link in links {
            match netconf::delete_link(&self.handle, link.ifindex).await {
                Ok(()) => {
                    tracing::info!(name = %link.name, ifindex = link.ifindex, alias = ?link.alias, "removed leftover interface");
                    removed.push(link.name);
                }
                Err(e) if e.is_already_gone() => {}
                Err(e) => {
                    let err = ControllerError::step(
                        format!("delete leftover {} (index {})", link.name, link.ifindex),
                        e,
                    );
                    tracing::error!(error = %err, "cannot remove leftover");
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(removed),
        }
    }

    async fn unwind(&self, clat: &mut RunningClat) -> Vec<ControllerError> {
        let mut errors = Vec::new();
        while let Some(step) = clat.undo.pop() {
            if let Err(e) = self.undo_one(clat, &step).await {
                tracing::warn!(error = %e, "undo step failed");
                errors.push(e);
            }
        }
        errors
    }

    async fn undo_one(
        &self,
        clat: &mut RunningClat,
        step: &UndoStep,
    ) -> Result<(), ControllerError> {
        let h = &self.handle;
        let tun_name = clat.spec.tun_name.clone();
        let gone_ok = |r: Result<(), NetconfError>, what: String| match r {
            Err(e) if e.is_already_gone() => {
                tracing::debug!(what = %what, "already gone");
                Ok(())
            }
            other => other.map_err(|e| ControllerError::step(what, e)),
        };
        match *step {
            UndoStep::DeleteRoute {
                ifindex,
                metric,
                table,
            } => gone_ok(
                netconf::del_default_route(h, ifindex, metric, table).await,
                format!("delete IPv4 default route via {tun_name} metric {metric}"),
            ),
            UndoStep::SetDown { ifindex } => gone_ok(
                netconf::set_down(h, ifindex).await,
                format!("set {tun_name} down"),
            ),
            UndoStep::DeleteAddress { ifindex, v4 } => gone_ok(
                netconf::del_v4_address(h, ifindex, v4).await,
                format!("delete {v4}/{} from {tun_name}", netconf::V4_PREFIX_LEN),
            ),
            UndoStep::StopTranslator => {
                let Some(child) = clat.child.take() else {
                    return Ok(());
                };
                clat.pid = 0;
                let step = format!("stop {} (pid {})", clat.argv0(), child.pid());
                let status = child
                    .stop(self.grace)
                    .await
                    .map_err(|e| ControllerError::step(step, e))?;
                tracing::info!(pid = child.pid().as_raw(), %status, "translator stopped");
                Ok(())
            }
            UndoStep::LeaveAnycast => {
                drop(clat.anycast.take());
                Ok(())
            }
            UndoStep::DeleteTun { ifindex } => {
                let result = gone_ok(
                    netconf::delete_link(h, ifindex).await,
                    format!("delete {tun_name}"),
                );
                // Closing our descriptor removes a non-persistent tun even if the delete failed.
                drop(clat.tun.take());
                clat.tun_ifindex = 0;
                result
            }
        }
    }
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
    fn mtu_delta_matches_translation_overhead() {
        // IPv6 header 40 − IPv4 header 20 + fragment header 8.
        assert_eq!(MTU_DELTA, 40 - 20 + 8);
    }
}
