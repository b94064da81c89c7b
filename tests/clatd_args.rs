//! `clatd`'s command line: Android-compatible flags, prefix forms, validation.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use autoclat::translator::{ArgsError, ClatdArgs};
use clap::Parser;

fn parse(args: &[&str]) -> Result<ClatdArgs, clap::Error> {
    ClatdArgs::try_parse_from(std::iter::once("clatd").chain(args.iter().copied()))
}

const BASE: [&str; 10] = [
    "-i",
    "eth0",
    "-p",
    "64:ff9b::",
    "-4",
    "192.0.0.4",
    "-6",
    "2001:db8:1::c1a7",
    "-t",
    "7",
];

#[test]
fn android_flags_parse() {
    let a = parse(&[
        "-i",
        "wlan0",
        "-p",
        "64:ff9b::",
        "-4",
        "192.0.0.4",
        "-6",
        "2001:db8:1::c1a7",
        "-t",
        "12",
        "-m",
        "0xdead",
        "-n",
        "100",
    ])
    .unwrap();
    assert_eq!(a.uplink, "wlan0");
    assert_eq!(a.prefix.to_string(), "64:ff9b::/96");
    assert_eq!(a.v4, Ipv4Addr::new(192, 0, 0, 4));
    assert_eq!(a.v6, "2001:db8:1::c1a7".parse::<Ipv6Addr>().unwrap());
    assert_eq!(a.tun_fd, 12);
    assert_eq!(a.fwmark, Some(0xdead));
    assert_eq!(a.netid, Some(100));
    assert_eq!(a.rx_fd, None);
    assert_eq!(a.tx_fd, None);
    a.validate().unwrap();
}

#[test]
fn inherited_sockets_and_decimal_mark() {
    let mut v = BASE.to_vec();
    v.extend(["-r", "8", "-w", "9", "-m", "4096"]);
    let a = parse(&v).unwrap();
    assert_eq!((a.rx_fd, a.tx_fd, a.fwmark), (Some(8), Some(9), Some(4096)));
    a.validate().unwrap();
}

#[test]
fn prefix_with_length() {
    let mut v = BASE.to_vec();
    v[3] = "2001:db8:100::/40";
    let a = parse(&v).unwrap();
    assert_eq!(a.prefix.len(), 40);
    assert_eq!(a.prefix.to_string(), "2001:db8:100::/40");
}

#[test]
fn bad_prefixes_are_usage_errors() {
    for p in [
        "2001:db8::/33",
        "2001:db8::1/96",
        "not-a-prefix",
        "192.0.2.0/24",
    ] {
        let mut v = BASE.to_vec();
        v[3] = p;
        let e = parse(&v).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{p}");
    }
}

#[test]
fn missing_and_malformed_flags_are_usage_errors() {
    // Each required flag left out in turn.
    for skip in [0, 2, 4, 6, 8] {
        let v: Vec<&str> = BASE
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip && *i != skip + 1)
            .map(|(_, s)| *s)
            .collect();
        assert!(parse(&v).is_err(), "without {}", BASE[skip]);
    }
    for (i, bad) in [(5, "192.0.0.400"), (7, "2001:db8::g"), (9, "-1"), (9, "x")] {
        let mut v = BASE.to_vec();
        v[i] = bad;
        assert!(parse(&v).is_err(), "{bad}");
    }
    let mut v = BASE.to_vec();
    v.extend(["-m", "0x1_0000_0000"]);
    assert!(parse(&v).is_err());
    let mut v = BASE.to_vec();
    v.push("-z");
    assert!(parse(&v).is_err());
}

#[test]
fn validation() {
    let ok = parse(&BASE).unwrap();
    ok.validate().unwrap();

    let mut a = ok.clone();
    a.uplink = "averyveryverylongname".into();
    assert!(matches!(a.validate(), Err(ArgsError::Uplink(_))));
    let mut a = ok.clone();
    a.uplink = "eth/0".into();
    assert!(matches!(a.validate(), Err(ArgsError::Uplink(_))));

    let mut a = ok.clone();
    a.v4 = Ipv4Addr::UNSPECIFIED;
    assert!(matches!(a.validate(), Err(ArgsError::V4(_))));
    let mut a = ok.clone();
    a.v6 = "ff02::1".parse().unwrap();
    assert!(matches!(a.validate(), Err(ArgsError::V6(_))));
    let mut a = ok.clone();
    a.v6 = "64:ff9b::c000:204".parse().unwrap();
    assert!(matches!(a.validate(), Err(ArgsError::V6InPrefix(..))));

    let mut a = ok.clone();
    a.rx_fd = Some(7);
    assert_eq!(a.validate(), Err(ArgsError::SameFd('t', 'r', 7)));
    let mut a = ok.clone();
    a.rx_fd = Some(8);
    a.tx_fd = Some(8);
    assert_eq!(a.validate(), Err(ArgsError::SameFd('r', 'w', 8)));
    let mut a = ok.clone();
    a.stats_fd = Some(7);
    assert_eq!(a.validate(), Err(ArgsError::SameFd('t', 'c', 7)));
    let mut a = ok;
    a.stats_fd = Some(9);
    assert_eq!(a.validate(), Ok(()));
}
