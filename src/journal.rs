//! Logging natively to journald (the `systemd.journal-fields(7)` native protocol), so that
//! `journalctl -u autoclat UPLINK=eth0` finds an uplink's messages.
//!
//! Each `tracing` event becomes one datagram to `/run/systemd/journal/socket` with
//! `PRIORITY=`, `SYSLOG_IDENTIFIER=`, `MESSAGE=` and one field per event field, its name
//! upper-cased (`uplink = %name` gives `UPLINK=eth0`, `pid` gives `PID=`). Unlike the
//! `tracing-journald` crate, `MESSAGE=` also carries the fields as ` key=value` after the text
//! (as the terminal format shows them), so plain `journalctl -u autoclat` stays readable
//! without `-o verbose`.
//!
//! [`journal_stream_is_stderr`] tells whether stderr is connected to the journal
//! (`$JOURNAL_STREAM`, as `systemd.exec(5)` documents).

use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// A `tracing` layer that sends every event to journald.
#[derive(Debug)]
pub struct JournalLayer {
    socket: UnixDatagram,
    identifier: String,
}

impl JournalLayer {
    /// Connect to the journal socket at `path` (normally [`JOURNAL_SOCKET`]). Fails when
    /// nobody listens there, so the caller can log to stderr instead.
    pub fn connect(path: &Path, identifier: &str) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self {
            socket,
            identifier: identifier.to_string(),
        })
    }
}

/// Whether `$JOURNAL_STREAM` (`DEVICE:INODE`) names the file stderr is: then the service's
/// output goes to the journal and native logging is better. Compares with `fstat(2)`.
pub fn journal_stream_is_stderr() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    parse_journal_stream(&value) == Some((st.st_dev, st.st_ino))
}

/// `DEVICE:INODE`, both decimal.
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// A field name as journald accepts it: upper case letters, digits and `_`, not starting
/// with `_` (those are trusted fields) or a digit, at most 64 characters.
pub fn journal_field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with(|c: char| c == '_' || c.is_ascii_digit()) {
        out.remove(0);
    }
    if out.is_empty() {
        out.push_str("FIELD");
    }
    out.truncate(64);
    out
}

/// Append one field in the native protocol: `NAME=value\n`, or for values with a newline
/// `NAME\n` + little-endian 64-bit length + value + `\n`.
pub fn put_field(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// syslog priority of a level.
fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    /// (field name as written in the code, value)
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

/// The datagram for one event (pure, for tests).
pub fn encode_event(identifier: &str, level: &Level, target: &str, event: &Event<'_>) -> Vec<u8> {
    let mut f = Fields::default();
    event.record(&mut f);
    let mut message = f.message;
    for (k, v) in &f.fields {
        let _ = write!(message, " {k}={v}");
    }
    let mut buf = Vec::with_capacity(256);
    put_field(&mut buf, "PRIORITY", priority(level));
    put_field(&mut buf, "SYSLOG_IDENTIFIER", identifier);
    put_field(&mut buf, "TARGET", target);
    put_field(&mut buf, "MESSAGE", &message);
    for (k, v) in &f.fields {
        let name = journal_field_name(k);
        // Ours above win; a field may not override them.
        if !matches!(
            name.as_str(),
            "PRIORITY" | "SYSLOG_IDENTIFIER" | "TARGET" | "MESSAGE"
        ) {
            put_field(&mut buf, &name, v);
        }
    }
    buf
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let buf = encode_event(&self.identifier, meta.level(), meta.target(), event);
        // Nowhere to report a failure to log; a lost line is better than a blocked daemon.
        let _ = self.socket.send(&buf);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Decode the native protocol back into (name, value) pairs, strictly.
    fn decode(mut b: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = b.iter().position(|&c| c == b'\n').unwrap();
            let line = &b[..nl];
            if let Some(eq) = line.iter().position(|&c| c == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                ));
                b = &b[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = &b[nl + 9..nl + 9 + len];
                assert_eq!(b[nl + 9 + len], b'\n');
                out.push((name, String::from_utf8(value.to_vec()).unwrap()));
                b = &b[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn field_names() {
        assert_eq!(journal_field_name("uplink"), "UPLINK");
        assert_eq!(journal_field_name("pid"), "PID");
        assert_eq!(journal_field_name("_secret"), "SECRET");
        assert_eq!(journal_field_name("1x-y.z"), "X_Y_Z");
        assert_eq!(journal_field_name("__"), "FIELD");
        assert_eq!(journal_field_name(&"a".repeat(80)).len(), 64);
    }

    #[test]
    fn journal_stream_values() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:x"), None);
        assert_eq!(parse_journal_stream("812345"), None);
    }

    #[test]
    fn events_arrive_with_structured_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journald = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::connect(&path, "autoclat").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let name = "eth0";
            tracing::warn!(uplink = %name, pid = 4242, "translator exited");
            tracing::info!(uplink = name, "two\nlines");
        });
        let mut buf = vec![0u8; 65536];
        let n = journald.recv(&mut buf).unwrap();
        let fields = decode(&buf[..n]);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "autoclat");
        assert_eq!(get("UPLINK"), "eth0");
        assert_eq!(get("PID"), "4242");
        assert_eq!(get("MESSAGE"), "translator exited uplink=eth0 pid=4242");
        let n = journald.recv(&mut buf).unwrap();
        let fields = decode(&buf[..n]);
        assert!(fields.contains(&("MESSAGE".into(), "two\nlines uplink=eth0".into())));
        assert!(fields.contains(&("PRIORITY".into(), "6".into())));
    }

    #[test]
    fn no_journal_is_an_error_so_the_caller_can_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JournalLayer::connect(&dir.path().join("none"), "autoclat").is_err());
    }
}
