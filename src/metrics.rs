//! `autoclat status --prometheus`: a [`StatusReport`] in the Prometheus text exposition format
//! (version 0.0.4), for node_exporter's textfile collector or a scrape wrapper. Pure.
//!
//! Families (each with `# HELP` and `# TYPE`, samples grouped under them):
//! - `autoclat_uplink_state{uplink,state}` gauge: 1 for the current state, 0 for the others;
//! - `autoclat_fast_path_attached{uplink}` gauge, for uplinks with a CLAT;
//! - `autoclat_translated_packets_total`, `autoclat_translated_bytes_total`
//!   `{uplink,path="translator"|"fast_path",direction="4to6"|"6to4"}` counters, for uplinks
//!   with a CLAT (they start from zero again when a CLAT is restarted, which Prometheus reads
//!   as a counter reset);
//! - `autoclat_restarts_total{uplink}`, `autoclat_repairs_total{uplink}` counters, for uplinks
//!   that are not disabled;
//! - `autoclat_prefix_info{uplink,prefix,source}` gauge, 1, for uplinks with a known prefix;
//! - `autoclat_translator_dropped_packets_total{uplink,reason}` counter, only for CLATs whose
//!   translator shares its counters (nothing is made up for the others).

use std::fmt::Write as _;

use crate::control::{StatusReport, UplinkState, UplinkStatus};

/// The `Content-Type` of [`render`]'s output, for a scrape wrapper serving it over HTTP.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const STATES: [(UplinkState, &str); 4] = [
    (UplinkState::Running, "running"),
    (UplinkState::Waiting, "waiting"),
    (UplinkState::Backoff, "backoff"),
    (UplinkState::Disabled, "disabled"),
];

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn has_clat(u: &UplinkStatus) -> bool {
    u.v4_iface.is_some()
}

/// The whole report in the text exposition format.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let ups = &report.uplinks;

    let mut f = family(
        &mut out,
        "autoclat_uplink_state",
        "gauge",
        "State of each interface the daemon knows: 1 for the current state, 0 for the others.",
    );
    for u in ups {
        for (state, name) in STATES {
            f.sample(
                &[("uplink", &u.uplink), ("state", name)],
                u64::from(u.state == state),
            );
        }
    }

    let mut f = family(
        &mut out,
        "autoclat_fast_path_attached",
        "gauge",
        "Whether the eBPF fast path is attached to the uplink's CLAT.",
    );
    for u in ups.iter().filter(|u| has_clat(u)) {
        f.sample(&[("uplink", &u.uplink)], u64::from(u.fast_path));
    }

    type Pick = fn(&crate::control::DirCounters) -> (u64, u64);
    let per_path: [(&str, &str, Pick); 2] = [
        (
            "autoclat_translated_packets_total",
            "Packets translated by the uplink's CLAT, by path and direction.",
            |d| (d.v4_to_v6_packets, d.v6_to_v4_packets),
        ),
        (
            "autoclat_translated_bytes_total",
            "Bytes translated by the uplink's CLAT, by path and direction.",
            |d| (d.v4_to_v6_bytes, d.v6_to_v4_bytes),
        ),
    ];
    for (name, help, pick) in per_path {
        let mut f = family(&mut out, name, "counter", help);
        for u in ups.iter().filter(|u| has_clat(u)) {
            for (path, dir) in [
                ("translator", &u.counters.translator),
                ("fast_path", &u.counters.fast_path),
            ] {
                let (to6, to4) = pick(dir);
                f.sample(
                    &[("uplink", &u.uplink), ("path", path), ("direction", "4to6")],
                    to6,
                );
                f.sample(
                    &[("uplink", &u.uplink), ("path", path), ("direction", "6to4")],
                    to4,
                );
            }
        }
    }

    let candidates = || ups.iter().filter(|u| u.state != UplinkState::Disabled);
    let mut f = family(
        &mut out,
        "autoclat_restarts_total",
        "counter",
        "Times the uplink's translator was restarted after it exited.",
    );
    for u in candidates() {
        f.sample(&[("uplink", &u.uplink)], u64::from(u.restarts));
    }
    let mut f = family(
        &mut out,
        "autoclat_repairs_total",
        "counter",
        "Times a piece of the uplink's running CLAT was repaired without a restart.",
    );
    for u in candidates() {
        f.sample(&[("uplink", &u.uplink)], u64::from(u.repairs));
    }

    let mut f = family(
        &mut out,
        "autoclat_prefix_info",
        "gauge",
        "The uplink's NAT64 prefix and where it came from (static, pref64, dns64).",
    );
    for u in ups {
        if let (Some(prefix), Some(source)) = (&u.prefix, u.prefix_source) {
            let source = source.to_string();
            f.sample(
                &[
                    ("uplink", &u.uplink),
                    ("prefix", prefix),
                    ("source", &source),
                ],
                1,
            );
        }
    }

    let mut f = family(
        &mut out,
        "autoclat_translator_dropped_packets_total",
        "counter",
        "Packets the userspace translator dropped, by reason.",
    );
    for u in ups {
        if let Some(drops) = &u.counters.translator_drops {
            for (reason, n) in drops.by_reason() {
                f.sample(&[("uplink", &u.uplink), ("reason", reason)], n);
            }
        }
    }

    if let Some(r) = &report.router {
        let mut f = family(
            &mut out,
            "autoclat_router_table_present",
            "gauge",
            "Router mode: whether autoclat's nftables table (ip autoclat) is in place.",
        );
        f.sample(&[("mode", &r.mode)], u64::from(r.table));
        let mut f = family(
            &mut out,
            "autoclat_router_downstream_info",
            "gauge",
            "Router mode: the downstream interfaces present.",
        );
        for d in &r.downstream {
            f.sample(&[("interface", d)], 1);
        }
        type PickR = fn(&crate::control::RouterCounters) -> (u64, u64);
        let per_dir: [(&str, &str, PickR); 2] = [
            (
                "autoclat_router_forwarded_packets_total",
                "Router mode: packets forwarded between the downstream interfaces and a CLAT.",
                |c| (c.out_packets, c.in_packets),
            ),
            (
                "autoclat_router_forwarded_bytes_total",
                "Router mode: bytes forwarded between the downstream interfaces and a CLAT.",
                |c| (c.out_bytes, c.in_bytes),
            ),
        ];
        for (name, help, pick) in per_dir {
            let mut f = family(&mut out, name, "counter", help);
            for c in &r.forwarded {
                let (o, i) = pick(c);
                f.sample(&[("tun", &c.tun), ("direction", "out")], o);
                f.sample(&[("tun", &c.tun), ("direction", "in")], i);
            }
        }
        let mut f = family(
            &mut out,
            "autoclat_router_repairs_total",
            "counter",
            "Router mode: pieces (forwarding, the nftables table) put back after a third party removed them.",
        );
        f.sample(&[], r.repairs);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::control::{ClatCounters, DirCounters, TranslatorDrops};
    use crate::nat64::PrefixSource;

    /// (family name, labels in order) -> value.
    type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

    /// A strict reader of the text format: every line is a HELP, a TYPE or a sample; every
    /// family has HELP then TYPE before its samples and appears once; names and label names
    /// are valid; label values are correctly escaped; no series twice.
    fn parse_strict(text: &str) -> Samples {
        fn valid_name(s: &str) -> bool {
            let mut c = s.chars();
            c.next()
                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
                && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        fn valid_label(s: &str) -> bool {
            valid_name(s) && !s.contains(':')
        }
        assert!(text.ends_with('\n'), "must end with a newline");
        let mut samples = BTreeMap::new();
        let mut seen_families = BTreeSet::new();
        // (name, has HELP, has TYPE, type)
        let mut current: Option<(String, bool, Option<String>)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(valid_name(name), "{line}");
                assert!(!help.is_empty());
                assert!(
                    seen_families.insert(name.to_string()),
                    "family twice: {name}"
                );
                current = Some((name.to_string(), true, None));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let cur = current.as_mut().unwrap();
                assert_eq!(cur.0, name, "TYPE for another family than HELP: {line}");
                assert!(cur.2.is_none(), "TYPE twice: {line}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                cur.2 = Some(kind.to_string());
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line}");
                let (name, labels, value) = parse_sample(line);
                assert!(valid_name(&name), "{line}");
                let cur = current.as_ref().unwrap();
                assert_eq!(cur.0, name, "sample outside its family: {line}");
                assert!(cur.1 && cur.2.is_some(), "sample before HELP+TYPE: {line}");
                for (k, _) in &labels {
                    assert!(valid_label(k), "{line}");
                }
                let v: f64 = value.parse().unwrap();
                assert!(v >= 0.0);
                assert!(
                    samples.insert((name, labels), v).is_none(),
                    "series twice: {line}"
                );
            }
        }
        samples
    }

    /// `name{k="v",...} value` with the format's escapes in values.
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, String) {
        let name_end = line.find(['{', ' ']).unwrap();
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                let (start, _) = *chars.peek().unwrap();
                let eq = r[start..].find('=').unwrap() + start;
                let key = r[start..eq].to_string();
                while chars.peek().unwrap().0 < eq {
                    chars.next();
                }
                chars.next(); // '='
                assert_eq!(chars.next().unwrap().1, '"', "{line}");
                let mut val = String::new();
                loop {
                    match chars.next().unwrap().1 {
                        '\\' => match chars.next().unwrap().1 {
                            '\\' => val.push('\\'),
                            '"' => val.push('"'),
                            'n' => val.push('\n'),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        '"' => break,
                        '\n' => panic!("raw newline"),
                        c => val.push(c),
                    }
                }
                labels.push((key, val));
                match chars.next().unwrap() {
                    (_, ',') => continue,
                    (i, '}') => {
                        rest = &r[i + 1..];
                        break;
                    }
                    (_, c) => panic!("unexpected {c:?} in {line}"),
                }
            }
        }
        let value = rest.strip_prefix(' ').unwrap();
        assert!(!value.contains(' '), "timestamps are not emitted: {line}");
        (name, labels, value.to_string())
    }

    fn get(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.get(&(name.to_string(), labels)).map(|v| *v as u64)
    }

    fn report() -> StatusReport {
        let running = UplinkStatus {
            uplink: "eth0".into(),
            ifindex: 2,
            state: UplinkState::Running,
            reason: None,
            prefix: Some("2001:db8:64::/96".into()),
            prefix_source: Some(PrefixSource::Pref64),
            v4: Some("192.0.0.4".parse().unwrap()),
            v6: Some("2001:db8:1::1234".parse().unwrap()),
            v4_iface: Some("v4-eth0".into()),
            v4_ifindex: Some(7),
            route_metric: Some(2048),
            pid: Some(4242),
            restarts: 3,
            repairs: 2,
            fast_path: true,
            fast_path_reason: None,
            last_exit: Some("signal 9".into()),
            counters: ClatCounters {
                translator: DirCounters {
                    v4_to_v6_packets: 11,
                    v4_to_v6_bytes: 1100,
                    v6_to_v4_packets: 12,
                    v6_to_v4_bytes: 1200,
                },
                fast_path: DirCounters {
                    v4_to_v6_packets: 1 << 40,
                    v4_to_v6_bytes: 21,
                    v6_to_v4_packets: 22,
                    v6_to_v4_bytes: 23,
                },
                translator_drops: Some(TranslatorDrops {
                    not_ours: 5,
                    malformed: 6,
                    other: 7,
                    truncated: 0,
                    offload_error: 1,
                    send_error: 2,
                    tun_write_error: 3,
                }),
            },
        };
        // A name with every character the format must escape, no CLAT, no drop counters.
        let odd = UplinkStatus {
            uplink: "we\"ird\\na\nme".into(),
            state: UplinkState::Waiting,
            prefix: Some("64:ff9b::/96".into()),
            prefix_source: Some(PrefixSource::Dns64),
            v4: None,
            v6: None,
            v4_iface: None,
            v4_ifindex: None,
            route_metric: None,
            pid: None,
            restarts: 0,
            repairs: 0,
            fast_path: false,
            counters: ClatCounters::default(),
            ..running.clone()
        };
        let lo = UplinkStatus {
            uplink: "lo".into(),
            state: UplinkState::Disabled,
            prefix: None,
            prefix_source: None,
            ..odd.clone()
        };
        let backoff = UplinkStatus {
            uplink: "eth1".into(),
            state: UplinkState::Backoff,
            pid: None,
            v4_iface: Some("v4-eth1".into()),
            counters: ClatCounters {
                translator_drops: None,
                ..running.counters
            },
            ..running.clone()
        };
        StatusReport {
            uplinks: vec![running, odd, lo, backoff],
            ..StatusReport::default()
        }
    }

    #[test]
    fn output_parses_strictly_and_matches_the_json_report() {
        // The values are checked against the report as `status --json` carries it.
        let json = serde_json::to_string(&report()).unwrap();
        let r: StatusReport = serde_json::from_str(&json).unwrap();
        let text = render(&r);
        let s = parse_strict(&text);

        for u in &r.uplinks {
            let name = u.uplink.as_str();
            let mut ones = 0;
            for (state, sname) in STATES {
                let v = get(
                    &s,
                    "autoclat_uplink_state",
                    &[("uplink", name), ("state", sname)],
                )
                .unwrap();
                assert_eq!(v, u64::from(u.state == state), "{name} {sname}");
                ones += v;
            }
            assert_eq!(ones, 1);
            let restarts = get(&s, "autoclat_restarts_total", &[("uplink", name)]);
            let repairs = get(&s, "autoclat_repairs_total", &[("uplink", name)]);
            if u.state == UplinkState::Disabled {
                assert_eq!((restarts, repairs), (None, None));
            } else {
                assert_eq!(restarts, Some(u64::from(u.restarts)));
                assert_eq!(repairs, Some(u64::from(u.repairs)));
            }
            let info = s.iter().find(|((n, l), _)| {
                n == "autoclat_prefix_info" && l[0] == ("uplink".into(), name.into())
            });
            match (&u.prefix, u.prefix_source) {
                (Some(p), Some(src)) => {
                    let ((_, labels), v) = info.unwrap();
                    assert_eq!(*v, 1.0);
                    assert_eq!(labels[1], ("prefix".into(), p.clone()));
                    assert_eq!(labels[2], ("source".into(), src.to_string()));
                }
                _ => assert!(info.is_none()),
            }
            let c = &u.counters;
            for (path, d) in [("translator", &c.translator), ("fast_path", &c.fast_path)] {
                let q = |m: &str, dir: &str| {
                    get(
                        &s,
                        m,
                        &[("uplink", name), ("path", path), ("direction", dir)],
                    )
                };
                if u.v4_iface.is_some() {
                    let p = "autoclat_translated_packets_total";
                    let b = "autoclat_translated_bytes_total";
                    assert_eq!(q(p, "4to6"), Some(d.v4_to_v6_packets));
                    assert_eq!(q(p, "6to4"), Some(d.v6_to_v4_packets));
                    assert_eq!(q(b, "4to6"), Some(d.v4_to_v6_bytes));
                    assert_eq!(q(b, "6to4"), Some(d.v6_to_v4_bytes));
                } else {
                    assert_eq!(q("autoclat_translated_packets_total", "4to6"), None);
                }
            }
            let drop_series = s
                .keys()
                .filter(|(n, l)| {
                    n == "autoclat_translator_dropped_packets_total"
                        && l[0] == ("uplink".into(), name.into())
                })
                .count();
            match &c.translator_drops {
                Some(d) => {
                    assert_eq!(drop_series, 7);
                    for (reason, n) in d.by_reason() {
                        let v = get(
                            &s,
                            "autoclat_translator_dropped_packets_total",
                            &[("uplink", name), ("reason", reason)],
                        );
                        assert_eq!(v, Some(n), "{reason}");
                    }
                }
                None => assert_eq!(drop_series, 0, "no made-up drop counters"),
            }
        }
        // Every family is there, with HELP and TYPE even when it has no sample.
        for fam in [
            "autoclat_uplink_state",
            "autoclat_fast_path_attached",
            "autoclat_translated_packets_total",
            "autoclat_translated_bytes_total",
            "autoclat_restarts_total",
            "autoclat_repairs_total",
            "autoclat_prefix_info",
            "autoclat_translator_dropped_packets_total",
        ] {
            assert!(text.contains(&format!("# TYPE {fam} ")), "{fam}");
        }
        // 2^40 stays exact.
        assert!(text.contains(
            "autoclat_translated_packets_total{uplink=\"eth0\",path=\"fast_path\",direction=\"4to6\"} 1099511627776\n"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let text = render(&report());
        assert!(text.contains("uplink=\"we\\\"ird\\\\na\\nme\""), "{text}");
        for line in text.lines() {
            assert!(!line.is_empty());
        }
    }

    #[test]
    fn empty_report_is_valid() {
        let text = render(&StatusReport::default());
        let s = parse_strict(&text);
        assert!(s.is_empty());
    }

    /// The strict parser itself refuses what it must (so the test above can fail).
    #[test]
    fn strict_parser_rejects_bad_input() {
        let bad = [
            "x 1\n",                                                    // no HELP/TYPE
            "# HELP x h\nx 1\n",                                        // no TYPE
            "# HELP x h\n# TYPE x gauge\ny 1\n",                        // wrong family
            "# HELP x h\n# TYPE x gauge\nx{a=\"b\\q\"} 1\n",            // bad escape
            "# HELP x h\n# TYPE x counter\nx 1\n",                      // counter without _total
            "# HELP 1x h\n# TYPE 1x gauge\n1x 1\n",                     // bad name
            "# HELP x h\n# TYPE x gauge\nx 1\nx 1\n",                   // series twice
            "# HELP x h\n# TYPE x gauge\nx{a=\"b\"} one\n",             // bad value
            "# HELP x h\n# TYPE x gauge\n# HELP x h\n# TYPE x gauge\n", // family twice
        ];
        for b in bad {
            let r = std::panic::catch_unwind(|| parse_strict(b));
            assert!(r.is_err(), "accepted {b:?}");
        }
    }
}
