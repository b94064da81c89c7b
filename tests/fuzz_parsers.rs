//! Property ("fuzz") targets for the parsers of untrusted input other than packets: ND options
//! from router advertisements, RFC 7050 DNS64 answers, control-socket request lines and the
//! TOML configuration. Each runs on arbitrary input and on random mutations of the seed files
//! in `tests/corpus/<target>/`, asserting no panic and each parser's invariants. The case
//! counts keep the whole file to a few seconds in a debug build; raise them with
//! `PROPTEST_CASES=100000 cargo test --test fuzz_parsers` for a longer run.

#![allow(clippy::unwrap_used)]

use std::net::Ipv6Addr;
use std::path::PathBuf;

use autoclat::control::{error_line, parse_request, Request, MAX_REQUEST};
use autoclat::discovery::ndopt::{
    nduseropts_in_datagram, parse_nduseropt, parse_options, RaOption,
};
use autoclat::discovery::rfc7050::prefixes_from_answers;
use proptest::prelude::*;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let raw = std::fs::read(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = if name.ends_with(".hex") {
                let hex: String = String::from_utf8(raw)
                    .unwrap()
                    .chars()
                    .filter(|c| c.is_ascii_hexdigit())
                    .collect();
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect()
            } else {
                raw
            };
            (name, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// A mutation of one of `seeds`: byte flips, insertions, deletions, truncation.
fn mutated(seeds: Vec<(String, Vec<u8>)>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (
        0..n,
        proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 0..8),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut b = seeds[i].1.clone();
            for (op, at, val) in edits {
                let at = if b.is_empty() {
                    0
                } else {
                    usize::from(at) % b.len()
                };
                match op % 4 {
                    0 if !b.is_empty() => b[at] ^= val | 1,
                    1 => b.insert(at.min(b.len()), val),
                    2 if !b.is_empty() => {
                        b.remove(at);
                    }
                    _ if !b.is_empty() => b[at] = val,
                    _ => b.push(val),
                }
            }
            if let Some(c) = cut {
                b.truncate(usize::from(c) % (b.len() + 1));
            }
            b
        })
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- ND options ------------------------------------------------------------------------------

fn check_options(bytes: &[u8]) {
    if let Ok(opts) = parse_options(bytes) {
        // Every option is at least 8 bytes: never more options than that allows.
        assert!(opts.len() * 8 <= bytes.len(), "{opts:?} from {bytes:02x?}");
        for o in &opts {
            if let RaOption::Rdnss { servers, .. } = o {
                assert!(!servers.is_empty());
            }
        }
    }
}

#[test]
fn ndopt_seeds_parse() {
    for (name, bytes) in corpus("ndopt") {
        if name.contains("nlmsg") {
            let m = parse_nduseropt(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.icmp_type, 134, "{name}");
            assert!(m.source.is_some(), "{name}");
            assert!(m
                .options
                .iter()
                .any(|o| matches!(o, RaOption::Pref64 { .. })));
        } else {
            let o = parse_options(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!o.is_empty(), "{name}");
        }
    }
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn ndopt_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_options(&bytes);
        let _ = parse_nduseropt(&bytes);
        let _ = nduseropts_in_datagram(&bytes);
    }

    #[test]
    fn ndopt_mutated_seeds(bytes in mutated(corpus("ndopt"))) {
        check_options(&bytes);
        check_options(bytes.get(16..).unwrap_or(&[]));
        let _ = parse_nduseropt(&bytes);
        // As the payload of a netlink message.
        let mut dg = Vec::with_capacity(bytes.len() + 16);
        dg.extend_from_slice(&((bytes.len() + 16) as u32).to_ne_bytes());
        dg.extend_from_slice(&68u16.to_ne_bytes());
        dg.extend_from_slice(&[0; 10]);
        dg.extend_from_slice(&bytes);
        let _ = nduseropts_in_datagram(&dg);
    }
}

// ---- DNS64 answers (RFC 7050) ----------------------------------------------------------------

fn answers_of(text: &[u8]) -> Vec<Ipv6Addr> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn check_answers(answers: &[Ipv6Addr]) {
    let r = prefixes_from_answers(answers);
    assert!(r.prefixes.len() + r.rejected.len() <= answers.len().max(1) * 2);
    assert!(r.prefixes.len() <= answers.len());
    for p in &r.prefixes {
        // Each prefix came from an answer that holds a well-known address inside it.
        assert!(
            answers.iter().any(|a| p.contains(*a)),
            "{p} from {answers:?}"
        );
        assert!([32, 40, 48, 56, 64, 96].contains(&p.len()), "{p}");
    }
}

#[test]
fn dns64_seeds_give_a_prefix() {
    for (name, text) in corpus("dns64") {
        let answers = answers_of(&text);
        assert!(!answers.is_empty(), "{name}");
        let r = prefixes_from_answers(&answers);
        if !name.contains("ambiguous") {
            assert!(!r.prefixes.is_empty(), "{name}: {r:?}");
        }
        check_answers(&answers);
    }
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn dns64_arbitrary_answers(raw in proptest::collection::vec(any::<u128>(), 0..6)) {
        let answers: Vec<Ipv6Addr> = raw.into_iter().map(Ipv6Addr::from).collect();
        check_answers(&answers);
    }

    #[test]
    fn dns64_mutated_answers(
        seed in 0usize..64,
        flips in proptest::collection::vec((0usize..8, 0u8..128), 0..4),
    ) {
        let seeds = corpus("dns64");
        let mut answers = answers_of(&seeds[seed % seeds.len()].1);
        for (which, bit) in flips {
            if answers.is_empty() {
                break;
            }
            let i = which % answers.len();
            let v = u128::from(answers[i]) ^ (1u128 << bit);
            answers[i] = Ipv6Addr::from(v);
        }
        check_answers(&answers);
    }
}

// ---- Control requests ------------------------------------------------------------------------

fn check_request(line: &[u8]) {
    match parse_request(line) {
        Ok(Request::Status) => {
            assert_eq!(std::str::from_utf8(line).unwrap().trim(), "status");
        }
        Err(e) => {
            let answer = error_line(&e);
            // Bounded, one line, valid JSON, whatever the client sent.
            assert!(answer.len() < 256, "{answer}");
            assert_eq!(answer.matches('\n').count(), 1);
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert!(v["error"].is_string());
            if line.len() > MAX_REQUEST {
                assert!(answer.contains("longer than"));
            }
        }
    }
}

#[test]
fn control_seeds() {
    for (name, line) in corpus("control") {
        let want = !name.contains("unknown");
        assert_eq!(parse_request(&line).is_ok(), want, "{name}");
        check_request(&line);
    }
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn control_arbitrary_lines(line in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_request(&line);
    }

    #[test]
    fn control_arbitrary_strings(s in "\\PC{0,80}") {
        check_request(s.as_bytes());
    }

    #[test]
    fn control_long_lines(n in (MAX_REQUEST - 8)..(MAX_REQUEST + 64), b in any::<u8>()) {
        check_request(&vec![b; n]);
    }

    #[test]
    fn control_mutated_seeds(line in mutated(corpus("control"))) {
        check_request(&line);
    }
}

// ---- Configuration ---------------------------------------------------------------------------

fn check_config(text: &str) {
    if let Err(e) = autoclat::config::parse(text, "fuzz.toml") {
        let msg = e.to_string();
        assert!(msg.starts_with("fuzz.toml"), "{msg}");
        let loc = e
            .location
            .unwrap_or_else(|| panic!("no line:column in {msg:?} for {text:?}"));
        assert!(
            msg.starts_with(&format!("fuzz.toml:{}:{}: ", loc.line, loc.column)),
            "{msg}"
        );
        assert!(loc.line >= 1 && loc.column >= 1);
        assert!(loc.line <= text.lines().count() + 1, "{msg} for {text:?}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn config_seeds() {
    for (name, text) in corpus("config") {
        let text = String::from_utf8(text).unwrap();
        let r = autoclat::config::parse(&text, &name);
        assert_eq!(r.is_ok(), !name.starts_with("bad"), "{name}: {r:?}");
        check_config(&text);
    }
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn config_mutated_seeds(bytes in mutated(corpus("config"))) {
        check_config(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_arbitrary_text(s in "(\\[[a-z]{0,10}\\]\n|[a-z_]{1,14} = (\"[^\"\n]{0,12}\"|[0-9]{1,4}|true|\\[\\]|\\{\\})\n|\\PC{0,10}\n){0,8}") {
        check_config(&s);
    }
}
