//! systemd's service notification protocol (`sd_notify(3)`), spoken directly: one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`).
//!
//! Unlike `sd_notify(unset_environment=1)` the environment is left alone: the daemon sends
//! many messages (`STATUS=`, `WATCHDOG=1`) over its life. The socket is non-blocking, so a
//! stalled service manager can never hold up the event loop: a message that cannot be queued
//! at once is reported as an error (the caller logs it) and dropped.
//!
//! [`status_summary`] is the pure one-line `STATUS=` text made from a [`StatusReport`].

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::control::{StatusReport, UplinkState};

/// Errors of the notification socket.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` names something this implementation cannot talk to.
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an abstract name (@...)")]
    BadAddress(String),
    /// Creating the socket or sending failed.
    #[error("sending {what} to the service manager: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A connection to the service manager that started us.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// What was last sent as `STATUS=` (only changes are sent).
    last_status: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The service manager's socket from the environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`); `None` when not started by systemd with `Type=notify` (or when the
    /// variable is unusable, which is logged).
    pub fn from_env() -> Option<Self> {
        let socket = std::env::var("NOTIFY_SOCKET").ok()?;
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        match Self::new(&socket, usec.as_deref(), pid.as_deref(), std::process::id()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("not notifying systemd: {e}");
                None
            }
        }
    }

    /// A notifier for the socket `notify_socket` (as `$NOTIFY_SOCKET` would say it), with the
    /// watchdog settings `$WATCHDOG_USEC` and `$WATCHDOG_PID` would give, for process `own_pid`.
    pub fn new(
        notify_socket: &str,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Result<Self, NotifyError> {
        let addr = parse_address(notify_socket)?;
        let io = |source| NotifyError::Io {
            what: "socket",
            source,
        };
        let socket = UnixDatagram::unbound().map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        Ok(Self {
            socket,
            addr,
            last_status: None,
            watchdog: watchdog_interval(watchdog_usec, watchdog_pid, own_pid),
        })
    }

    /// `READY=1`: start-up is complete (every uplink has its first decision).
    pub fn ready(&mut self) -> Result<(), NotifyError> {
        self.send("READY=1", "READY=1")
    }

    /// `STATUS=text`, only when `text` differs from what was sent last. Returns whether a
    /// message was sent. Newlines would end the field: they are replaced by spaces.
    pub fn status(&mut self, text: &str) -> Result<bool, NotifyError> {
        let text = text.replace('\n', " ");
        if self.last_status.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.send(&format!("STATUS={text}"), "STATUS=")?;
        self.last_status = Some(text);
        Ok(true)
    }

    /// How often to send [`Self::watchdog`]: half of `WATCHDOG_USEC`, as `sd_watchdog_enabled(3)`
    /// advises; `None` when systemd does not watch this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `WATCHDOG=1`: the event loop is alive.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1", "WATCHDOG=1")
    }

    /// `STOPPING=1`: shutdown has begun (CLATs are being removed).
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1", "STOPPING=1")
    }

    fn send(&self, message: &str, what: &'static str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Io { what, source })
    }
}

/// `/path` or `@abstract`.
fn parse_address(s: &str) -> Result<SocketAddr, NotifyError> {
    use std::os::linux::net::SocketAddrExt;
    let bad = || NotifyError::BadAddress(s.to_string());
    if let Some(name) = s.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())
    } else if s.starts_with('/') {
        SocketAddr::from_pathname(s).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// Half of `WATCHDOG_USEC` if it is a positive number and `WATCHDOG_PID` (when set) is us.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// The one-line `STATUS=` summary: how many interfaces are candidates (not disabled), how many
/// run a CLAT (named, up to four), and how many wait or back off. Examples:
/// `2 uplinks, 1 CLAT running (eth0), 1 waiting`, `1 uplink, 0 CLATs running, 1 in backoff`,
/// `no uplinks`. Counters are left out on purpose: the line changes only when a state does.
pub fn status_summary(report: &StatusReport) -> String {
    let count = |s: UplinkState| report.uplinks.iter().filter(|u| u.state == s).count();
    let running: Vec<&str> = report
        .uplinks
        .iter()
        .filter(|u| u.state == UplinkState::Running)
        .map(|u| u.uplink.as_str())
        .collect();
    let (waiting, backoff) = (count(UplinkState::Waiting), count(UplinkState::Backoff));
    let candidates = running.len() + waiting + backoff;
    if candidates == 0 {
        return "no uplinks".to_string();
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let mut out = format!(
        "{candidates} uplink{}, {} CLAT{} running",
        plural(candidates),
        running.len(),
        plural(running.len())
    );
    if !running.is_empty() {
        if running.len() <= 4 {
            out.push_str(&format!(" ({})", running.join(", ")));
        } else {
            out.push_str(&format!(" ({}, ...)", running[..4].join(", ")));
        }
    }
    if waiting > 0 {
        out.push_str(&format!(", {waiting} waiting"));
    }
    if backoff > 0 {
        out.push_str(&format!(", {backoff} in backoff"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::control::{ClatCounters, UplinkStatus};

    /// A bound receiving socket standing in for systemd.
    fn manager() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        (dir, sock, path.to_str().unwrap().to_string())
    }

    fn recv(sock: &UnixDatagram) -> Option<String> {
        let mut buf = [0u8; 4096];
        match sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn sends_ready_status_watchdog_stopping_as_datagrams() {
        let (_dir, mgr, path) = manager();
        let mut n = Notifier::new(&path, None, None, 1).unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&mgr).as_deref(), Some("READY=1"));
        assert!(n.status("1 uplink, 1 CLAT running (eth0)").unwrap());
        assert_eq!(
            recv(&mgr).as_deref(),
            Some("STATUS=1 uplink, 1 CLAT running (eth0)")
        );
        n.watchdog().unwrap();
        assert_eq!(recv(&mgr).as_deref(), Some("WATCHDOG=1"));
        n.stopping().unwrap();
        assert_eq!(recv(&mgr).as_deref(), Some("STOPPING=1"));
        assert_eq!(recv(&mgr), None);
    }

    #[test]
    fn status_is_sent_only_when_it_changes() {
        let (_dir, mgr, path) = manager();
        let mut n = Notifier::new(&path, None, None, 1).unwrap();
        assert!(n.status("a").unwrap());
        assert!(!n.status("a").unwrap());
        assert!(n.status("b").unwrap());
        assert!(n.status("a").unwrap());
        assert!(n.status("two\nlines").unwrap());
        let got: Vec<String> = std::iter::from_fn(|| recv(&mgr)).collect();
        assert_eq!(
            got,
            ["STATUS=a", "STATUS=b", "STATUS=a", "STATUS=two lines"]
        );
    }

    #[test]
    fn abstract_socket_names_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("autoclat-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let mgr = UnixDatagram::bind_addr(&addr).unwrap();
        mgr.set_nonblocking(true).unwrap();
        let mut n = Notifier::new(&format!("@{name}"), None, None, 1).unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&mgr).as_deref(), Some("READY=1"));
    }

    #[test]
    fn bad_addresses_are_refused() {
        for s in ["", "relative/path", "vsock:2:1234"] {
            assert!(matches!(
                Notifier::new(s, None, None, 1),
                Err(NotifyError::BadAddress(_))
            ));
        }
    }

    #[test]
    fn a_missing_manager_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let n = Notifier::new(path.to_str().unwrap(), None, None, 1).unwrap();
        assert!(matches!(n.watchdog(), Err(NotifyError::Io { .. })));
    }

    #[test]
    fn watchdog_interval_is_half_and_honours_watchdog_pid() {
        let s = Duration::from_secs;
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), Some(s(15)));
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(s(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        let n = Notifier::new("/nonexistent/sock", Some("1000000"), Some("42"), 42).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(500)));
    }

    fn uplink(name: &str, state: UplinkState) -> UplinkStatus {
        UplinkStatus {
            uplink: name.into(),
            ifindex: 1,
            state,
            reason: None,
            prefix: None,
            prefix_source: None,
            v4: None,
            v6: None,
            v4_iface: None,
            v4_ifindex: None,
            route_metric: None,
            pid: None,
            restarts: 0,
            repairs: 0,
            fast_path: false,
            fast_path_reason: None,
            last_exit: None,
            counters: ClatCounters::default(),
        }
    }

    #[test]
    fn summary_wording() {
        use UplinkState::*;
        let r = |v: Vec<UplinkStatus>| {
            status_summary(&StatusReport {
                uplinks: v,
                ..StatusReport::default()
            })
        };
        assert_eq!(r(vec![]), "no uplinks");
        assert_eq!(r(vec![uplink("lo", Disabled)]), "no uplinks");
        assert_eq!(
            r(vec![
                uplink("lo", Disabled),
                uplink("eth0", Running),
                uplink("wlan0", Waiting)
            ]),
            "2 uplinks, 1 CLAT running (eth0), 1 waiting"
        );
        assert_eq!(
            r(vec![uplink("eth0", Backoff)]),
            "1 uplink, 0 CLATs running, 1 in backoff"
        );
        let many: Vec<UplinkStatus> = (0..6).map(|i| uplink(&format!("e{i}"), Running)).collect();
        assert_eq!(r(many), "6 uplinks, 6 CLATs running (e0, e1, e2, e3, ...)");
    }
}
