//! The TOML configuration: schema, defaults and validation. Pure: parsing takes text and a
//! file name, never opens files itself.

use serde::{Deserialize, Serialize};

use crate::discovery::{Nat64Prefix, PrefixSource};

/// The whole configuration file. Every key has a default, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub discovery: DiscoveryConfig,
    /// Rules, first match wins; no rule matching = [`UplinkRule::default`] applies.
    #[serde(rename = "uplink")]
    pub uplinks: Vec<UplinkRule>,
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
    pub order: Vec<PrefixSource>,
    /// Empty: RDNSS learnt on the uplink, then /etc/resolv.conf.
    pub dns_servers: Vec<std::net::IpAddr>,
}

/// One `[[uplink]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkRule {
    /// Interface-name glob (`*`, `?`, `[...]`).
    #[serde(rename = "match")]
    pub match_glob: String,
    pub enable: bool,
    pub nat64_prefix: Option<Nat64Prefix>,
    pub ipv4_check: Ipv4Check,
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

impl Default for Config {
    fn default() -> Self {
        Self {
            daemon: DaemonConfig::default(),
            discovery: DiscoveryConfig::default(),
            uplinks: Vec::new(),
        }
    }
}
