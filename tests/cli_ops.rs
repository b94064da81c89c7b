//! The `autoclat` binary as an operator meets it, without privileges: logs without colour
//! escapes when stderr is not a terminal, the journald fallback, `status` errors said once,
//! and `generate-assets` (man pages and completions for the package).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn autoclat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoclat"));
    c.stdin(Stdio::null()).env_remove("JOURNAL_STREAM");
    c
}

/// A configuration whose control socket cannot be created (its directory would be inside a
/// regular file): `run` logs its first line, then fails before it touches anything.
fn failing_config(dir: &Path, log_format: &str) -> std::path::PathBuf {
    let blocker = dir.join("file");
    std::fs::write(&blocker, "").unwrap();
    let cfg = dir.join("autoclat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\ncontrol_socket = \"{}/sub/control.sock\"\nlog_format = \"{log_format}\"\n",
            blocker.display()
        ),
    )
    .unwrap();
    cfg
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn logs_have_no_escape_sequences_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = failing_config(dir.path(), "text");
    let o = autoclat()
        .args(["run", "--dry-run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // The log line was written (so the check below looks at real log output)...
    assert!(
        err.contains("INFO") && err.contains("configuration:"),
        "{err}"
    );
    assert!(err.contains("cannot listen on control socket"), "{err}");
    // ...without a single escape sequence.
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn json_logs_are_unchanged_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = failing_config(dir.path(), "json");
    let o = autoclat()
        .args(["run", "--dry-run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = stderr(&o);
    let first = err.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(v["level"], "INFO", "{first}");
    assert!(v["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("configuration:"));
    assert!(!err.contains('\x1b'), "{err:?}");
}

/// `JOURNAL_STREAM` naming stderr selects journald; where no journald listens (this test's
/// machine, unless it runs systemd) the daemon says so once and logs to stderr.
#[test]
fn journal_stream_without_journald_falls_back_to_stderr() {
    if Path::new(autoclat::journal::JOURNAL_SOCKET).exists() {
        eprintln!("skipped: a journald listens here, the fallback cannot be seen");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = failing_config(dir.path(), "text");
    let log = dir.path().join("stderr");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let o = autoclat()
        .args(["run", "--dry-run", "--config"])
        .arg(&cfg)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(Stdio::from(file))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(err.matches("cannot log to journald").count(), 1, "{err}");
    assert!(err.contains("configuration:"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn status_without_a_daemon_names_the_socket_and_the_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    for extra in [&[][..], &["--json"][..], &["--prometheus"][..]] {
        let o = autoclat()
            .arg("status")
            .args(extra)
            .arg("--socket")
            .arg(&sock)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches(sock.to_str().unwrap()).count(), 1, "{err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
        assert!(err.contains("start it with `autoclat run`"), "{err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn status_json_and_prometheus_exclude_each_other() {
    let o = autoclat()
        .args(["status", "--json", "--prometheus"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn generate_assets_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let o = autoclat()
        .arg("generate-assets")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    let man = read("man/autoclat.8");
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH autoclat 8"),
        "{man}"
    );
    assert!(man.contains(".TH autoclat 8"), "{man}");
    for sub in ["run", "status", "check-config", "discover"] {
        let page = read(&format!("man/autoclat-{sub}.8"));
        assert!(page.contains(&format!(".TH autoclat-{sub} 8")), "{page}");
    }
    assert!(read("man/autoclat-status.8").contains("prometheus"));
    // The hidden generator has no page of its own.
    assert!(!dir.path().join("man/autoclat-generate-assets.8").exists());
    let clatd = read("man/clatd.8");
    assert!(clatd.contains(".TH clatd 8"), "{clatd}");
    for flag in [
        "\\-i", "\\-p", "\\-4", "\\-6", "\\-t", "\\-r", "\\-w", "\\-g",
    ] {
        assert!(clatd.contains(flag), "{flag} missing from clatd.8");
    }
    assert!(read("completions/autoclat").contains("_autoclat()"));
    assert!(read("completions/_autoclat").starts_with("#compdef autoclat"));
    assert!(read("completions/autoclat.fish").contains("complete -c autoclat"));
}
