//! The TOML configuration: schema, defaults and validation. Pure: parsing takes text and a
//! file name, never opens files itself.
//!
//! Validation happens while deserialising (in `deserialize_with` helpers), so that every error
//! carries the span of the offending key or value and can be reported as `file:line:column`.

use std::fmt::Write as _;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer, Serialize};

use crate::nat64::{Nat64Prefix, PrefixSource};

/// The annotated default policy shipped as `config/autoclat.toml`. It parses to exactly
/// [`Config::default`] (a test holds the two together).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/autoclat.toml");

/// The whole configuration file. Every key has a default, so an empty file is valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub discovery: DiscoveryConfig,
    /// Rules, first match wins; no rule matching = [`UplinkRule::default`] applies.
    #[serde(rename = "uplink")]
    pub uplinks: Vec<UplinkRule>,
    pub hooks: HooksConfig,
    /// `[router]`: forward IPv4 of downstream interfaces through the CLATs. Absent: nothing
    /// is forwarded, no firewall table is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterConfig>,
}

/// `[router]`: IPv4 arriving on a downstream interface is forwarded through the CLAT of the
/// uplink its route points at, masqueraded to the CLAT's IPv4 address (NAT44).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Interface-name globs of the downstream interfaces (`br-lan`, `docker0`, `virbr*`); at
    /// least one.
    #[serde(deserialize_with = "de_globs")]
    pub downstream: Vec<MatchGlob>,
    /// RFC 6877 §6.3 stateless mode: a global IPv6 /64 routed to this host (e.g. from DHCPv6
    /// prefix delegation) into which each downstream IPv4 address is mapped (RFC 6052, /64)
    /// instead of being masqueraded. Checked while parsing.
    #[serde(
        deserialize_with = "de_clat_prefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub clat_prefix: Option<String>,
}

impl RouterConfig {
    /// Whether `ifname` is a downstream interface.
    pub fn is_downstream(&self, ifname: &str) -> bool {
        self.downstream.iter().any(|g| g.matches(ifname))
    }

    /// The stateless mode's /64, if configured (checked while parsing).
    pub fn clat_prefix(&self) -> Option<Nat64Prefix> {
        self.clat_prefix
            .as_deref()
            .and_then(|s| crate::translator::args::parse_clat_prefix(s).ok())
    }
}

/// `[hooks]`: scripts run when a CLAT starts or stops ([`crate::hooks`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Run after a CLAT has started; an absolute path (checked while parsing).
    #[serde(deserialize_with = "de_hook_path")]
    pub up: Option<String>,
    /// Run after a CLAT has stopped.
    #[serde(deserialize_with = "de_hook_path")]
    pub down: Option<String>,
    /// Seconds a hook may run before it is killed: 1..=3600.
    #[serde(deserialize_with = "de_hook_timeout")]
    pub timeout: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            up: None,
            down: None,
            timeout: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub control_socket: String,
    /// Empty: the `clatd` installed beside `autoclat`.
    pub clatd_path: String,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Non-empty, no duplicates (checked while parsing).
    #[serde(deserialize_with = "de_order")]
    pub order: Vec<PrefixSource>,
    /// Empty: RDNSS learnt on the uplink, then /etc/resolv.conf.
    #[serde(deserialize_with = "de_dns_servers")]
    pub dns_servers: Vec<std::net::IpAddr>,
}

/// One `[[uplink]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkRule {
    /// Interface-name glob (`*`, `?`, `[...]`, `[!...]`, `\` escapes); non-empty, checked while
    /// parsing.
    #[serde(rename = "match", deserialize_with = "de_glob")]
    pub match_glob: MatchGlob,
    pub enable: bool,
    pub nat64_prefix: Option<Nat64Prefix>,
    pub ipv4_check: Ipv4Check,
    /// Metric of the CLAT's IPv4 default route: 1..=4294967295.
    #[serde(deserialize_with = "de_metric")]
    pub route_metric: u32,
    pub fast_path: FastPathMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ipv4Check {
    /// No IPv4 default route on the host (outside our own CLAT interfaces).
    Host,
    /// No global IPv4 address on the uplink itself.
    Link,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FastPathMode {
    /// Attach the eBPF fast path when the kernel allows it; otherwise run without and say why.
    Auto,
    /// Fail the uplink loudly if the fast path cannot attach.
    On,
    Off,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            control_socket: "/run/autoclat/control.sock".into(),
            clatd_path: String::new(),
            log_format: LogFormat::Text,
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            order: vec![
                PrefixSource::Static,
                PrefixSource::Pref64,
                PrefixSource::Dns64,
            ],
            dns_servers: Vec::new(),
        }
    }
}

impl Default for UplinkRule {
    fn default() -> Self {
        Self {
            match_glob: "*".into(),
            enable: true,
            nat64_prefix: None,
            ipv4_check: Ipv4Check::Host,
            route_metric: 2048,
            fast_path: FastPathMode::Auto,
        }
    }
}

/// The rule applied to interfaces no `[[uplink]]` rule matches.
static DEFAULT_RULE: LazyLock<UplinkRule> = LazyLock::new(UplinkRule::default);

// ---------------------------------------------------------------------------------------------
// Errors

/// A position in the configuration text, both 1-based; the column counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Why a configuration file was rejected: `FILE:LINE:COLUMN: MESSAGE` (the location is left out
/// in the rare case the TOML parser could not attribute the error to a place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", .location.map(|l| format!(":{}:{}", l.line, l.column)).unwrap_or_default())]
pub struct ConfigError {
    /// The file name as given to [`parse`].
    pub file: String,
    pub location: Option<Location>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// 1-based line, if known.
    pub fn line(&self) -> Option<usize> {
        self.location.map(|l| l.line)
    }

    /// 1-based column (in characters), if known.
    pub fn column(&self) -> Option<usize> {
        self.location.map(|l| l.column)
    }
}

/// The 1-based line and character column of byte offset `offset` in `text`.
pub fn location_of(text: &str, offset: usize) -> Location {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parses and validates a configuration. `file` is only used in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| convert_error(text, file, &e))
}

fn convert_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    // Syntax errors come as several lines ("invalid table header\nexpected `.`, `]`"); one line
    // reads better after `file:line:col:`.
    let mut message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    message = friendlier(&message);
    if message.is_empty() {
        // The parser says nothing for a control character (e.g. in a comment): name it.
        message = match e
            .span()
            .and_then(|s| text.get(s.start..))
            .and_then(|t| t.chars().next())
        {
            Some(c) if c.is_control() => format!(
                "control character U+{:04X} is not allowed (not even in a comment)",
                u32::from(c)
            ),
            _ => "invalid TOML here".to_string(),
        };
    }
    let location = e.span().map(|span| location_of(text, span.start));
    if let Some(span) = e.span() {
        if message.contains("expected an array")
            && text
                .get(span.start..)
                .is_some_and(|t| t.starts_with("[uplink]"))
        {
            message = "`[uplink]` is a single table, but uplink rules are an array of tables: \
                       write `[[uplink]]`"
                .to_string();
        }
    }
    match e.span() {
        Some(span) => {
            if let Some(key) = key_before_value(text, span.start) {
                // An enum given a non-string: the parser only says "wanted string or table".
                if message == "wanted string or table" {
                    if let Some(words) = enum_words(key) {
                        message = format!("invalid type: expected a string: {words}");
                    }
                }
                message = format!("`{key}`: {message}");
            }
        }
        None => {
            // Without a span the parser still knows the key path; it only prints it in Display.
            let shown = e.to_string();
            if let Some(path) = shown
                .lines()
                .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
            {
                message = format!("`{path}`: {message}");
            }
        }
    }
    ConfigError {
        file: file.to_string(),
        location,
        message,
    }
}

/// The accepted words of the keys whose values are enums.
fn enum_words(key: &str) -> Option<&'static str> {
    Some(match key {
        "log_format" => "\"text\" or \"json\"",
        "order" => "\"static\", \"pref64\" or \"dns64\"",
        "ipv4_check" => "\"host\" or \"link\"",
        "fast_path" => "\"auto\", \"on\" or \"off\"",
        _ => return None,
    })
}

/// serde's words for TOML's things.
fn friendlier(message: &str) -> String {
    let mut m = message.replace("expected a sequence", "expected an array");
    for name in [
        "DaemonConfig",
        "DiscoveryConfig",
        "UplinkRule",
        "HooksConfig",
        "RouterConfig",
        "Config",
    ] {
        m = m.replace(&format!("expected struct {name}"), "expected a table");
    }
    m.replace("invalid type: map", "invalid type: table")
}

/// If byte `offset` lies in the value of a `key = value` line, the key (so that a message like
/// "invalid type: string, expected a boolean" says which key). None for offsets on keys or
/// headers, whose messages name the key already.
fn key_before_value(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let prefix = text.get(line_start..offset)?;
    let (key, _) = prefix.split_once('=')?;
    let key = key.trim();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\''));
    valid.then_some(key)
}

fn de_order<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PrefixSource>, D::Error> {
    use serde::de::Error;
    let order = Vec::<PrefixSource>::deserialize(d)?;
    if order.is_empty() {
        return Err(D::Error::custom(
            "must name at least one prefix source: `static`, `pref64`, `dns64`",
        ));
    }
    for (i, s) in order.iter().enumerate() {
        if order[..i].contains(s) {
            return Err(D::Error::custom(format!(
                "lists `{s}` twice; each of `static`, `pref64`, `dns64` may appear once"
            )));
        }
    }
    Ok(order)
}

fn de_glob<'de, D: Deserializer<'de>>(d: D) -> Result<MatchGlob, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    let glob = Glob::new(&s).map_err(|e| match e {
        GlobError::Empty => D::Error::custom(e),
        _ => D::Error::custom(format!("bad interface-name glob `{s}`: {e}")),
    })?;
    Ok(MatchGlob {
        text: s,
        glob: Some(glob),
    })
}

fn de_globs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MatchGlob>, D::Error> {
    use serde::de::Error;
    let texts = Vec::<String>::deserialize(d)?;
    if texts.is_empty() {
        return Err(D::Error::custom(
            "must name at least one downstream interface (a name or glob, e.g. \"br-lan\", \"virbr*\")",
        ));
    }
    texts
        .into_iter()
        .map(|s| {
            let glob = Glob::new(&s).map_err(|e| match e {
                GlobError::Empty => D::Error::custom("an empty interface-name glob"),
                _ => D::Error::custom(format!("bad interface-name glob `{s}`: {e}")),
            })?;
            Ok(MatchGlob {
                text: s,
                glob: Some(glob),
            })
        })
        .collect()
}

fn de_clat_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    crate::translator::args::parse_clat_prefix(&s).map_err(D::Error::custom)?;
    Ok(Some(s))
}

/// A rule's `match` glob, compiled once when the configuration is read.
#[derive(Debug, Clone)]
pub struct MatchGlob {
    text: String,
    /// `None` only for a glob made in code from text that does not compile: it matches nothing.
    glob: Option<Glob>,
}

impl MatchGlob {
    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the interface name `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.glob.as_ref().is_some_and(|g| g.matches(name))
    }
}

impl From<&str> for MatchGlob {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            glob: Glob::new(text).ok(),
        }
    }
}

impl PartialEq for MatchGlob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for MatchGlob {}

impl PartialEq<&str> for MatchGlob {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl std::fmt::Display for MatchGlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for MatchGlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

fn de_metric<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    struct Metric;
    impl serde::de::Visitor<'_> for Metric {
        type Value = u32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an integer from 1 to {}", u32::MAX)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u32, E> {
            match u32::try_from(n) {
                Ok(m) if m > 0 => Ok(m),
                _ => Err(E::custom(format!(
                    "{n} is out of range: expected an integer from 1 to {}",
                    u32::MAX
                ))),
            }
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u32, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_i64(Metric)
}

fn de_hook_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    if !s.starts_with('/') {
        return Err(D::Error::custom(format!(
            "`{s}` is not an absolute path (hooks are run without a shell or search path, \
             e.g. \"/etc/autoclat/hooks/up\")"
        )));
    }
    Ok(Some(s))
}

fn de_hook_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    let n = i64::deserialize(d)?;
    match u32::try_from(n) {
        Ok(t) if (1..=3600).contains(&t) => Ok(t),
        _ => Err(D::Error::custom(format!(
            "{n} is out of range: expected a number of seconds from 1 to 3600"
        ))),
    }
}

fn de_dns_servers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<std::net::IpAddr>, D::Error> {
    use serde::de::Error;
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|s| {
            s.parse().map_err(|_| {
                D::Error::custom(format!(
                    "`{s}` is not an IP address (expected e.g. \"2001:db8::53\" or \"192.0.2.53\")"
                ))
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rules and the effective policy

impl UplinkRule {
    /// Whether this rule's glob matches the interface name. A glob that does not compile
    /// (possible only for a rule built in code, never for a parsed one) matches nothing.
    pub fn matches(&self, ifname: &str) -> bool {
        self.match_glob.matches(ifname)
    }
}

impl Config {
    /// What `autoclat discover` uses for uplink `ifname`: the same rule lookup as the daemon
    /// (its `nat64_prefix`), the `[discovery]` order and servers.
    pub fn discover_options(&self, ifname: &str) -> crate::discovery::DiscoverOptions {
        crate::discovery::DiscoverOptions {
            order: self.discovery.order.clone(),
            static_prefix: self.rule_for(ifname).nat64_prefix,
            dns_servers: self.discovery.dns_servers.clone(),
            ..Default::default()
        }
    }

    /// The rule for an interface: the first `[[uplink]]` whose glob matches, else the defaults.
    pub fn rule_for(&self, ifname: &str) -> &UplinkRule {
        self.uplinks
            .iter()
            .find(|r| r.matches(ifname))
            .unwrap_or(&DEFAULT_RULE)
    }

    /// Whether `rule_for(ifname)` comes from an explicit rule (false: the built-in defaults).
    pub fn has_rule_for(&self, ifname: &str) -> bool {
        self.uplinks.iter().any(|r| r.matches(ifname))
    }

    /// The effective policy as TOML with every key spelt out, defaults included (for
    /// `autoclat check-config`). Parsing the result gives back this configuration.
    pub fn effective(&self) -> String {
        let mut out = String::new();
        let d = &self.daemon;
        out.push_str("[daemon]\n");
        push_kv(&mut out, "control_socket", &toml_str(&d.control_socket));
        push_kv(&mut out, "clatd_path", &toml_str(&d.clatd_path));
        if d.clatd_path.is_empty() {
            out.push_str("# clatd_path empty: the clatd installed beside autoclat\n");
        }
        push_kv(&mut out, "log_format", &enum_str(&d.log_format));

        out.push_str("\n[discovery]\n");
        let order: Vec<String> = self.discovery.order.iter().map(enum_str).collect();
        push_kv(&mut out, "order", &format!("[{}]", order.join(", ")));
        let servers: Vec<String> = self
            .discovery
            .dns_servers
            .iter()
            .map(|s| toml_str(&s.to_string()))
            .collect();
        push_kv(
            &mut out,
            "dns_servers",
            &format!("[{}]", servers.join(", ")),
        );
        if servers.is_empty() {
            out.push_str(
                "# dns_servers empty: RDNSS learnt on the uplink, then /etc/resolv.conf\n",
            );
        }

        out.push_str("\n[hooks]\n");
        let h = &self.hooks;
        for (key, path) in [("up", &h.up), ("down", &h.down)] {
            match path {
                Some(p) => push_kv(&mut out, key, &toml_str(p)),
                None => {
                    let _ = writeln!(out, "# {key} unset: nothing runs");
                }
            }
        }
        push_kv(&mut out, "timeout", &h.timeout.to_string());

        match &self.router {
            Some(r) => {
                out.push_str("\n[router]\n");
                let globs: Vec<String> =
                    r.downstream.iter().map(|g| toml_str(g.as_str())).collect();
                push_kv(&mut out, "downstream", &format!("[{}]", globs.join(", ")));
                match &r.clat_prefix {
                    Some(p) => {
                        push_kv(&mut out, "clat_prefix", &toml_str(p));
                        out.push_str(
                            "# mode: stateless (downstream addresses mapped into clat_prefix)\n",
                        );
                    }
                    None => out.push_str(
                        "# clat_prefix unset: NAT44 (masquerade to each CLAT's IPv4 address)\n",
                    ),
                }
            }
            None => out.push_str("\n# No [router]: nothing is forwarded through the CLATs\n"),
        }

        for rule in &self.uplinks {
            out.push_str("\n[[uplink]]\n");
            push_rule(&mut out, rule, "");
        }
        out.push_str(if self.uplinks.is_empty() {
            "\n# No [[uplink]] rules: every interface gets the defaults:\n"
        } else {
            "\n# Interfaces no rule above matches get the defaults:\n"
        });
        out.push_str("# [[uplink]]\n");
        push_rule(&mut out, &DEFAULT_RULE, "# ");
        out
    }
}

fn push_rule(out: &mut String, rule: &UplinkRule, comment: &str) {
    let mut kv = |k: &str, v: &str| {
        out.push_str(comment);
        push_kv(out, k, v);
    };
    kv("match", &toml_str(rule.match_glob.as_str()));
    kv("enable", &rule.enable.to_string());
    match &rule.nat64_prefix {
        Some(p) => kv("nat64_prefix", &toml_str(&p.to_string())),
        // Already a comment, whether or not the rule is commented out.
        None => out.push_str("# nat64_prefix unset: discovered as [discovery] order says\n"),
    }
    let mut kv = |k: &str, v: &str| {
        out.push_str(comment);
        push_kv(out, k, v);
    };
    kv("ipv4_check", &enum_str(&rule.ipv4_check));
    kv("route_metric", &rule.route_metric.to_string());
    kv("fast_path", &enum_str(&rule.fast_path));
}

fn push_kv(out: &mut String, key: &str, value: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key} = {value}");
}

/// A TOML basic string with the escapes TOML needs.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The serde name of a unit enum variant, quoted for TOML.
fn enum_str<T: Serialize>(v: &T) -> String {
    match toml::Value::try_from(v) {
        Ok(toml::Value::String(s)) => toml_str(&s),
        // Only unit enums reach here; they serialise to strings.
        _ => "\"?\"".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Interface-name globs

/// Why an interface-name glob does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The glob is the empty string, which would match no interface.
    #[error("an empty glob matches no interface (use `*` for every interface)")]
    Empty,
    /// `[` without its `]`.
    #[error("`[` at character {0} has no closing `]`")]
    UnclosedClass(usize),
    /// `[z-a]`.
    #[error("the range `{0}-{1}` is reversed")]
    ReversedRange(char, char),
    /// A lone `\` at the end.
    #[error("the glob ends with a lone `\\`")]
    TrailingEscape,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobToken {
    Literal(char),
    AnyOne,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled shell-style glob over interface names: `*` any run, `?` any one character,
/// `[abc]`, `[a-z]`, `[!a-z]` (also `[^...]`) classes (a `]` first in a class is literal), and
/// `\` to take the next character literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<GlobToken>,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&GlobToken::AnyRun) {
                        tokens.push(GlobToken::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(GlobToken::AnyOne);
                    i += 1;
                }
                '\\' => {
                    let c = *chars.get(i + 1).ok_or(GlobError::TrailingEscape)?;
                    tokens.push(GlobToken::Literal(c));
                    i += 2;
                }
                '[' => {
                    let start = i;
                    i += 1;
                    let negated = matches!(chars.get(i), Some('!' | '^'));
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let c = *chars.get(i).ok_or(GlobError::UnclosedClass(start + 1))?;
                        if c == ']' && !first {
                            i += 1;
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            i += 1;
                            *chars.get(i).ok_or(GlobError::UnclosedClass(start + 1))?
                        } else {
                            c
                        };
                        i += 1;
                        // `a-z`, but a `-` right before the closing `]` is literal.
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']')
                        {
                            let mut hi = chars[i + 1];
                            i += 2;
                            if hi == '\\' {
                                hi = *chars.get(i).ok_or(GlobError::UnclosedClass(start + 1))?;
                                i += 1;
                            }
                            if hi < lo {
                                return Err(GlobError::ReversedRange(lo, hi));
                            }
                            ranges.push((lo, hi));
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    tokens.push(GlobToken::Class { negated, ranges });
                }
                c => {
                    tokens.push(GlobToken::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Self { tokens })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut t, mut n) = (0, 0);
        // Where to resume after the last `*`: (token after it, name position it has eaten to).
        let mut resume: Option<(usize, usize)> = None;
        while n < name.len() {
            let step = match self.tokens.get(t) {
                Some(GlobToken::AnyRun) => {
                    resume = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(GlobToken::AnyOne) => true,
                Some(GlobToken::Literal(c)) => *c == name[n],
                Some(GlobToken::Class { negated, ranges }) => {
                    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&name[n])) != *negated
                }
                None => false,
            };
            if step {
                t += 1;
                n += 1;
            } else if let Some((rt, rn)) = resume {
                // Let the last `*` eat one more character and retry.
                t = rt;
                n = rn + 1;
                resume = Some((rt, rn + 1));
            } else {
                return false;
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == GlobToken::AnyRun)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn glob_basics() {
        assert!(g("*").matches("eth0"));
        assert!(g("*").matches(""));
        assert!(g("eth*").matches("eth0"));
        assert!(g("eth*").matches("eth"));
        assert!(!g("eth*").matches("wlan0"));
        assert!(g("eth?").matches("eth0"));
        assert!(!g("eth?").matches("eth10"));
        assert!(g("*0").matches("wlp0s20f0"));
        assert!(g("w*0*0").matches("wlp0s20f0"));
        assert!(!g("w*0*1").matches("wlp0s20f0"));
        assert!(g("eth[0-3]").matches("eth2"));
        assert!(!g("eth[0-3]").matches("eth4"));
        assert!(g("eth[!0-3]").matches("eth4"));
        assert!(g("eth[^0-3]").matches("eth4"));
        assert!(!g("eth[!0-3]").matches("eth1"));
        assert!(g("a[]]b").matches("a]b"));
        assert!(g("a[x-]").matches("a-"));
        assert!(g("a\\*").matches("a*"));
        assert!(!g("a\\*").matches("ab"));
        assert!(g("**a**").matches("xxaxx"));
        assert!(g("*.100").matches("eth0.100"));
        assert!(!g("eth0").matches("eth00"));
    }

    /// The backtracking matcher against a plain recursive one, over every pattern of up to 4
    /// tokens from {a, b, *, ?} and every name of up to 5 characters from {a, b}.
    #[test]
    fn glob_agrees_with_a_recursive_reference() {
        fn reference(p: &[char], n: &[char]) -> bool {
            match p.split_first() {
                None => n.is_empty(),
                Some(('*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
                Some(('?', rest)) => !n.is_empty() && reference(rest, &n[1..]),
                Some((c, rest)) => n.first() == Some(c) && reference(rest, &n[1..]),
            }
        }
        fn all(alphabet: &[char], max: usize) -> Vec<Vec<char>> {
            let mut out = vec![vec![]];
            let mut frontier = vec![vec![]];
            for _ in 0..max {
                let mut next = Vec::new();
                for w in &frontier {
                    for &c in alphabet {
                        let mut w2: Vec<char> = w.clone();
                        w2.push(c);
                        next.push(w2);
                    }
                }
                out.extend(next.iter().cloned());
                frontier = next;
            }
            out
        }
        let patterns = all(&['a', 'b', '*', '?'], 4);
        let names = all(&['a', 'b'], 5);
        let mut checked = 0;
        for p in patterns.iter().filter(|p| !p.is_empty()) {
            let glob = Glob::new(&p.iter().collect::<String>()).unwrap();
            for n in &names {
                let name: String = n.iter().collect();
                assert_eq!(
                    glob.matches(&name),
                    reference(p, n),
                    "pattern {p:?} name {name}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000);
    }

    #[test]
    fn glob_errors() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert_eq!(Glob::new("eth[0-"), Err(GlobError::UnclosedClass(4)));
        assert_eq!(Glob::new("eth[0"), Err(GlobError::UnclosedClass(4)));
        assert_eq!(Glob::new("eth[!]"), Err(GlobError::UnclosedClass(4)));
        assert_eq!(
            Glob::new("eth[9-0]"),
            Err(GlobError::ReversedRange('9', '0'))
        );
        assert_eq!(Glob::new("eth\\"), Err(GlobError::TrailingEscape));
    }

    #[test]
    fn location_counts_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(location_of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(location_of(text, 6), Location { line: 2, column: 1 });
        // 'é' is two bytes; the `=` after "bé " is the 4th character.
        assert_eq!(location_of(text, 10), Location { line: 2, column: 4 });
        assert_eq!(location_of(text, 1000), Location { line: 3, column: 1 });
    }

    /// Found by tests/fuzz_parsers.rs: a control character in a comment gave an error with
    /// an empty message (`file:24:90: `).
    #[test]
    fn a_control_character_is_named() {
        let e = parse("# a comment with \u{12} in it\n", "x.toml").unwrap_err();
        assert!(!e.message.is_empty(), "{e}");
        assert!(e.to_string().starts_with("x.toml:1:"), "{e}");
    }
}
