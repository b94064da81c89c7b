//! Router mode (`[router]`): the pieces that forward the IPv4 of downstream interfaces (a LAN
//! bridge, `docker0`, `virbr0`) through the CLATs, owned and repaired like a CLAT's own:
//!
//! - IPv4 forwarding (`net.ipv4.conf.<if>.forwarding = 1`) on each downstream interface and
//!   each CLAT tun, changed through the crash-safe [`Journal`] (the original comes back on
//!   stop, or at the next start after a kill);
//! - the nftables table `ip autoclat` ([`crate::nft`]): masquerading to each CLAT's IPv4
//!   address (NAT44; not in stateless mode, where the CLATs map each downstream address into
//!   `clat_prefix`), TCP MSS clamped to the route MTU, and the counters of forwarded traffic.
//!   It is created and removed as a unit and never touches another table.
//!
//! What is wanted is a pure function of the configuration, the links and the running CLATs
//! ([`want`]); [`Router::reconcile`] brings the host in line and counts what a third party
//! undid as a repair.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::RouterConfig;
use crate::control::{RouterCounters, RouterStatus};
use crate::nft;

use super::restore::{Journal, RestoreError};

/// Why a router piece could not be put in place or taken away.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("IPv4 forwarding on {iface}: {source}")]
    Forwarding {
        iface: String,
        #[source]
        source: RestoreError,
    },
    #[error("nftables table `autoclat`: {0}")]
    Table(#[from] nft::NftError),
}

/// What router mode wants on the host now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterWant {
    /// The downstream interfaces that exist.
    pub downstream: BTreeSet<String>,
    /// Each running CLAT's tun and IPv4 address.
    pub clats: BTreeMap<String, Ipv4Addr>,
    /// Stateless mode (`clat_prefix`): the CLATs map downstream addresses themselves, nothing
    /// is masqueraded.
    pub stateless: bool,
}

impl RouterWant {
    /// Anything to do: a downstream interface and a CLAT to forward through.
    pub fn active(&self) -> bool {
        !self.downstream.is_empty() && !self.clats.is_empty()
    }

    /// The interfaces that need IPv4 forwarding: packets are forwarded when the interface
    /// they arrive on allows it, downstream ones on the way out and the tuns on the way back.
    pub fn forwarding(&self) -> BTreeSet<String> {
        if !self.active() {
            return BTreeSet::new();
        }
        self.downstream
            .iter()
            .chain(self.clats.keys())
            .cloned()
            .collect()
    }

    /// The nftables table for this.
    pub fn table(&self) -> nft::Spec {
        nft::Spec {
            downstream: self.downstream.iter().cloned().collect(),
            clats: self
                .clats
                .iter()
                .map(|(tun, v4)| nft::ClatOut {
                    tun: tun.clone(),
                    masquerade_from_not: (!self.stateless).then_some(*v4),
                })
                .collect(),
        }
    }
}

/// What router mode wants, from the configuration, the names of the host's links and the
/// running CLATs (tun, IPv4 address). A CLAT's own tun is never downstream, even when a glob
/// would match it.
pub fn want<'a>(
    cfg: &RouterConfig,
    links: impl IntoIterator<Item = &'a str>,
    clats: impl IntoIterator<Item = (String, Ipv4Addr)>,
) -> RouterWant {
    let clats: BTreeMap<String, Ipv4Addr> = clats.into_iter().collect();
    let downstream = links
        .into_iter()
        .filter(|name| cfg.is_downstream(name) && !clats.contains_key(*name))
        .map(str::to_string)
        .collect();
    RouterWant {
        downstream,
        clats,
        stateless: cfg.clat_prefix.is_some(),
    }
}

/// `/proc/sys/net/ipv4/conf/<iface>/forwarding`.
pub fn forwarding_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
}

/// The router pieces on the host and what is known about them.
#[derive(Debug, Default)]
pub struct Router {
    /// What the table holds (`None`: no table of ours).
    applied: Option<RouterWant>,
    /// Interfaces whose forwarding we switched on (or found on) and keep on.
    forwarding: BTreeSet<String>,
    /// Pieces put back after someone else removed or changed them.
    repairs: u64,
    /// The last failure, shown in `status` until a reconcile succeeds.
    error: Option<String>,
}

impl Router {
    /// Brings the host in line with `want`, through `journal` for the sysctls. Returns a line
    /// for each repair (a piece that was in place and is gone); failures are kept for
    /// `status` and returned.
    pub fn reconcile(
        &mut self,
        want: &RouterWant,
        journal: &Mutex<Journal>,
    ) -> Result<Vec<String>, RouterError> {
        let result = self.reconcile_inner(want, journal);
        self.error = result.as_ref().err().map(ToString::to_string);
        if let Ok(repaired) = &result {
            self.repairs += repaired.len() as u64;
        }
        result
    }

    fn reconcile_inner(
        &mut self,
        want: &RouterWant,
        journal: &Mutex<Journal>,
    ) -> Result<Vec<String>, RouterError> {
        let mut repaired = Vec::new();
        let forwarding = want.forwarding();
        {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            for iface in &forwarding {
                let path = forwarding_path(iface);
                let changed =
                    journal
                        .set_sysctl(&path, "1")
                        .map_err(|source| RouterError::Forwarding {
                            iface: iface.clone(),
                            source,
                        })?;
                if changed.is_some() && self.forwarding.contains(iface) {
                    repaired.push(format!("IPv4 forwarding on {iface} switched on again"));
                }
                self.forwarding.insert(iface.clone());
            }
            let gone: Vec<String> = self.forwarding.difference(&forwarding).cloned().collect();
            for iface in gone {
                self.forwarding.remove(&iface);
                restore_forwarding(&mut journal, &iface)?;
            }
        }
        if !want.active() {
            if self.applied.take().is_some() {
                nft::remove()?;
            }
            return Ok(repaired);
        }
        if self.applied.as_ref() == Some(want) {
            if nft::exists()? {
                return Ok(repaired);
            }
            repaired.push(format!("nftables table `{}` put back", nft::TABLE));
        }
        nft::apply(&want.table())?;
        self.applied = Some(want.clone());
        Ok(repaired)
    }

    /// Whether a piece we put in place is gone: the table deleted, or forwarding switched off
    /// on an interface. Both changes wake the daemon through `watch::routerwatch`; each
    /// `status` request looks too, so that it never shows pieces that are gone (where the
    /// watch could not be set up, or before its event arrived).
    pub fn needs_repair(&self) -> bool {
        let forwarding_off = self.forwarding.iter().any(|iface| {
            std::fs::read_to_string(forwarding_path(iface)).is_ok_and(|v| v.trim() != "1")
        });
        forwarding_off || (self.applied.is_some() && !nft::exists().unwrap_or(true))
    }

    /// Takes every piece away: the table, then forwarding back to its original values.
    /// Every failure is returned; none stops the others.
    pub fn teardown(&mut self, journal: &Mutex<Journal>) -> Vec<RouterError> {
        let mut errors = Vec::new();
        if self.applied.take().is_some() {
            if let Err(e) = nft::remove() {
                errors.push(e.into());
            }
        }
        let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
        for iface in std::mem::take(&mut self.forwarding) {
            if let Err(e) = restore_forwarding(&mut journal, &iface) {
                errors.push(e);
            }
        }
        errors
    }

    /// The `status` view: the mode, the downstream interfaces, the table and the counters of
    /// forwarded traffic per tun (read from the table).
    pub fn status(&self, want: &RouterWant) -> RouterStatus {
        let table = self.applied.is_some() && nft::exists().unwrap_or(false);
        let counters = if table {
            nft::counters().unwrap_or_default()
        } else {
            Default::default()
        };
        RouterStatus {
            mode: if want.stateless { "stateless" } else { "nat44" }.to_string(),
            downstream: want.downstream.iter().cloned().collect(),
            forwarding: self.forwarding.iter().cloned().collect(),
            table,
            forwarded: counters
                .into_iter()
                .map(|(tun, c)| RouterCounters {
                    tun,
                    out_packets: c.out_packets,
                    out_bytes: c.out_bytes,
                    in_packets: c.in_packets,
                    in_bytes: c.in_bytes,
                })
                .collect(),
            repairs: self.repairs,
            error: self.error.clone(),
        }
    }
}

fn restore_forwarding(journal: &mut Journal, iface: &str) -> Result<(), RouterError> {
    journal
        .restore(Path::new(&forwarding_path(iface)), "1")
        .map_err(|source| RouterError::Forwarding {
            iface: iface.to_string(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(globs: &str) -> RouterConfig {
        crate::config::parse(&format!("[router]\ndownstream = {globs}\n"), "t.toml")
            .unwrap()
            .router
            .unwrap()
    }

    #[test]
    fn downstream_interfaces_are_the_existing_matches_never_a_clat_tun() {
        let c = cfg(r#"["br-lan", "virbr*", "*"]"#);
        let w = want(
            &c,
            ["br-lan", "virbr0", "eth0", "v4-eth0"],
            [("v4-eth0".to_string(), Ipv4Addr::new(192, 0, 0, 4))],
        );
        assert_eq!(
            w.downstream.iter().map(String::as_str).collect::<Vec<_>>(),
            ["br-lan", "eth0", "virbr0"]
        );
        assert!(w.active());
        assert_eq!(
            w.forwarding().into_iter().collect::<Vec<_>>(),
            ["br-lan", "eth0", "v4-eth0", "virbr0"]
        );
        let t = w.table();
        assert_eq!(t.clats.len(), 1);
        assert_eq!(
            t.clats[0].masquerade_from_not,
            Some(Ipv4Addr::new(192, 0, 0, 4))
        );
    }

    #[test]
    fn nothing_is_wanted_without_a_downstream_interface_or_a_clat() {
        let c = cfg(r#"["docker0"]"#);
        let none_down = want(
            &c,
            ["eth0", "v4-eth0"],
            [("v4-eth0".to_string(), Ipv4Addr::new(192, 0, 0, 4))],
        );
        assert!(!none_down.active());
        assert!(none_down.forwarding().is_empty());
        let no_clat = want(&c, ["docker0", "eth0"], []);
        assert!(!no_clat.active());
        assert!(no_clat.forwarding().is_empty());
    }

    #[test]
    fn the_forwarding_sysctl_path_is_per_interface() {
        assert_eq!(
            forwarding_path("br-lan"),
            PathBuf::from("/proc/sys/net/ipv4/conf/br-lan/forwarding")
        );
    }

    #[test]
    fn stateless_mode_masquerades_nothing() {
        let c = crate::config::parse(
            "[router]\ndownstream = [\"br-lan\"]\nclat_prefix = \"2001:db8:5::/64\"\n",
            "t.toml",
        )
        .unwrap()
        .router
        .unwrap();
        let w = want(
            &c,
            ["br-lan", "v4-eth0"],
            [("v4-eth0".to_string(), Ipv4Addr::new(192, 0, 0, 4))],
        );
        assert!(w.stateless && w.active());
        assert_eq!(w.table().clats[0].masquerade_from_not, None);
        // The same without clat_prefix masquerades.
        let nat = want(
            &cfg(r#"["br-lan"]"#),
            ["br-lan", "v4-eth0"],
            [("v4-eth0".to_string(), Ipv4Addr::new(192, 0, 0, 4))],
        );
        assert!(!nat.stateless);
    }
}
