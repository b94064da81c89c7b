//! Hook scripts: `[hooks] up` and `down` run when a CLAT has started or stopped (on a prefix
//! change: down, then up), like clatd's `script-up`/`script-down` and NetworkManager's
//! dispatcher scripts.
//!
//! [`Hooks::fire`] never waits: it queues the event for its uplink and returns. One task per
//! uplink runs that uplink's hooks one after the other, in the order they were fired (a down is
//! always finished before the following up starts); different uplinks run in parallel. Each
//! hook gets the event in `AUTOCLAT_*` environment variables, stdin from /dev/null, its stdout
//! and stderr logged line by line with the `uplink` and `hook` fields, and is killed (its whole
//! process group, SIGKILL) when it runs longer than `[hooks] timeout`. A hook that cannot be
//! started, fails or hangs is logged and changes nothing else.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::config::HooksConfig;
use crate::nat64::PrefixSource;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// A CLAT has started (its address and route are in place).
    Up,
    /// A CLAT has stopped (everything removed).
    Down,
}

impl HookKind {
    /// `up` or `down`, the value of `AUTOCLAT_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Up => "up",
            HookKind::Down => "down",
        }
    }
}

/// What a hook is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub event: HookKind,
    pub uplink: String,
    /// The CLAT's IPv4 address (192.0.0.4...).
    pub v4: Option<Ipv4Addr>,
    /// The CLAT's IPv6 address on the uplink.
    pub v6: Option<Ipv6Addr>,
    /// The NAT64 prefix, e.g. `64:ff9b::/96`.
    pub prefix: Option<String>,
    pub prefix_source: Option<PrefixSource>,
    /// The CLAT's tun interface, e.g. `v4-eth0`.
    pub tun: Option<String>,
}

impl HookEvent {
    /// The environment variables the hook gets; unknown values are empty strings, so scripts
    /// may use `set -u`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        fn s<T: ToString>(v: &Option<T>) -> String {
            v.as_ref().map(ToString::to_string).unwrap_or_default()
        }
        vec![
            ("AUTOCLAT_EVENT", self.event.as_str().to_string()),
            ("AUTOCLAT_UPLINK", self.uplink.clone()),
            ("AUTOCLAT_V4", s(&self.v4)),
            ("AUTOCLAT_V6", s(&self.v6)),
            ("AUTOCLAT_PREFIX", s(&self.prefix)),
            ("AUTOCLAT_PREFIX_SOURCE", s(&self.prefix_source)),
            ("AUTOCLAT_TUN", s(&self.tun)),
        ]
    }
}

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookResult {
    /// Exited with this status code.
    Exited(i32),
    /// Ended by a signal it did not get from us.
    Signalled(i32),
    /// Ran longer than the timeout and was killed.
    Killed,
    /// Could not be started (missing, not executable, ...).
    SpawnFailed(String),
}

/// A finished hook run, for whoever wants to know (tests; the daemon only logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    pub event: HookKind,
    pub uplink: String,
    pub pid: Option<u32>,
    pub result: HookResult,
    /// The first lines of its stdout and stderr (at most [`KEPT_LINES`]), as logged.
    pub output: Vec<String>,
}

/// How many output lines an outcome keeps (all are logged).
pub const KEPT_LINES: usize = 20;

/// How long to wait for a finished hook's output to reach end of file (a background child it
/// left may hold the pipe); after that the output is still logged as it comes.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// One uplink's queue and the task working through it.
#[derive(Debug)]
struct Queue {
    tx: mpsc::UnboundedSender<HookEvent>,
    worker: tokio::task::JoinHandle<()>,
}

/// The hook runner: one owner (the daemon's event loop), one queue per uplink.
#[derive(Debug)]
pub struct Hooks {
    cfg: HooksConfig,
    queues: HashMap<String, Queue>,
    outcomes: Option<mpsc::UnboundedSender<HookOutcome>>,
}

impl Hooks {
    /// A runner for `cfg`. Nothing runs until [`Self::fire`].
    pub fn new(cfg: HooksConfig) -> Self {
        Self {
            cfg,
            queues: HashMap::new(),
            outcomes: None,
        }
    }

    /// Also report every finished run on `tx`.
    pub fn with_outcomes(cfg: HooksConfig, tx: mpsc::UnboundedSender<HookOutcome>) -> Self {
        Self {
            outcomes: Some(tx),
            ..Self::new(cfg)
        }
    }

    /// Whether a hook is configured for `kind`.
    pub fn configured(&self, kind: HookKind) -> bool {
        self.path(kind).is_some()
    }

    fn path(&self, kind: HookKind) -> Option<&str> {
        match kind {
            HookKind::Up => self.cfg.up.as_deref(),
            HookKind::Down => self.cfg.down.as_deref(),
        }
    }

    /// Queue `ev` for its uplink and return at once (must be called inside a tokio runtime).
    /// Does nothing when no hook is configured for the event.
    pub fn fire(&mut self, ev: HookEvent) {
        if !self.configured(ev.event) {
            return;
        }
        let ev = match self.queues.get(&ev.uplink) {
            Some(q) => match q.tx.send(ev) {
                Ok(()) => return,
                // The worker is gone (it never is while we hold the sender); start a new one.
                Err(mpsc::error::SendError(ev)) => ev,
            },
            None => ev,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let uplink = ev.uplink.clone();
        let _ = tx.send(ev);
        let worker = tokio::spawn(worker(self.cfg.clone(), rx, self.outcomes.clone()));
        self.queues.insert(uplink, Queue { tx, worker });
    }

    /// The uplink is gone for good: its worker ends once its queue is done.
    pub fn forget(&mut self, uplink: &str) {
        self.queues.remove(uplink);
    }

    /// At shutdown: let every queued hook run (each bounded by the timeout), so that the
    /// down hooks of the CLATs just stopped undo what the up hooks did. Nothing new can be
    /// fired meanwhile.
    pub async fn finish(&mut self) {
        let workers: Vec<_> = std::mem::take(&mut self.queues)
            .into_values()
            .map(|q| {
                drop(q.tx);
                q.worker
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }
}

async fn worker(
    cfg: HooksConfig,
    mut rx: mpsc::UnboundedReceiver<HookEvent>,
    outcomes: Option<mpsc::UnboundedSender<HookOutcome>>,
) {
    while let Some(ev) = rx.recv().await {
        let path = match ev.event {
            HookKind::Up => cfg.up.clone(),
            HookKind::Down => cfg.down.clone(),
        };
        let Some(path) = path else { continue };
        let outcome = run_hook(&path, &ev, Duration::from_secs(u64::from(cfg.timeout))).await;
        if let Some(tx) = &outcomes {
            let _ = tx.send(outcome);
        }
    }
}

/// Run one hook to its end (or kill it at `timeout`) and log what happened.
pub async fn run_hook(path: &str, ev: &HookEvent, timeout: Duration) -> HookOutcome {
    let hook = ev.event.as_str();
    let uplink = ev.uplink.as_str();
    let mut outcome = HookOutcome {
        event: ev.event,
        uplink: ev.uplink.clone(),
        pid: None,
        result: HookResult::SpawnFailed(String::new()),
        output: Vec::new(),
    };
    let mut cmd = tokio::process::Command::new(path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(ev.env())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(|| {
            keep_only_hook_ambient_capabilities();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(uplink, hook, "cannot run hook {path}: {e}");
            outcome.result = HookResult::SpawnFailed(e.to_string());
            return outcome;
        }
    };
    let pid = child.id();
    outcome.pid = pid;
    tracing::info!(uplink, hook, pid, "running hook {path}");
    let (lines_tx, mut lines_rx) = mpsc::unbounded_channel();
    let readers = [
        child.stdout.take().map(|o| {
            tokio::spawn(log_lines(
                o,
                ev.uplink.clone(),
                hook,
                false,
                lines_tx.clone(),
            ))
        }),
        child.stderr.take().map(|e| {
            tokio::spawn(log_lines(
                e,
                ev.uplink.clone(),
                hook,
                true,
                lines_tx.clone(),
            ))
        }),
    ];
    drop(lines_tx);
    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = tokio::time::sleep(timeout) => None,
    };
    outcome.result = match status {
        Some(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(0), _) => {
                    tracing::info!(uplink, hook, pid, "hook {path} succeeded");
                    HookResult::Exited(0)
                }
                (Some(c), _) => {
                    tracing::warn!(uplink, hook, pid, "hook {path} failed with exit status {c}");
                    HookResult::Exited(c)
                }
                (None, sig) => {
                    let sig = sig.unwrap_or(0);
                    tracing::warn!(uplink, hook, pid, "hook {path} killed by signal {sig}");
                    HookResult::Signalled(sig)
                }
            }
        }
        Some(Err(e)) => {
            tracing::warn!(uplink, hook, pid, "waiting for hook {path}: {e}");
            HookResult::SpawnFailed(e.to_string())
        }
        None => {
            tracing::warn!(
                uplink,
                hook,
                pid,
                "hook {path} still running after {timeout:?}: killed"
            );
            kill_group(pid);
            let _ = child.kill().await;
            HookResult::Killed
        }
    };
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        for r in readers.into_iter().flatten() {
            let _ = r.await;
        }
    })
    .await;
    while let Ok(line) = lines_rx.try_recv() {
        if outcome.output.len() < KEPT_LINES {
            outcome.output.push(line);
        }
    }
    outcome
}

/// The ambient capabilities a hook keeps from a non-root daemon (the unit gives the daemon
/// more): CAP_NET_ADMIN and CAP_NET_RAW, enough for firewall rules and routes on the tun.
/// CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_BPF and CAP_PERFMON are the daemon's alone. (A
/// daemon run as root hands its hooks root, as any root process does.)
pub const HOOK_AMBIENT_CAPABILITIES: [u32; 2] = [12, 13];

/// In the forked child before exec: lower every other ambient capability. Async-signal-safe.
fn keep_only_hook_ambient_capabilities() {
    for cap in 0..64u32 {
        if !HOOK_AMBIENT_CAPABILITIES.contains(&cap) {
            // SAFETY: prctl with integer arguments only; an unknown capability is EINVAL.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
                    libc::c_ulong::from(cap),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
            }
        }
    }
}

/// SIGKILL the process group `pid` leads. Only called while the leader is not reaped yet, so
/// the id cannot have been reused. (After a normal exit, children a hook left running are its
/// business, as with any dispatcher script.)
fn kill_group(pid: Option<u32>) {
    let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

async fn log_lines(
    out: impl AsyncRead + Unpin,
    uplink: String,
    hook: &'static str,
    stderr: bool,
    kept: mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(out).lines();
    // A line that is not UTF-8 ends the reading (it is an error for `lines`); enough for logs.
    while let Ok(Some(line)) = lines.next_line().await {
        if stderr {
            tracing::warn!(uplink = %uplink, hook, "hook stderr: {line}");
        } else {
            tracing::info!(uplink = %uplink, hook, "hook: {line}");
        }
        let _ = kept.send(line);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    fn script(dir: &Path, name: &str, body: &str) -> String {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn event(kind: HookKind, uplink: &str) -> HookEvent {
        HookEvent {
            event: kind,
            uplink: uplink.into(),
            v4: Some(Ipv4Addr::new(192, 0, 0, 4)),
            v6: Some("2001:db8:1::c1a7".parse().unwrap()),
            prefix: Some("64:ff9b::/96".into()),
            prefix_source: Some(PrefixSource::Pref64),
            tun: Some(format!("v4-{uplink}")),
        }
    }

    fn cfg(up: Option<String>, down: Option<String>, timeout: u32) -> HooksConfig {
        HooksConfig { up, down, timeout }
    }

    #[test]
    fn environment_names_every_field() {
        let env = event(HookKind::Up, "eth0").env();
        let want = [
            ("AUTOCLAT_EVENT", "up"),
            ("AUTOCLAT_UPLINK", "eth0"),
            ("AUTOCLAT_V4", "192.0.0.4"),
            ("AUTOCLAT_V6", "2001:db8:1::c1a7"),
            ("AUTOCLAT_PREFIX", "64:ff9b::/96"),
            ("AUTOCLAT_PREFIX_SOURCE", "pref64"),
            ("AUTOCLAT_TUN", "v4-eth0"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, want);
        let mut bare = event(HookKind::Down, "eth0");
        bare.v4 = None;
        bare.prefix_source = None;
        let env = bare.env();
        assert!(env.contains(&("AUTOCLAT_V4", String::new())));
        assert!(env.contains(&("AUTOCLAT_PREFIX_SOURCE", String::new())));
        assert!(env.contains(&("AUTOCLAT_EVENT", "down".into())));
    }

    #[tokio::test]
    async fn hook_sees_its_environment_and_its_output_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let up = script(
            dir.path(),
            "up",
            "env | grep '^AUTOCLAT_' | sort; echo oops >&2; \
             [ -z \"${NOTIFY_SOCKET:-}\" ] && echo no-notify-socket; \
             read x && echo stdin-had-data; exit 0",
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hooks = Hooks::with_outcomes(cfg(Some(up), None, 30), tx);
        hooks.fire(event(HookKind::Up, "eth0"));
        let o = rx.recv().await.unwrap();
        assert_eq!(o.result, HookResult::Exited(0));
        assert_eq!(o.event, HookKind::Up);
        for line in [
            "AUTOCLAT_EVENT=up",
            "AUTOCLAT_UPLINK=eth0",
            "AUTOCLAT_V4=192.0.0.4",
            "AUTOCLAT_V6=2001:db8:1::c1a7",
            "AUTOCLAT_PREFIX=64:ff9b::/96",
            "AUTOCLAT_PREFIX_SOURCE=pref64",
            "AUTOCLAT_TUN=v4-eth0",
            "oops",
            "no-notify-socket",
        ] {
            assert!(
                o.output.iter().any(|l| l == line),
                "{line} in {:?}",
                o.output
            );
        }
        assert!(!o.output.iter().any(|l| l == "stdin-had-data"));
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_with_its_children_and_fire_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let up = script(
            dir.path(),
            "up",
            &format!("sleep 60 & echo $! > {}; wait", pidfile.display()),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hooks = Hooks::with_outcomes(cfg(Some(up), None, 1), tx);
        // `fire` is not async: it cannot wait for the hook. The hook has not even been started
        // when it returns (the runtime of this test is single-threaded and we have not yielded).
        hooks.fire(event(HookKind::Up, "eth0"));
        assert!(rx.try_recv().is_err());
        assert!(!pidfile.exists());
        let o = rx.recv().await.unwrap();
        assert_eq!(o.result, HookResult::Killed);
        let hook_pid = o.pid.unwrap() as i32;
        let sleep_pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for pid in [hook_pid, sleep_pid] {
            // Reaped or at least dead: no process, or a zombie of a reparented child.
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let st = state.rsplit(')').next().unwrap_or("").trim_start();
            assert!(state.is_empty() || st.starts_with('Z'), "{pid}: {state}");
        }
    }

    #[tokio::test]
    async fn failing_or_missing_hooks_are_reported_and_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let down = script(dir.path(), "down", "echo bad >&2; exit 3");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let missing = dir.path().join("missing").to_str().unwrap().to_string();
        let mut hooks = Hooks::with_outcomes(cfg(Some(missing), Some(down), 5), tx);
        hooks.fire(event(HookKind::Down, "eth0"));
        hooks.fire(event(HookKind::Up, "eth0"));
        let o = rx.recv().await.unwrap();
        assert_eq!(o.result, HookResult::Exited(3));
        assert_eq!(o.output, ["bad"]);
        let o = rx.recv().await.unwrap();
        assert!(matches!(o.result, HookResult::SpawnFailed(_)), "{o:?}");
        // The queue still works after both.
        hooks.fire(event(HookKind::Down, "eth0"));
        assert_eq!(rx.recv().await.unwrap().result, HookResult::Exited(3));
    }

    #[tokio::test]
    async fn hooks_of_one_uplink_run_in_order_and_others_in_parallel() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let gate = dir.path().join("gate");
        // The down hook of eth0 waits for a file that only eth1's up hook creates: if eth1
        // waited behind eth0, this would hang until the timeout and fail the order check.
        let down = script(
            dir.path(),
            "down",
            &format!(
                "while [ ! -e {g} ]; do sleep 0.05; done; echo \"down $AUTOCLAT_UPLINK\" >> {l}",
                g = gate.display(),
                l = log.display()
            ),
        );
        let up = script(
            dir.path(),
            "up",
            &format!(
                "echo \"up $AUTOCLAT_UPLINK\" >> {l}; touch {g}",
                g = gate.display(),
                l = log.display()
            ),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hooks = Hooks::with_outcomes(cfg(Some(up), Some(down), 30), tx);
        hooks.fire(event(HookKind::Down, "eth0"));
        hooks.fire(event(HookKind::Up, "eth0"));
        hooks.fire(event(HookKind::Up, "eth1"));
        for _ in 0..3 {
            assert_eq!(rx.recv().await.unwrap().result, HookResult::Exited(0));
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "up eth1\ndown eth0\nup eth0\n");
    }

    /// Set this thread's inheritable and ambient capabilities to `caps` (root only).
    fn set_ambient(caps: &[u32]) {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget fills two Data structures for version 3; both pointers are live.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let (mut lo, mut hi) = (0u32, 0u32);
        for &c in caps {
            if c < 32 {
                lo |= 1 << c;
            } else {
                hi |= 1 << (c - 32);
            }
        }
        data[0].inheritable = lo;
        data[1].inheritable = hi;
        // SAFETY: as above, capset reads the two structures.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        for &c in caps {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    libc::c_ulong::from(c),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
    }

    /// A daemon with the unit's ambient capabilities hands a hook only CAP_NET_ADMIN and
    /// CAP_NET_RAW. (Capabilities are per thread: the single-threaded test runtime spawns the
    /// hook from this thread.)
    #[tokio::test(flavor = "current_thread")]
    async fn hooks_get_only_the_network_capabilities() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to set ambient capabilities");
            return;
        }
        // NET_ADMIN, NET_RAW, KILL, SETUID, SETGID, BPF, PERFMON.
        set_ambient(&[12, 13, 5, 7, 6, 39, 38]);
        let dir = tempfile::tempdir().unwrap();
        let up = script(dir.path(), "up", "grep CapAmb /proc/self/status");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hooks = Hooks::with_outcomes(cfg(Some(up), None, 30), tx);
        hooks.fire(event(HookKind::Up, "eth0"));
        let o = rx.recv().await.unwrap();
        set_ambient(&[]);
        assert_eq!(o.result, HookResult::Exited(0));
        // Bits 12 and 13.
        assert_eq!(o.output, ["CapAmb:\t0000000000003000"], "{:?}", o.output);
    }

    #[tokio::test]
    async fn finish_waits_for_the_queued_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let down = script(
            dir.path(),
            "down",
            &format!(
                "sleep 0.2; echo \"down $AUTOCLAT_UPLINK\" >> {}",
                log.display()
            ),
        );
        let mut hooks = Hooks::new(cfg(None, Some(down), 30));
        hooks.fire(event(HookKind::Down, "eth0"));
        hooks.fire(event(HookKind::Down, "eth1"));
        hooks.fire(event(HookKind::Down, "eth0"));
        hooks.finish().await;
        // Nothing is left queued, and the runner is still usable.
        assert!(hooks.queues.is_empty());
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["down eth0", "down eth0", "down eth1"]);
    }

    #[tokio::test]
    async fn nothing_runs_without_a_configured_hook() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut hooks = Hooks::with_outcomes(cfg(None, None, 5), tx);
        assert!(!hooks.configured(HookKind::Up));
        hooks.fire(event(HookKind::Up, "eth0"));
        drop(hooks);
        assert!(rx.recv().await.is_none());
    }
}
