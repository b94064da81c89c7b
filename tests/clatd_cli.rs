//! The `clatd` binary's exit codes and one-line messages, without privileges.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

fn clatd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clatd"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_tun(fd: &str) -> Vec<String> {
    [
        "-i",
        "lo",
        "-p",
        "64:ff9b::",
        "-4",
        "192.0.0.4",
        "-6",
        "2001:db8:1::c1a7",
        "-t",
        fd,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        vec!["-i", "eth0"],
        vec!["-z"],
        vec![
            "-i",
            "eth0",
            "-p",
            "2001:db8::/33",
            "-4",
            "192.0.0.4",
            "-6",
            "2001:db8:1::1",
            "-t",
            "3",
        ],
        vec![
            "-i",
            "eth0",
            "-p",
            "64:ff9b::",
            "-4",
            "192.0.0.4",
            "-6",
            "64:ff9b::1",
            "-t",
            "3",
        ],
    ] {
        let (code, err) = clatd(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("clatd: "), "{err}");
    }
}

#[test]
fn prefix_error_names_the_problem() {
    let (code, err) = clatd(&[
        "-i",
        "eth0",
        "-p",
        "2001:db8::/33",
        "-4",
        "192.0.0.4",
        "-6",
        "2001:db8:1::1",
        "-t",
        "3",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("/33"), "{err}");
}

#[test]
fn unopened_tun_descriptor_exits_1() {
    let args = with_tun("99");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = clatd(&args);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("-t 99: not an open"), "{err}");
}

#[test]
fn non_tun_descriptor_exits_1() {
    // fd 0 is /dev/null: a character device, but not a tun.
    let args = with_tun("0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = clatd(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("-t 0: not a tun descriptor"), "{err}");
    // fd 1 is a pipe: not even a character device.
    let args = with_tun("1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = clatd(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("-t 1: not a tun descriptor"), "{err}");
}

#[test]
fn help_exits_0() {
    let (code, _) = clatd(&["-h"]);
    assert_eq!(code, 0);
}
