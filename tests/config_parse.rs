//! Configuration parsing: every key, defaults, the shipped default file, the effective policy,
//! and errors with their file, line and column.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use autoclat::config::{
    parse, Config, ConfigError, DaemonConfig, DiscoveryConfig, FastPathMode, Ipv4Check, LogFormat,
    UplinkRule, DEFAULT_CONFIG_TOML,
};
use autoclat::discovery::{Nat64Prefix, PrefixSource};

fn ok(text: &str) -> Config {
    match parse(text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}\n---\n{text}"),
    }
}

fn err(text: &str) -> ConfigError {
    match parse(text, "test.toml") {
        Ok(c) => panic!("expected an error, got {c:?}\n---\n{text}"),
        Err(e) => e,
    }
}

/// Asserts the error's line, column and that its message contains every fragment.
fn assert_err(text: &str, line: usize, column: usize, fragments: &[&str]) {
    let e = err(text);
    assert_eq!(
        (e.line(), e.column()),
        (Some(line), Some(column)),
        "position of `{e}` for\n{text}"
    );
    for f in fragments {
        assert!(e.message.contains(f), "`{e}` lacks `{f}` for\n{text}");
    }
    assert_eq!(e.file, "test.toml");
}

fn prefix(s: &str) -> Nat64Prefix {
    s.parse().unwrap()
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(ok(""), Config::default());
    assert_eq!(ok("\n# only a comment\n\n"), Config::default());
    assert_eq!(ok("[daemon]\n[discovery]\n"), Config::default());
}

#[test]
fn builtin_defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.daemon.control_socket, "/run/autoclat/control.sock");
    assert_eq!(c.daemon.clatd_path, "");
    assert_eq!(c.daemon.log_format, LogFormat::Text);
    assert_eq!(
        c.discovery.order,
        [
            PrefixSource::Static,
            PrefixSource::Pref64,
            PrefixSource::Dns64
        ]
    );
    assert!(c.discovery.dns_servers.is_empty());
    assert!(c.uplinks.is_empty());
    let r = UplinkRule::default();
    assert_eq!(r.match_glob, "*");
    assert!(r.enable);
    assert_eq!(r.nat64_prefix, None);
    assert_eq!(r.ipv4_check, Ipv4Check::Host);
    assert_eq!(r.route_metric, 2048);
    assert_eq!(r.fast_path, FastPathMode::Auto);
}

#[test]
fn shipped_default_file_is_exactly_the_builtin_defaults() {
    let from_file = parse(DEFAULT_CONFIG_TOML, "config/autoclat.toml").unwrap();
    assert_eq!(from_file, Config::default());
    // And it really is the file in the repository.
    let on_disk =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/autoclat.toml"))
            .unwrap();
    assert_eq!(on_disk, DEFAULT_CONFIG_TOML);
}

/// Every commented-out `key = value` example in the shipped file is itself valid: uncommenting
/// the examples gives a parseable policy.
#[test]
fn shipped_default_file_examples_parse_when_uncommented() {
    let uncommented: String = DEFAULT_CONFIG_TOML
        .lines()
        .filter_map(|l| {
            // Real section headers, so that each example lands in its table.
            if l.starts_with('[') {
                return Some(format!("{l}\n"));
            }
            let body = l.strip_prefix("# ")?;
            let looks_like_toml = body.starts_with("[[uplink]]")
                || body.starts_with("[router]")
                || body
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            looks_like_toml.then(|| format!("{body}\n"))
        })
        .collect();
    let c = ok(&uncommented);
    assert!(c.uplinks.len() >= 4, "{uncommented}");
    assert_eq!(c.hooks.up.as_deref(), Some("/etc/autoclat/hooks/up"));
    assert_eq!(c.hooks.down.as_deref(), Some("/etc/autoclat/hooks/down"));
    // The first example is the documented defaults plus a static prefix.
    let expected = UplinkRule {
        nat64_prefix: Some(prefix("2001:db8:64::/96")),
        ..UplinkRule::default()
    };
    assert_eq!(c.uplinks[0], expected);
    // The others are the examples, in order (the catch-all first one would shadow them, which
    // is why they are only examples): check them without it.
    let examples = Config {
        uplinks: c.uplinks[1..].to_vec(),
        ..Config::default()
    };
    let router = c.router.as_ref().expect("the [router] example");
    assert!(router.is_downstream("virbr0") && router.is_downstream("docker0"));
    assert!(router.clat_prefix().is_some());
    assert!(!examples.rule_for("veth1234").enable);
    assert!(!examples.rule_for("wg0").enable);
    assert_eq!(examples.rule_for("eth0").ipv4_check, Ipv4Check::Link);
    assert_eq!(
        examples.rule_for("eth0").nat64_prefix,
        Some(prefix("2001:db8:64::/96"))
    );
}

#[test]
fn every_key_is_read() {
    let c = ok(r#"
[daemon]
control_socket = "/tmp/x.sock"
clatd_path = "/usr/local/bin/clatd"
log_format = "json"

[discovery]
order = ["dns64", "static"]
dns_servers = ["2001:db8::53", "192.0.2.53"]

[[uplink]]
match = "eth[0-9]"
enable = false
nat64_prefix = "2001:db8:100::/40"
ipv4_check = "link"
route_metric = 100
fast_path = "off"

[[uplink]]
match = "wl*"
fast_path = "on"
"#);
    assert_eq!(
        c.daemon,
        DaemonConfig {
            control_socket: "/tmp/x.sock".into(),
            clatd_path: "/usr/local/bin/clatd".into(),
            log_format: LogFormat::Json,
        }
    );
    assert_eq!(
        c.discovery,
        DiscoveryConfig {
            order: vec![PrefixSource::Dns64, PrefixSource::Static],
            dns_servers: vec![
                "2001:db8::53".parse::<IpAddr>().unwrap(),
                "192.0.2.53".parse::<IpAddr>().unwrap()
            ],
        }
    );
    assert_eq!(
        c.uplinks[0],
        UplinkRule {
            match_glob: "eth[0-9]".into(),
            enable: false,
            nat64_prefix: Some(prefix("2001:db8:100::/40")),
            ipv4_check: Ipv4Check::Link,
            route_metric: 100,
            fast_path: FastPathMode::Off,
        }
    );
    // Keys a rule leaves out take the defaults.
    assert_eq!(
        c.uplinks[1],
        UplinkRule {
            match_glob: "wl*".into(),
            fast_path: FastPathMode::On,
            ..UplinkRule::default()
        }
    );
}

#[test]
fn every_enum_value_and_prefix_length() {
    for (text, want) in [
        ("auto", FastPathMode::Auto),
        ("on", FastPathMode::On),
        ("off", FastPathMode::Off),
    ] {
        let c = ok(&format!("[[uplink]]\nfast_path = \"{text}\"\n"));
        assert_eq!(c.uplinks[0].fast_path, want);
    }
    for (text, want) in [("host", Ipv4Check::Host), ("link", Ipv4Check::Link)] {
        let c = ok(&format!("[[uplink]]\nipv4_check = \"{text}\"\n"));
        assert_eq!(c.uplinks[0].ipv4_check, want);
    }
    for (text, want) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
        assert_eq!(
            ok(&format!("[daemon]\nlog_format = \"{text}\"\n"))
                .daemon
                .log_format,
            want
        );
    }
    for p in [
        "2001:db8::/32",
        "2001:db8:100::/40",
        "2001:db8:122::/48",
        "2001:db8:122:300::/56",
        "2001:db8:122:344::/64",
        "2001:db8:64::/96",
        "64:ff9b::/96",
    ] {
        let c = ok(&format!("[[uplink]]\nnat64_prefix = \"{p}\"\n"));
        assert_eq!(c.uplinks[0].nat64_prefix, Some(prefix(p)));
    }
    // A bare address means /96, as with clatd's -p.
    let c = ok("[[uplink]]\nnat64_prefix = \"64:ff9b::\"\n");
    assert_eq!(c.uplinks[0].nat64_prefix, Some(prefix("64:ff9b::/96")));
    // Each single source, and every order of all three.
    for order in [
        "[\"static\"]",
        "[\"pref64\"]",
        "[\"dns64\"]",
        "[\"pref64\", \"dns64\", \"static\"]",
        "[\"dns64\", \"pref64\"]",
    ] {
        ok(&format!("[discovery]\norder = {order}\n"));
    }
}

#[test]
fn route_metric_bounds() {
    assert_eq!(
        ok("[[uplink]]\nroute_metric = 1\n").uplinks[0].route_metric,
        1
    );
    assert_eq!(
        ok("[[uplink]]\nroute_metric = 4294967295\n").uplinks[0].route_metric,
        u32::MAX
    );
    assert_err(
        "[[uplink]]\nroute_metric = 0\n",
        2,
        16,
        &["route_metric", "0 is out of range", "1 to 4294967295"],
    );
    assert_err(
        "[[uplink]]\nroute_metric = 4294967296\n",
        2,
        16,
        &["4294967296 is out of range"],
    );
    assert_err(
        "[[uplink]]\nroute_metric = -5\n",
        2,
        16,
        &["-5 is out of range"],
    );
    assert_err(
        "[[uplink]]\nroute_metric = 1.5\n",
        2,
        16,
        &["invalid type", "an integer from 1 to 4294967295"],
    );
    assert_err(
        "[[uplink]]\nroute_metric = \"10\"\n",
        2,
        16,
        &["invalid type: string", "integer"],
    );
}

#[test]
fn unknown_keys_at_every_level() {
    assert_err(
        "foo = 1\n",
        1,
        1,
        &["unknown field `foo`", "`daemon`, `discovery`, `uplink`"],
    );
    assert_err(
        "\n\n[demon]\n",
        3,
        2,
        &["unknown field `demon`", "`daemon`"],
    );
    assert_err(
        "[daemon]\ncontrol_socket = \"/x\"\n  logformat = \"json\"\n",
        3,
        3,
        &[
            "unknown field `logformat`",
            "`control_socket`, `clatd_path`, `log_format`",
        ],
    );
    assert_err(
        "[discovery]\nservers = []\n",
        2,
        1,
        &[
            "unknown field `servers`",
            "expected `order` or `dns_servers`",
        ],
    );
    // The README example: a typo in a rule.
    let e = err("[daemon]\n\n[[uplink]]\nmatch = \"eth*\"\n\n\nenabel = true\n");
    assert_eq!(
        e.to_string(),
        "test.toml:7:1: unknown field `enabel`, expected one of `match`, `enable`, \
         `nat64_prefix`, `ipv4_check`, `route_metric`, `fast_path`"
    );
    // In the second rule, not the first.
    assert_err(
        "[[uplink]]\nmatch = \"a\"\n[[uplink]]\nmatch = \"b\"\nmetric = 5\n",
        5,
        1,
        &["unknown field `metric`", "`route_metric`"],
    );
    // Dotted keys and inline tables are TOML too.
    assert_err("daemon.nope = 1\n", 1, 8, &["unknown field `nope`"]);
    assert_err("daemon = { nope = 1 }\n", 1, 12, &["unknown field `nope`"]);
}

#[test]
fn wrong_types() {
    assert_err(
        "[[uplink]]\nenable = \"yes\"\n",
        2,
        10,
        &[
            "`enable`",
            "invalid type: string \"yes\", expected a boolean",
        ],
    );
    assert_err(
        "[[uplink]]\nmatch = 5\n",
        2,
        9,
        &["`match`", "invalid type: integer `5`, expected a string"],
    );
    assert_err(
        "[daemon]\ncontrol_socket = true\n",
        2,
        18,
        &["`control_socket`", "expected a string"],
    );
    assert_err(
        "[daemon]\nclatd_path = []\n",
        2,
        14,
        &["`clatd_path`", "expected a string"],
    );
    assert_err(
        "[daemon]\nlog_format = \"xml\"\n",
        2,
        14,
        &["unknown variant `xml`", "`text` or `json`"],
    );
    assert_err(
        "[[uplink]]\nfast_path = true\n",
        2,
        13,
        &["`fast_path`", "expected"],
    );
    assert_err(
        "[[uplink]]\nfast_path = \"yes\"\n",
        2,
        13,
        &["unknown variant `yes`", "`auto`, `on`, `off`"],
    );
    assert_err(
        "[[uplink]]\nipv4_check = \"both\"\n",
        2,
        14,
        &["unknown variant `both`", "`host` or `link`"],
    );
    assert_err(
        "[[uplink]]\nnat64_prefix = 64\n",
        2,
        16,
        &["`nat64_prefix`", "expected a string"],
    );
    assert_err(
        "[discovery]\norder = \"static\"\n",
        2,
        9,
        &["`order`", "expected an array"],
    );
    assert_err(
        "[discovery]\ndns_servers = \"2001:db8::53\"\n",
        2,
        15,
        &["`dns_servers`", "expected an array"],
    );
    assert_err("daemon = 1\n", 1, 10, &["`daemon`", "expected a table"]);
    assert_err("uplink = 5\n", 1, 10, &["`uplink`", "expected an array"]);
    assert_err(
        "[uplink]\nmatch = \"eth0\"\n",
        1,
        1,
        &["write `[[uplink]]`"],
    );
}

#[test]
fn bad_values() {
    assert_err(
        "[[uplink]]\nmatch = \"\"\n",
        2,
        9,
        &["`match`", "empty glob"],
    );
    assert_err(
        "[[uplink]]\nmatch = \"eth[0-\"\n",
        2,
        9,
        &["bad interface-name glob `eth[0-`", "no closing `]`"],
    );
    assert_err(
        "[[uplink]]\nmatch = \"eth[9-0]\"\n",
        2,
        9,
        &["range `9-0` is reversed"],
    );
    assert_err("[[uplink]]\nmatch = 'eth\\'\n", 2, 9, &["lone `\\`"]);
    assert_err(
        "[[uplink]]\nnat64_prefix = \"2001:db8::/33\"\n",
        2,
        16,
        &["prefix length /33 is not one of the RFC 6052 lengths"],
    );
    assert_err(
        "[[uplink]]\nnat64_prefix = \"2001:db8::1/32\"\n",
        2,
        16,
        &["bits set beyond its prefix length"],
    );
    assert_err(
        "[[uplink]]\nnat64_prefix = \"2001:db8:0:0:ff00::/96\"\n",
        2,
        16,
        &["u-octet"],
    );
    // Prefixes no NAT64 can have (issue 8: bounded, validated prefixes).
    for (bad, why) in [
        ("ff02::/96", "multicast"),
        ("fe80::/96", "link-local"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::/96", "unspecified"),
    ] {
        assert_err(
            &format!("[[uplink]]\nnat64_prefix = \"{bad}\"\n"),
            2,
            16,
            &[why, "not a NAT64 prefix"],
        );
    }
    assert_err(
        "[[uplink]]\nnat64_prefix = \"192.0.2.0/24\"\n",
        2,
        16,
        &["is not an IPv6 prefix"],
    );
    assert_err(
        "[discovery]\norder = []\n",
        2,
        9,
        &["`order`", "at least one prefix source"],
    );
    assert_err(
        "[discovery]\norder = [\"static\", \"dns64\", \"static\"]\n",
        2,
        9,
        &["lists `static` twice"],
    );
    assert_err(
        "[discovery]\norder = [\"static\", \"dhcp\"]\n",
        2,
        20,
        &["unknown variant `dhcp`", "`static`, `pref64`, `dns64`"],
    );
    assert_err(
        "[discovery]\ndns_servers = [\"2001:db8::53\", \"resolver\"]\n",
        2,
        15,
        &["`resolver` is not an IP address"],
    );
}

#[test]
fn syntax_errors_have_positions() {
    assert_err("[daemon\n", 1, 8, &["invalid table header"]);
    assert_err("[daemon]\nlog_format = \n", 2, 14, &["invalid string"]);
    assert_err("[daemon]\n[daemon]\n", 2, 1, &["duplicate key"]);
    assert_err(
        "[[uplink]]\nenable = true\nenable = false\n",
        3,
        1,
        &["duplicate key"],
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // "é" is two bytes in UTF-8; the column of the bad value is still 22 characters in.
    let e = err("[daemon]\nclatd_path = \"é\"    \nlog_format = 1\n");
    assert_eq!((e.line(), e.column()), (Some(3), Some(14)));
    let e = err("# é é é\n[[uplink]]\nmatch = \"é\" ; x\n");
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.column(), Some(13));
}

#[test]
fn display_is_file_line_column_message() {
    let e = parse(
        "[daemon]\nlog_format = \"xml\"\n",
        "/etc/autoclat/autoclat.toml",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/autoclat/autoclat.toml:2:14: `log_format`: unknown variant `xml`, expected `text` or `json`"
    );
    // Errors are one line.
    let e = err("[daemon\n");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn rule_for_first_match_wins_else_defaults() {
    let c = ok(r#"
[[uplink]]
match = "eth9*"
enable = false

[[uplink]]
match = "eth*"
route_metric = 10

[[uplink]]
match = "eth0"
route_metric = 20

[[uplink]]
match = "wl?[0-9]"
ipv4_check = "link"
"#);
    assert!(!c.rule_for("eth9").enable);
    assert!(!c.rule_for("eth99").enable);
    assert_eq!(
        c.rule_for("eth0").route_metric,
        10,
        "the earlier eth* wins over eth0"
    );
    assert_eq!(c.rule_for("eth1").route_metric, 10);
    assert_eq!(c.rule_for("wlp3").ipv4_check, Ipv4Check::Link);
    assert_eq!(c.rule_for("wlp").ipv4_check, Ipv4Check::Host);
    assert_eq!(c.rule_for("enp0s3"), &UplinkRule::default());
    assert!(c.has_rule_for("eth0"));
    assert!(!c.has_rule_for("enp0s3"));
    assert_eq!(
        Config::default().rule_for("anything"),
        &UplinkRule::default()
    );
}

#[test]
fn effective_spells_out_every_key_and_round_trips() {
    let text = Config::default().effective();
    for key in [
        "[daemon]",
        "control_socket = \"/run/autoclat/control.sock\"",
        "clatd_path = \"\"",
        "log_format = \"text\"",
        "[discovery]",
        "order = [\"static\", \"pref64\", \"dns64\"]",
        "dns_servers = []",
        "# match = \"*\"",
        "# enable = true",
        "# ipv4_check = \"host\"",
        "# route_metric = 2048",
        "# fast_path = \"auto\"",
    ] {
        assert!(text.contains(key), "`{key}` missing from\n{text}");
    }
    assert_eq!(ok(&text), Config::default());

    let c = ok(r#"
[daemon]
control_socket = "/run/a \"quoted\" path\\.sock"
log_format = "json"
[discovery]
order = ["pref64"]
dns_servers = ["2001:db8::53"]
[[uplink]]
match = "eth*"
nat64_prefix = "2001:db8:100::/40"
fast_path = "on"
[[uplink]]
match = "veth*"
enable = false
"#);
    let text = c.effective();
    assert_eq!(ok(&text), c, "round trip of\n{text}");
    assert!(
        text.contains("nat64_prefix = \"2001:db8:100::/40\""),
        "{text}"
    );
    assert!(
        text.contains("route_metric = 2048"),
        "defaults spelt out in rules:\n{text}"
    );
    assert_eq!(text.matches("\n[[uplink]]\n").count(), 2, "{text}");
}

#[test]
fn hooks_section() {
    use autoclat::config::HooksConfig;
    assert_eq!(
        Config::default().hooks,
        HooksConfig {
            up: None,
            down: None,
            timeout: 10
        }
    );
    let c = ok(
        "[hooks]\nup = \"/etc/autoclat/up\"\ndown = \"/usr/local/bin/clat down\"\ntimeout = 3600\n",
    );
    assert_eq!(c.hooks.up.as_deref(), Some("/etc/autoclat/up"));
    assert_eq!(c.hooks.down.as_deref(), Some("/usr/local/bin/clat down"));
    assert_eq!(c.hooks.timeout, 3600);
    assert_eq!(ok("[hooks]\ntimeout = 1\n").hooks.timeout, 1);
    assert_err(
        "[hooks]\nup = \"up.sh\"\n",
        2,
        6,
        &["`up`", "`up.sh` is not an absolute path"],
    );
    assert_err(
        "[hooks]\ntimeout = 0\n",
        2,
        11,
        &["`timeout`", "0 is out of range", "1 to 3600"],
    );
    assert_err(
        "[hooks]\ntimeout = 3601\n",
        2,
        11,
        &["3601 is out of range"],
    );
    assert_err(
        "[hooks]\ntimeout = \"10s\"\n",
        2,
        11,
        &["`timeout`", "invalid type"],
    );
    assert_err(
        "[hooks]\nscript_up = \"/x\"\n",
        2,
        1,
        &["unknown field `script_up`", "`up`, `down`, `timeout`"],
    );
    // The effective policy spells the section out and reads back.
    let text = c.effective();
    assert!(
        text.contains("[hooks]\nup = \"/etc/autoclat/up\"\n"),
        "{text}"
    );
    assert!(text.contains("timeout = 3600\n"), "{text}");
    assert_eq!(ok(&text), c);
    let text = Config::default().effective();
    assert!(text.contains("# up unset: nothing runs\n"), "{text}");
    assert!(text.contains("timeout = 10\n"), "{text}");
    assert_eq!(ok(&text), Config::default());
}

#[test]
fn router_section_parses_round_trips_and_is_absent_by_default() {
    assert_eq!(Config::default().router, None);
    assert_eq!(ok("").router, None);
    let c = ok(r#"
[router]
downstream = ["br-lan", "docker0", "virbr*"]
"#);
    let r = c.router.as_ref().unwrap();
    assert!(r.is_downstream("br-lan"));
    assert!(r.is_downstream("virbr0"));
    assert!(r.is_downstream("docker0"));
    assert!(!r.is_downstream("docker1"));
    assert!(!r.is_downstream("eth0"));
    let text = c.effective();
    assert!(text.contains("[router]"), "{text}");
    assert_eq!(ok(&text), c, "round trip of\n{text}");
    assert!(Config::default().effective().contains("# No [router]"));
}

#[test]
fn router_mistakes_name_the_line_and_what_was_expected() {
    assert_err(
        "[router]\ndownstream = []\n",
        2,
        14,
        &["downstream", "at least one downstream interface"],
    );
    assert_err(
        "[router]\ndownstream = [\"br[\"]\n",
        2,
        14,
        &["bad interface-name glob `br[`"],
    );
    assert_err(
        "[router]\ndownstream = \"br-lan\"\n",
        2,
        14,
        &["downstream", "expected an array"],
    );
    assert_err(
        "[router]\ndownstream = [\"br-lan\"]\nmasquerade = true\n",
        3,
        1,
        &["unknown field `masquerade`"],
    );
    // The stateless mode's prefix must be a global /64.
    assert_err(
        "[router]\ndownstream = [\"br-lan\"]\nclat_prefix = \"2001:db8:1:2::/56\"\n",
        3,
        15,
        &["clat_prefix", "must be a /64"],
    );
    assert_err(
        "[router]\ndownstream = [\"br-lan\"]\nclat_prefix = \"fe80::/64\"\n",
        3,
        15,
        &["clat_prefix", "not a global unicast prefix"],
    );
    assert_err(
        "[router]\ndownstream = [\"br-lan\"]\nclat_prefix = \"br-lan\"\n",
        3,
        15,
        &["clat_prefix", "is not an IPv6 /64"],
    );
}

#[test]
fn router_stateless_mode_parses_and_round_trips() {
    let c = ok("[router]\ndownstream = [\"br-lan\"]\nclat_prefix = \"2001:db8:1:ff00::/64\"\n");
    let r = c.router.as_ref().unwrap();
    assert_eq!(
        r.clat_prefix().map(|p| p.to_string()),
        Some("2001:db8:1:ff00::/64".to_string())
    );
    let text = c.effective();
    assert!(
        text.contains("clat_prefix = \"2001:db8:1:ff00::/64\""),
        "{text}"
    );
    assert_eq!(ok(&text), c);
}
