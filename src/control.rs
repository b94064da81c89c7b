//! The control socket: a Unix stream socket on which the daemon answers `status` requests.
//!
//! Protocol: the client writes one line (`status\n`); the daemon answers with one line of JSON
//! (a [`StatusReport`]) and closes the connection. Plain text keeps it usable with `socat`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::nat64::PrefixSource;

/// Errors of the control socket, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created.
    #[error("cannot listen on control socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The daemon is not reachable. (The OS error is part of the message and deliberately not
    /// a `source`, so that a printed cause chain does not repeat it.)
    #[error(
        "cannot reach the autoclat daemon at {path}: {error}; is `autoclat run` running \
         (`systemctl status autoclat`), and is this its control socket (--socket)?"
    )]
    Connect {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's answer was not valid.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// The state of one uplink as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkState {
    /// A CLAT runs.
    Running,
    /// Conditions are not (yet) met; `reason` says which.
    Waiting,
    /// The translator exited, or a start failed; retrying after a delay.
    Backoff,
    /// A CLAT runs but a piece of it is missing (removed by someone else); `reason` names it.
    Repairing,
    /// Excluded by configuration (or not a candidate at all).
    Disabled,
}

/// Packets and bytes each way through one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirCounters {
    pub v4_to_v6_packets: u64,
    pub v4_to_v6_bytes: u64,
    pub v6_to_v4_packets: u64,
    pub v6_to_v4_bytes: u64,
}

/// Counters of one CLAT: the userspace translator and the eBPF fast path separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClatCounters {
    pub translator: DirCounters,
    pub fast_path: DirCounters,
    /// The translator's own drop counters, by reason; null when the daemon could not read
    /// them (an older translator, or a `clatd_path` that does not share its counters).
    #[serde(default)]
    pub translator_drops: Option<TranslatorDrops>,
}

/// Packets the userspace translator dropped, by reason (from its shared counter page,
/// [`crate::translator::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranslatorDrops {
    /// Not between the CLAT addresses and the NAT64 prefix.
    pub not_ours: u64,
    /// Malformed packets.
    pub malformed: u64,
    /// Unsupported, too big, source-routed or TTL exceeded.
    pub other: u64,
    /// Received packets larger than a receive slot.
    pub truncated: u64,
    /// Translated packets whose offload metadata could not be honoured.
    pub offload_error: u64,
    /// IPv6 packets the kernel refused, or that found the send queue full.
    pub send_error: u64,
    /// IPv4 packets the tun refused.
    pub tun_write_error: u64,
}

impl TranslatorDrops {
    /// Each reason with its count, in a fixed order; the names are the `reason` label of
    /// `autoclat_translator_dropped_packets_total`.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("not_ours", self.not_ours),
            ("malformed", self.malformed),
            ("other", self.other),
            ("truncated", self.truncated),
            ("offload_error", self.offload_error),
            ("send_error", self.send_error),
            ("tun_write_error", self.tun_write_error),
        ]
    }
}

/// One line of `autoclat status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkStatus {
    pub uplink: String,
    pub ifindex: u32,
    pub state: UplinkState,
    /// Why the uplink has no running CLAT; null when it runs.
    pub reason: Option<String>,
    pub prefix: Option<String>,
    pub prefix_source: Option<PrefixSource>,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    pub v4_iface: Option<String>,
    pub v4_ifindex: Option<u32>,
    /// The metric of the IPv4 default route through `v4_iface`.
    pub route_metric: Option<u32>,
    pub pid: Option<i32>,
    pub restarts: u32,
    /// How many times the daemon repaired a piece of the running CLAT (an address, route or
    /// program removed by someone else) without restarting it.
    #[serde(default)]
    pub repairs: u32,
    /// Whether the eBPF fast path is attached.
    pub fast_path: bool,
    /// Why the fast path is not attached (when it is not).
    pub fast_path_reason: Option<String>,
    /// How the translator last exited, if it ever did.
    pub last_exit: Option<String>,
    pub counters: ClatCounters,
}

/// The whole answer to `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub uplinks: Vec<UplinkStatus>,
}

impl UplinkStatus {
    /// The human form: the seed's dump line, then the details.
    /// `iif[eth0] 2001:db8:64::/96 2001:db8:1::ab -> 192.0.0.4 v4iif[v4-eth0] [running] ...`
    pub fn human_line(&self) -> String {
        fn or_dash<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "-".to_string(), |v| v.to_string())
        }
        let state = match self.state {
            UplinkState::Running => "running",
            UplinkState::Waiting => "waiting",
            UplinkState::Backoff => "backoff",
            UplinkState::Repairing => "repairing",
            UplinkState::Disabled => "disabled",
        };
        let mut line = format!(
            "iif[{}] {} {} -> {} v4iif[{}] [{}]",
            self.uplink,
            or_dash(&self.prefix),
            or_dash(&self.v6),
            or_dash(&self.v4),
            or_dash(&self.v4_iface),
            state
        );
        if let Some(src) = self.prefix_source {
            line.push_str(&format!(" source={src}"));
        }
        if let Some(idx) = self.v4_ifindex {
            line.push_str(&format!(" v4ifindex={idx}"));
        }
        if let Some(m) = self.route_metric {
            line.push_str(&format!(" metric={m}"));
        }
        if let Some(pid) = self.pid {
            line.push_str(&format!(" pid={pid}"));
        }
        if self.state != UplinkState::Disabled {
            line.push_str(&format!(
                " restarts={} repairs={}",
                self.restarts, self.repairs
            ));
            line.push_str(if self.fast_path {
                " fastpath=on"
            } else {
                " fastpath=off"
            });
            let t = &self.counters.translator;
            let f = &self.counters.fast_path;
            if self.state == UplinkState::Running {
                line.push_str(&format!(
                    " xlat4to6={}p/{}B xlat6to4={}p/{}B fp4to6={}p/{}B fp6to4={}p/{}B",
                    t.v4_to_v6_packets,
                    t.v4_to_v6_bytes,
                    t.v6_to_v4_packets,
                    t.v6_to_v4_bytes,
                    f.v4_to_v6_packets,
                    f.v4_to_v6_bytes,
                    f.v6_to_v4_packets,
                    f.v6_to_v4_bytes
                ));
            }
        }
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" reason=\"{reason}\""));
        }
        if let Some(reason) = &self.fast_path_reason {
            line.push_str(&format!(" fastpath_reason=\"{reason}\""));
        }
        if let Some(exit) = &self.last_exit {
            line.push_str(&format!(" last_exit=\"{exit}\""));
        }
        line
    }
}

/// A request the control server hands to the daemon's event loop.
#[derive(Debug)]
pub enum ControlRequest {
    Status(oneshot::Sender<StatusReport>),
}

/// Listen on `path` (creating its directory, replacing a stale socket) and forward requests to
/// the daemon. Runs until the daemon drops the receiver.
pub async fn serve(path: &Path, tx: mpsc::Sender<ControlRequest>) -> Result<(), ControlError> {
    serve_listener(listen(path)?, tx).await
}

/// Answer requests on an already bound control socket (see [`listen`]).
pub async fn serve_listener(
    listener: UnixListener,
    tx: mpsc::Sender<ControlRequest>,
) -> Result<(), ControlError> {
    loop {
        let (stream, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, tx).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

/// Bind the control socket. Separate from [`serve`] so the daemon can fail early, before it
/// touches anything, when the socket cannot be created.
pub fn listen(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket left by a killed daemon: remove it only if nobody answers on it.
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another autoclat daemon is answering on it",
                )))
            }
            Err(_) => std::fs::remove_file(path).map_err(err)?,
        }
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Status is read-only and not secret: let unprivileged users ask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

async fn answer(stream: UnixStream, tx: mpsc::Sender<ControlRequest>) -> Result<(), ControlError> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    BufReader::new(rd).read_line(&mut line).await?;
    match line.trim() {
        "status" => {
            let (reply_tx, reply_rx) = oneshot::channel();
            tx.send(ControlRequest::Status(reply_tx))
                .await
                .map_err(|_| ControlError::Protocol("daemon is shutting down".into()))?;
            let report = reply_rx
                .await
                .map_err(|_| ControlError::Protocol("daemon is shutting down".into()))?;
            let mut out = serde_json::to_string(&report)
                .map_err(|e| ControlError::Protocol(e.to_string()))?;
            out.push('\n');
            wr.write_all(out.as_bytes()).await?;
        }
        other => {
            wr.write_all(format!("{{\"error\":\"unknown request {other:?}\"}}\n").as_bytes())
                .await?;
        }
    }
    wr.shutdown().await?;
    Ok(())
}

/// Ask a running daemon for its status (client side of `autoclat status`).
pub async fn request_status(path: &Path) -> Result<StatusReport, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|error| ControlError::Connect {
            path: path.to_path_buf(),
            error,
        })?;
    let (rd, mut wr) = stream.into_split();
    wr.write_all(b"status\n").await?;
    let mut line = String::new();
    BufReader::new(rd).read_line(&mut line).await?;
    serde_json::from_str(&line).map_err(|e| ControlError::Protocol(format!("{e}: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> UplinkStatus {
        UplinkStatus {
            uplink: "eth0".into(),
            ifindex: 2,
            state: UplinkState::Running,
            reason: None,
            prefix: Some("2001:db8:64::/96".into()),
            prefix_source: Some(PrefixSource::Dns64),
            v4: Some(Ipv4Addr::new(192, 0, 0, 4)),
            v6: Some("2001:db8:1::1234".parse().unwrap()),
            v4_iface: Some("v4-eth0".into()),
            v4_ifindex: Some(7),
            route_metric: Some(2048),
            pid: Some(4242),
            restarts: 0,
            repairs: 0,
            fast_path: true,
            fast_path_reason: None,
            last_exit: None,
            counters: ClatCounters::default(),
        }
    }

    #[test]
    fn human_line_starts_with_seed_dump_format() {
        let line = sample().human_line();
        assert!(
            line.starts_with(
                "iif[eth0] 2001:db8:64::/96 2001:db8:1::1234 -> 192.0.0.4 v4iif[v4-eth0] [running]"
            ),
            "{line}"
        );
        assert!(line.contains("pid=4242"));
        assert!(line.contains("source=dns64"));
    }

    #[test]
    fn json_field_names_are_the_contract() {
        let v = serde_json::to_value(StatusReport {
            uplinks: vec![sample()],
        })
        .unwrap();
        let u = &v["uplinks"][0];
        for key in [
            "uplink",
            "ifindex",
            "state",
            "reason",
            "prefix",
            "prefix_source",
            "v4",
            "v6",
            "v4_iface",
            "v4_ifindex",
            "pid",
            "restarts",
            "repairs",
            "fast_path",
            "counters",
        ] {
            assert!(u.get(key).is_some(), "missing {key}");
        }
        assert_eq!(u["state"], "running");
        assert_eq!(u["prefix_source"], "dns64");
        assert_eq!(u["counters"]["translator"]["v4_to_v6_packets"], 0);
    }

    #[tokio::test]
    async fn status_roundtrip_over_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/control.sock");
        let (tx, mut rx) = mpsc::channel(4);
        let p = path.clone();
        let server = tokio::spawn(async move { serve(&p, tx).await });
        let responder = tokio::spawn(async move {
            if let Some(ControlRequest::Status(reply)) = rx.recv().await {
                let _ = reply.send(StatusReport {
                    uplinks: vec![sample()],
                });
            }
        });
        let mut report = None;
        for _ in 0..100 {
            match request_status(&path).await {
                Ok(r) => {
                    report = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        assert_eq!(report.unwrap().uplinks, vec![sample()]);
        responder.await.unwrap();
        server.abort();
    }
}
