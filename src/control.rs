//! The control socket: a Unix stream socket on which the daemon answers `status` requests.
//!
//! Protocol: the client writes one line (`status\n`); the daemon answers with one line of JSON
//! (a [`StatusReport`]) and closes the connection. Plain text keeps it usable with `socat`.
//!
//! The socket is world-writable (any local user may ask for `status`), so the server assumes
//! hostile clients:
//! - a request is one line of at most [`MAX_REQUEST`] bytes; a longer one gets an error line and
//!   the connection is closed after reading at most that many bytes (nothing more is buffered);
//! - a client has [`IO_TIMEOUT`] to send its line and again to take the answer;
//! - at most [`MAX_CLIENTS`] connections are served at once, of which [`ROOT_RESERVED`] only
//!   for root peers; the next ones get a refusal line at once and are closed, never queued;
//! - an accept error (`EMFILE`, `ENFILE`, `ENOBUFS`…) is logged and accept is retried after
//!   [`ACCEPT_PAUSE`]: the server only ends when the daemon drops its request channel;
//! - the connection tasks talk to the daemon's event loop only through the request channel,
//!   with a bounded wait ([`LOOP_WAIT`]) for a slot and for the answer;
//! - error answers never echo more than a few bytes of what the client sent.
//!
//! Access ([`may`]): requests that only read (`status`) are open to every local user; a request
//! that changes the daemon's state needs the peer to be uid 0 (read with `SO_PEERCRED`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::nat64::PrefixSource;

/// The longest request line the server reads, newline included.
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request, and again to read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more are refused.
pub const MAX_CLIENTS: usize = 32;
/// Of [`MAX_CLIENTS`], the slots only root peers may take, so that a local user holding every
/// other slot cannot lock the administrator out.
pub const ROOT_RESERVED: usize = 4;
/// The pause after a failed accept before the next one.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long a connection waits for the event loop (a queue slot, then the answer).
pub const LOOP_WAIT: Duration = Duration::from_secs(5);
/// How much of a bad request an error answer quotes.
const QUOTE_MAX: usize = 32;

/// Errors of the control socket, on either side.
///
/// The variants that carry an OS error print it in their own message and do not expose it as
/// a `source`: `anyhow`'s `{:#}` would print it a second time.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created.
    #[error("cannot listen on control socket {path}: {error}")]
    Listen {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Something that is not a socket is in the way; it is left alone.
    #[error(
        "cannot listen on control socket {path}: it exists and is {what}, not a socket; \
         not removing it (set daemon.control_socket to another path, or remove it yourself)"
    )]
    NotASocket { path: PathBuf, what: &'static str },
    /// The daemon is not reachable.
    #[error(
        "cannot reach the autoclat daemon at {path}: {error}; start it with `autoclat run` \
         (or `systemctl start autoclat`), or name its socket with `--socket PATH`"
    )]
    Connect {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("control socket I/O: {0}")]
    Io(std::io::Error),
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
    /// Router mode (`[router]`); absent when it is not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterStatus>,
}

/// Router mode in `status`: what is forwarded through the CLATs, and how much.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterStatus {
    /// `nat44`: downstream hosts are masqueraded to the CLAT's IPv4 address.
    pub mode: String,
    /// The downstream interfaces present (those the `[router] downstream` globs match).
    pub downstream: Vec<String>,
    /// Interfaces on which autoclat keeps IPv4 forwarding on.
    pub forwarding: Vec<String>,
    /// autoclat's nftables table (`ip autoclat`) is in place.
    pub table: bool,
    /// Forwarded traffic per CLAT tun, from the table's counters.
    pub forwarded: Vec<RouterCounters>,
    /// Pieces put back after a third party removed or changed them.
    pub repairs: u64,
    /// The last failure to put the pieces in place, if the last attempt failed.
    pub error: Option<String>,
}

/// Forwarded traffic through one CLAT: out = downstream to the tun, in = back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterCounters {
    pub tun: String,
    pub out_packets: u64,
    pub out_bytes: u64,
    pub in_packets: u64,
    pub in_bytes: u64,
}

impl RouterStatus {
    /// The human form, one line.
    pub fn human_line(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        let mut line = format!(
            "router [{}] downstream[{}] forwarding[{}] table[{}] repairs {}",
            self.mode,
            list(&self.downstream),
            list(&self.forwarding),
            if self.table { "ok" } else { "none" },
            self.repairs
        );
        for c in &self.forwarded {
            line.push_str(&format!(
                "\n  forwarded via {}: out {} pkts {} bytes, in {} pkts {} bytes",
                c.tun, c.out_packets, c.out_bytes, c.in_packets, c.in_bytes
            ));
        }
        if let Some(e) = &self.error {
            line.push_str(&format!("\n  error: {e}"));
        }
        line
    }
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

impl From<std::io::Error> for ControlError {
    fn from(e: std::io::Error) -> Self {
        ControlError::Io(e)
    }
}

/// A request the control server hands to the daemon's event loop.
#[derive(Debug)]
pub enum ControlRequest {
    Status(oneshot::Sender<StatusReport>),
}

/// A request as read from a client's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `status`: the state of every uplink (read-only).
    Status,
}

impl Request {
    /// Whether carrying the request out changes the daemon's state (none does yet).
    pub fn changes_state(self) -> bool {
        match self {
            Request::Status => false,
        }
    }
}

/// Why a request line is refused. The messages quote at most a few bytes of the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// More than [`MAX_REQUEST`] bytes without a newline.
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// The line is not UTF-8.
    #[error("request is not UTF-8")]
    NotUtf8,
    /// Nothing but white space.
    #[error("empty request")]
    Empty,
    /// A word the daemon does not know (quoted, cut to a few characters).
    #[error("unknown request {0}")]
    Unknown(String),
    /// The client sent no complete line in time.
    #[error("no request within {} s", IO_TIMEOUT.as_secs())]
    Timeout,
    /// The peer may not make this request.
    #[error("permission denied: this request needs root")]
    Denied,
    /// Already [`MAX_CLIENTS`] connections.
    #[error("busy: too many control connections, try again")]
    Busy,
    /// The event loop did not take or answer the request in time, or is stopping.
    #[error("the daemon did not answer: {0}")]
    Daemon(&'static str),
}

/// Parse one request line (with or without its newline). Pure.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    match text.trim() {
        "" => Err(RequestError::Empty),
        "status" => Ok(Request::Status),
        other => Err(RequestError::Unknown(quote(other))),
    }
}

/// `s` cut to [`QUOTE_MAX`] characters, anything but printable ASCII shown as `?`, quoted:
/// an error answer stays short and never carries control characters.
fn quote(s: &str) -> String {
    let cut: String = s
        .chars()
        .take(QUOTE_MAX)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().nth(QUOTE_MAX).is_some() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The access rule: a read-only request is open to every local user (the socket is mode 0666);
/// one that changes state needs the peer to be root. An unknown peer (`SO_PEERCRED` failed) is
/// treated as unprivileged.
pub fn may(request: Request, peer_uid: Option<u32>) -> bool {
    access_allowed(request.changes_state(), peer_uid)
}

/// [`may`] on the request's one property that matters.
fn access_allowed(changes_state: bool, peer_uid: Option<u32>) -> bool {
    !changes_state || peer_uid == Some(0)
}

/// The one-line JSON error answer.
pub fn error_line(e: &RequestError) -> String {
    let mut s = serde_json::json!({ "error": e.to_string() }).to_string();
    s.push('\n');
    s
}

/// Accept errors since the process started (each one is followed by [`ACCEPT_PAUSE`]).
static ACCEPT_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many accepts on the control socket have failed since the process started.
pub fn accept_errors() -> u64 {
    ACCEPT_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Listen on `path` (creating its directory, replacing a stale socket) and forward requests to
/// the daemon. Runs until the daemon drops the receiver.
pub async fn serve(path: &Path, tx: mpsc::Sender<ControlRequest>) -> Result<(), ControlError> {
    serve_listener(listen(path)?, tx).await
}

/// Answer requests on an already bound control socket (see [`listen`]). Returns once the daemon
/// has dropped the receiving end of `tx`; accept errors never end it.
pub async fn serve_listener(
    listener: UnixListener,
    tx: mpsc::Sender<ControlRequest>,
) -> Result<(), ControlError> {
    serve_with(listener, tx, Limits::default()).await
}

/// The server's bounds (the constants above; tests shorten or lengthen the timeout).
#[derive(Debug, Clone, Copy)]
struct Limits {
    io_timeout: Duration,
    /// Slots for any peer.
    shared: usize,
    /// Further slots for root peers only.
    reserved: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            io_timeout: IO_TIMEOUT,
            shared: MAX_CLIENTS - ROOT_RESERVED,
            reserved: ROOT_RESERVED,
        }
    }
}

async fn serve_with(
    listener: UnixListener,
    tx: mpsc::Sender<ControlRequest>,
    limits: Limits,
) -> Result<(), ControlError> {
    let shared = Arc::new(Semaphore::new(limits.shared));
    let reserved = Arc::new(Semaphore::new(limits.reserved));
    let mut failing: u64 = 0;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = tx.closed() => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if failing > 0 {
                    tracing::info!("control socket: accept works again after {failing} failures");
                    failing = 0;
                }
                stream
            }
            Err(e) => {
                ACCEPT_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if failing == 0 {
                    tracing::warn!(
                        "control socket: accept failed: {e}; retrying every {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                }
                failing += 1;
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        // SO_PEERCRED: who connected (a getsockopt, it never blocks).
        let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
        let permit = Arc::clone(&shared).try_acquire_owned().ok().or_else(|| {
            (peer_uid == Some(0))
                .then(|| Arc::clone(&reserved).try_acquire_owned().ok())
                .flatten()
        });
        match permit {
            Some(permit) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, peer_uid, tx, limits.io_timeout).await {
                        tracing::debug!("control connection: {e}");
                    }
                    drop(permit);
                });
            }
            None => {
                // Never wait for this client: one non-blocking write, then close.
                let _ = stream.try_write(error_line(&RequestError::Busy).as_bytes());
            }
        }
    }
}

/// What is at a path, for [`ControlError::NotASocket`].
fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "something else"
    }
}

/// Bind the control socket. Separate from [`serve`] so the daemon can fail early, before it
/// touches anything, when the socket cannot be created. Only a stale *socket* at `path` is
/// removed; anything else there is an error and left untouched.
pub fn listen(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::FileTypeExt;
    let err = |error| ControlError::Listen {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ControlError::NotASocket {
                path: path.to_path_buf(),
                what: file_kind(meta.file_type()),
            })
        }
        // A socket left by a killed daemon: remove it only if nobody answers on it.
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another autoclat daemon is answering on it",
                )))
            }
            Err(_) => std::fs::remove_file(path).map_err(err)?,
        },
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Status is read-only and not secret: let unprivileged users ask (see `may`).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// Read one request line: at most [`MAX_REQUEST`] + 1 bytes are ever read.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(rd: R) -> Result<Request, RequestError> {
    let mut reader = BufReader::with_capacity(512, rd.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::with_capacity(64);
    if let Err(e) = reader.read_until(b'\n', &mut line).await {
        tracing::debug!("control connection: read: {e}");
        return Err(RequestError::Empty);
    }
    parse_request(&line)
}

async fn answer(
    stream: UnixStream,
    peer_uid: Option<u32>,
    tx: mpsc::Sender<ControlRequest>,
    io_timeout: Duration,
) -> Result<(), ControlError> {
    let (rd, mut wr) = stream.into_split();
    let request = match tokio::time::timeout(io_timeout, read_request(rd)).await {
        Ok(r) => r,
        Err(_) => Err(RequestError::Timeout),
    };
    let line = match request {
        Ok(req) if !may(req, peer_uid) => error_line(&RequestError::Denied),
        Ok(Request::Status) => match ask_loop(&tx).await {
            Ok(report) => {
                let mut out = serde_json::to_string(&report)
                    .map_err(|e| ControlError::Protocol(e.to_string()))?;
                out.push('\n');
                out
            }
            Err(e) => error_line(&e),
        },
        Err(e) => error_line(&e),
    };
    let write = async {
        wr.write_all(line.as_bytes()).await?;
        wr.shutdown().await
    };
    match tokio::time::timeout(io_timeout, write).await {
        Ok(r) => r.map_err(ControlError::Io),
        Err(_) => Err(ControlError::Protocol(
            "the client did not take the answer".into(),
        )),
    }
}

/// Hand a status request to the event loop, waiting at most [`LOOP_WAIT`] for each step.
async fn ask_loop(tx: &mpsc::Sender<ControlRequest>) -> Result<StatusReport, RequestError> {
    let (reply_tx, reply_rx) = oneshot::channel();
    tx.send_timeout(ControlRequest::Status(reply_tx), LOOP_WAIT)
        .await
        .map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(_) => RequestError::Daemon("busy"),
            mpsc::error::SendTimeoutError::Closed(_) => RequestError::Daemon("stopping"),
        })?;
    match tokio::time::timeout(LOOP_WAIT, reply_rx).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(_)) => Err(RequestError::Daemon("stopping")),
        Err(_) => Err(RequestError::Daemon("busy")),
    }
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
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&line) {
        if let Some(serde_json::Value::String(e)) = o.get("error") {
            return Err(ControlError::Protocol(e.clone()));
        }
    }
    serde_json::from_str(&line).map_err(|e| ControlError::Protocol(format!("{e}: {line:?}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};

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
            ..StatusReport::default()
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
                    ..StatusReport::default()
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

    #[test]
    fn request_lines_parse() {
        assert_eq!(parse_request(b"status\n"), Ok(Request::Status));
        assert_eq!(parse_request(b"status"), Ok(Request::Status));
        assert_eq!(parse_request(b"  status \r\n"), Ok(Request::Status));
        assert_eq!(parse_request(b"\n"), Err(RequestError::Empty));
        assert_eq!(parse_request(b"stat\xffus\n"), Err(RequestError::NotUtf8));
        assert_eq!(
            parse_request(&[b'x'; MAX_REQUEST + 1]),
            Err(RequestError::TooLong)
        );
        let mut longest = vec![b' '; MAX_REQUEST - 7];
        longest.extend_from_slice(b"status\n");
        assert_eq!(longest.len(), MAX_REQUEST);
        assert_eq!(parse_request(&longest), Ok(Request::Status));
    }

    #[test]
    fn an_unknown_request_is_quoted_short() {
        let long = format!("reload {}", "\u{1b}[31m".repeat(500));
        let Err(e) = parse_request(long.as_bytes()) else {
            panic!("accepted");
        };
        let msg = error_line(&e);
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("unknown request"), "{msg}");
        assert!(!msg.contains('\u{1b}'), "raw escape echoed: {msg}");
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert!(v["error"].is_string());
    }

    #[test]
    fn only_root_may_change_state() {
        assert!(may(Request::Status, Some(1000)));
        assert!(may(Request::Status, None));
        assert!(may(Request::Status, Some(0)));
        assert!(!Request::Status.changes_state());
        assert!(access_allowed(true, Some(0)));
        assert!(!access_allowed(true, Some(1000)));
        assert!(!access_allowed(true, Some(65534)));
        assert!(!access_allowed(true, None));
    }

    /// A server on a fresh socket with a responder answering every status request.
    fn start(limits: Limits) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = listen(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(ControlRequest::Status(reply)) = rx.recv().await {
                let _ = reply.send(StatusReport {
                    uplinks: vec![sample()],
                    ..StatusReport::default()
                });
            }
        });
        tokio::spawn(serve_with(listener, tx, limits));
        (dir, path)
    }

    /// Everything the server sends until it closes (a reset after its data counts as the end).
    async fn read_all(rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn an_oversized_line_is_cut_off_and_the_server_goes_on() {
        let (_dir, path) = start(Limits::default());
        let (mut rd, mut wr) = UnixStream::connect(&path).await.unwrap().into_split();
        const TOTAL: usize = 10 << 20;
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < TOTAL {
                if wr.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        let answer = read_all(&mut rd).await;
        assert!(answer.contains("longer than 4096 bytes"), "{answer:?}");
        assert!(!answer.contains("xxxx"), "request echoed: {answer:?}");
        // The server closed the connection instead of reading on: the 10 MB never all went.
        let sent = writer.await.unwrap();
        assert!(sent < TOTAL, "the server swallowed all {sent} bytes");
        let report = request_status(&path).await.unwrap();
        assert_eq!(report.uplinks, vec![sample()]);
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_at_the_timeout() {
        let (_dir, path) = start(Limits {
            io_timeout: Duration::from_millis(200),
            ..Limits::default()
        });
        let (mut rd, _wr) = UnixStream::connect(&path).await.unwrap().into_split();
        let answer = read_all(&mut rd).await;
        assert!(answer.contains("no request within"), "{answer:?}");
        assert_eq!(request_status(&path).await.unwrap().uplinks, vec![sample()]);
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused_at_once() {
        // Long timeout: the idle connections keep their slots for the whole test.
        let (_dir, path) = start(Limits {
            io_timeout: Duration::from_secs(600),
            shared: 3,
            reserved: 2,
        });
        // We are root here: the shared slots, then the reserved ones.
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        for _ in 0..3 {
            let mut s = UnixStream::connect(&path).await.unwrap();
            let answer = read_all(&mut s).await;
            assert!(
                answer.contains("too many control connections"),
                "{answer:?}"
            );
        }
        // A slot freed is a slot for the next client.
        drop(idle.pop());
        let mut got = None;
        // The server learns of the close asynchronously: ask until the slot is back.
        for _ in 0..500 {
            match request_status(&path).await {
                Ok(r) => {
                    got = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        assert_eq!(got.unwrap().uplinks, vec![sample()]);
    }

    /// Re-runs one ignored test of this binary in a child process.
    fn child(test: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ]);
        cmd
    }

    fn wait_for(out: &mut impl BufRead, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
            // libtest prints "test NAME ... " without a newline before the test's own output.
            if let Some(i) = line.find(prefix) {
                return line[i..].trim().to_string();
            }
        }
    }

    #[tokio::test]
    async fn a_user_holding_every_shared_slot_does_not_lock_root_out() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root to run a client as nobody");
            return;
        }
        let (dir, path) = start(Limits {
            io_timeout: Duration::from_secs(600),
            shared: 4,
            reserved: 2,
        });
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        use std::os::unix::process::CommandExt;
        let mut kid = child("control::tests::child_idle_connections")
            .env("AUTOCLAT_TEST_CONTROL", &path)
            .env("AUTOCLAT_TEST_CONNECTIONS", "10")
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(kid.stdout.take().unwrap());
        let mut stdin = kid.stdin.take().unwrap();
        let (out, _) = tokio::task::spawn_blocking(move || {
            let l = wait_for(&mut out, "connected");
            (out, l)
        })
        .await
        .unwrap();
        // Every shared slot is held by nobody's idle connections: root still gets an answer.
        let report = request_status(&path).await.unwrap();
        assert_eq!(report.uplinks, vec![sample()]);
        // Our request was accepted after all of the child's: their fate is decided.
        writeln!(stdin, "go").unwrap();
        drop(stdin);
        let (counts, status) = tokio::task::spawn_blocking(move || {
            let mut out = out;
            let counts = wait_for(&mut out, "busy=");
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut rest);
            (counts, kid.wait().unwrap())
        })
        .await
        .unwrap();
        assert_eq!(counts, "busy=6 held=4");
        assert!(status.success());
    }

    /// Run as nobody by the test above: hold idle connections, then count the refused ones.
    #[test]
    #[ignore = "a child of a_user_holding_every_shared_slot_does_not_lock_root_out"]
    fn child_idle_connections() {
        let path = std::env::var("AUTOCLAT_TEST_CONTROL").unwrap();
        let n: usize = std::env::var("AUTOCLAT_TEST_CONNECTIONS")
            .unwrap()
            .parse()
            .unwrap();
        let conns: Vec<_> = (0..n)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        println!("connected");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        let (mut busy, mut held) = (0, 0);
        for mut c in conns {
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            match std::io::Read::read(&mut c, &mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("too many") => busy += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        println!("busy={busy} held={held}");
    }

    #[test]
    fn accept_survives_emfile() {
        let out = child("control::tests::child_accept_under_emfile")
            .env("AUTOCLAT_TEST_EMFILE", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("emfile-ok"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run by the test above in its own process (it lowers the descriptor limit): a real EMFILE
    /// on accept, then the server answers once descriptors are free again.
    #[test]
    #[ignore = "a child of accept_survives_emfile"]
    fn child_accept_under_emfile() {
        assert!(std::env::var("AUTOCLAT_TEST_EMFILE").is_ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("control.sock");
            let listener = listen(&path).unwrap();
            // Waiting in the backlog while the descriptor table fills up.
            let mut early = UnixStream::connect(&path).await.unwrap();
            early.write_all(b"status\n").await.unwrap();
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            // SAFETY: `lim` is a live rlimit; this child process is ours to limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
            let mut hog = Vec::new();
            loop {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => hog.push(f),
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let (tx, mut rx) = mpsc::channel(4);
            tokio::spawn(async move {
                while let Some(ControlRequest::Status(reply)) = rx.recv().await {
                    let _ = reply.send(StatusReport::default());
                }
            });
            let server = tokio::spawn(serve_listener(listener, tx));
            for _ in 0..1000 {
                if accept_errors() >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(accept_errors() >= 2, "accept never failed");
            assert!(!server.is_finished(), "the accept loop returned");
            drop(hog);
            let answer = read_all(&mut early).await;
            let report: StatusReport = serde_json::from_str(answer.trim()).unwrap();
            assert_eq!(report, StatusReport::default());
            request_status(&path).await.unwrap();
            println!("emfile-ok errors={}", accept_errors());
        });
    }

    #[test]
    fn listen_never_removes_what_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("precious.txt");
        std::fs::write(&file, b"keep me").unwrap();
        let err = listen(&file).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("precious.txt") && msg.contains("a regular file"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

        let sub = dir.path().join("a-directory");
        std::fs::create_dir(&sub).unwrap();
        assert!(listen(&sub)
            .unwrap_err()
            .to_string()
            .contains("a directory"));
        assert!(sub.is_dir());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(listen(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    }

    #[tokio::test]
    async fn listen_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = listen(&path).unwrap();
        let err = listen(&path).unwrap_err();
        assert!(err.to_string().contains("another autoclat daemon"), "{err}");
        drop(live);
    }

    #[tokio::test]
    async fn a_missing_daemon_is_reported_once_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.sock");
        let err = request_status(&path).await.unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains(&path.display().to_string()), "{chain}");
        assert_eq!(
            chain.matches("No such file or directory").count(),
            1,
            "{chain}"
        );
        assert!(chain.contains("autoclat run"), "{chain}");
    }
}
