//! The eBPF tc programs (C in `clat.c`, built by build.rs) and their loader.
//!
//! Per CLAT on uplink U, [`ClatBpf::attach`] loads one private copy of the object (its own maps)
//! and attaches:
//! - `clat_ingress6` on U's tc ingress, always (the guard): IPv6 packets to the CLAT IPv6 address
//!   never reach the host's IPv6 stack. clatd reads them through its `ETH_P_ALL` packet socket,
//!   which sees frames before tc ingress. Neighbour discovery to the address passes. With the
//!   fast path on, plain TCP/UDP from a remote unicast IPv4 host under the NAT64 prefix is
//!   translated to IPv4 and redirected into `v4-U` as received traffic (the exact rule:
//!   [`fast_path_takes_ingress`]); all else to the address is dropped.
//! - `clat_egress4` on `v4-U`'s tc egress, only with the fast path on: plain TCP/UDP from the
//!   CLAT IPv4 address to a remote unicast address becomes IPv6 and leaves through U
//!   (`bpf_redirect_neigh` on Ethernet uplinks, which does the route and neighbour lookup and
//!   builds the Ethernet header); everything else goes on to clatd through the tun.
//!
//! Both take only what the userspace translator (`crate::xlat`) translates, to the same bytes;
//! everything else (TTL or hop limit 0, broadcast, multicast, loopback or our own addresses,
//! ICMP, fragments, options...) is left to clatd, which translates it, answers it with an ICMP
//! error or drops it. [`FastPathTestRun`] runs the programs on single packets
//! (`BPF_PROG_TEST_RUN`) for the differential test that checks this (netns-tests/bpf_parity.rs).
//!
//! With the fast path on, clatd still sees the eligible ingress packets on its packet socket:
//! it must skip exactly those for which [`fast_path_takes_ingress`] is true, or the host gets
//! each datagram twice (or, skipping more, never gets the Time Exceeded clatd would send). Its
//! receive filter (`crate::translator::rx_filter`) encodes the same rule in classic BPF.
//!
//! Attachment: TCX links on kernels ≥ 6.6 (no qdisc; the links are file descriptors owned by
//! this process, so they go away when it exits, even on a crash), else cls_bpf filters on a
//! clsact qdisc through netlink (these outlive the process: [`remove_leftovers`] removes them).
//! Nothing is pinned (`/sys/fs/bpf` is not mounted by default).
//!
//! Prefix lengths: all RFC 6052 lengths (32, 40, 48, 56, 64, 96) are handled by both programs.
//!
//! Stateless mode (RFC 6877 §6.3, [`ClatBpfConfig::clat_prefix`], a /64): the ingress program
//! also takes (guards and, with the fast path, translates) packets to addresses inside the CLAT
//! prefix, to the IPv4 address embedded in them (RFC 6052 /64 rule); the egress program also
//! translates packets from any other downstream unicast IPv4 source, from its embedding under
//! the CLAT prefix.

mod tc;
mod testrun;

pub use testrun::{FastPathTestRun, TcVerdict, TestRunOutcome};

use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, PerCpuArray};
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions, TcAttachType};
use aya::programs::{LinkOrder, SchedClassifier};
use aya::util::KernelVersion;
use aya::Ebpf;

use crate::nat64::Nat64Prefix;

/// The compiled object (empty when clang was missing at build time).
#[cfg_attr(autoclat_bpf_missing, allow(dead_code))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clat.bpf.o"));

const INGRESS_PROGRAM: &str = "clat_ingress6";
const EGRESS_PROGRAM: &str = "clat_egress4";
const CONFIG_MAP: &str = "clat_config";
const COUNTERS_MAP: &str = "clat_counters";

/// What the loader needs to know about one CLAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClatBpfConfig {
    /// The uplink U.
    pub uplink_ifindex: u32,
    /// The tun `v4-U`.
    pub tun_ifindex: u32,
    /// The CLAT IPv4 address (on `v4-U`).
    pub v4: Ipv4Addr,
    /// The CLAT IPv6 address (on U).
    pub v6: Ipv6Addr,
    /// The NAT64 prefix.
    pub prefix: Nat64Prefix,
    /// Stateless mode: the CLAT prefix, a /64 (`None`: only `v4`/`v6` are translated).
    pub clat_prefix: Option<Nat64Prefix>,
    /// Translate plain TCP/UDP in the kernel; off: only the ingress guard is attached.
    pub fast_path: bool,
    /// U has an Ethernet header (false: a raw-IP link such as a tun or WireGuard).
    pub uplink_is_ethernet: bool,
}

/// How to attach the tc programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// TCX on kernels ≥ 6.6, netlink (clsact + cls_bpf) before.
    #[default]
    Auto,
    /// TCX links (kernel ≥ 6.6).
    Tcx,
    /// cls_bpf filters on a clsact qdisc, through netlink (any kernel with clsact, ≥ 4.5).
    Netlink,
}

/// Packets and bytes the fast path translated, summed over CPUs. A GSO packet counts as the
/// number of segments it carries; bytes are IP bytes (header included) after translation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FastPathCounters {
    pub v6_to_v4_packets: u64,
    pub v6_to_v4_bytes: u64,
    pub v4_to_v6_packets: u64,
    pub v4_to_v6_bytes: u64,
    /// Packets to the CLAT IPv6 address kept from the host's stack without translation here
    /// (fast path off, or not eligible: clatd translates those).
    pub guard_drops: u64,
    /// Packets dropped because a helper failed half-way through a translation.
    pub errors: u64,
}

/// Why BPF could not be used; every message is a reason fit for `autoclat status`.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The object was not compiled into this build.
    #[error("fast path not built: {0}")]
    NotBuilt(String),
    /// Missing privileges.
    #[error("not permitted to use BPF ({0}): needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN")]
    Permission(String),
    /// The kernel refused the object or a program (verifier, missing helper, old kernel).
    #[error("the kernel refused the BPF programs: {0}")]
    Load(String),
    /// An interface index that does not name an interface in this namespace.
    #[error("interface index {ifindex} not found: {reason}")]
    NoInterface { ifindex: u32, reason: String },
    /// Attaching a program failed.
    #[error("attaching {program} to {iface} failed: {reason}")]
    Attach {
        program: &'static str,
        iface: String,
        reason: String,
    },
    /// Detaching or cleaning up failed (each failure listed).
    #[error("detaching BPF programs failed: {}", .0.join("; "))]
    Detach(Vec<String>),
    /// Reading or writing a BPF map failed.
    #[error("BPF map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    /// A tc netlink request failed.
    #[error("tc netlink request on interface {ifindex} failed: {reason}")]
    Netlink { ifindex: u32, reason: String },
    /// `BPF_PROG_TEST_RUN` failed.
    #[error("BPF test run of {0}")]
    TestRun(String),
}

/// The layout of `struct clat_config` in clat.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConfigRaw {
    v6: [u8; 16],
    prefix: [u8; 16],
    /// Network byte order, as in the packet.
    v4: u32,
    prefix_len: u32,
    tun_ifindex: u32,
    uplink_ifindex: u32,
    fast_path: u32,
    uplink_l2_len: u32,
    /// 0 in service (the tun carries bare IPv4); 14 under `BPF_PROG_TEST_RUN`.
    tun_l2_len: u32,
    /// Stateless mode: the CLAT prefix, host bits zero.
    clat_prefix: [u8; 16],
    /// 64 in stateless mode, 0: none.
    clat_prefix_len: u32,
}

// SAFETY: repr(C), fields are byte arrays and u32s with no padding (16+16+7*4+16+4 = 80 bytes,
// 4-aligned), so every bit pattern is valid and the value can be copied to and from the kernel.
unsafe impl aya::Pod for ConfigRaw {}

/// The layout of `struct clat_counters` in clat.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CountersRaw {
    v6_to_v4_packets: u64,
    v6_to_v4_bytes: u64,
    v4_to_v6_packets: u64,
    v4_to_v6_bytes: u64,
    guard_drops: u64,
    errors: u64,
}

// SAFETY: repr(C), six u64s with no padding; every bit pattern is a valid value.
unsafe impl aya::Pod for CountersRaw {}

impl ConfigRaw {
    fn new(cfg: &ClatBpfConfig) -> Self {
        Self {
            v6: cfg.v6.octets(),
            prefix: cfg.prefix.addr().octets(),
            v4: u32::from_ne_bytes(cfg.v4.octets()),
            prefix_len: u32::from(cfg.prefix.len()),
            tun_ifindex: cfg.tun_ifindex,
            uplink_ifindex: cfg.uplink_ifindex,
            fast_path: u32::from(cfg.fast_path),
            uplink_l2_len: if cfg.uplink_is_ethernet { 14 } else { 0 },
            tun_l2_len: 0,
            clat_prefix: cfg.clat_prefix.map_or([0; 16], |p| p.addr().octets()),
            clat_prefix_len: cfg.clat_prefix.map_or(0, |p| u32::from(p.len())),
        }
    }
}

fn sum_counters(per_cpu: &[CountersRaw]) -> FastPathCounters {
    per_cpu
        .iter()
        .fold(FastPathCounters::default(), |mut acc, c| {
            acc.v6_to_v4_packets = acc.v6_to_v4_packets.wrapping_add(c.v6_to_v4_packets);
            acc.v6_to_v4_bytes = acc.v6_to_v4_bytes.wrapping_add(c.v6_to_v4_bytes);
            acc.v4_to_v6_packets = acc.v4_to_v6_packets.wrapping_add(c.v4_to_v6_packets);
            acc.v4_to_v6_bytes = acc.v4_to_v6_bytes.wrapping_add(c.v4_to_v6_bytes);
            acc.guard_drops = acc.guard_drops.wrapping_add(c.guard_drops);
            acc.errors = acc.errors.wrapping_add(c.errors);
            acc
        })
}

/// Whether the ingress program, with the fast path on, translates this IPv6 packet itself (the
/// same rules as `clat_ingress6` in clat.c). clatd reads the same packets through its packet
/// socket and must skip exactly these when the fast path is on: skipping fewer, the host gets
/// them twice; skipping more, nobody translates them or answers them. `packet` starts at the
/// IPv6 header (and may carry link-layer padding after it).
///
/// The rule: to `v6`, TCP or UDP right after the IPv6 header, hop limit not 0 (clatd answers
/// those with Time Exceeded), source inside `prefix` with an embedded IPv4 address that is
/// remote unicast (not 0/8, 127/8, 224/4, 240/4 or `v4`), a payload length that fits the packet,
/// is at least a UDP (TCP) header and leaves the IPv4 packet within 65535 octets, and a UDP
/// checksum that is not zero. Every such packet is one `crate::xlat` translates.
///
/// In stateless mode (`clat_prefix`, a /64) the destination may also be an address inside the
/// CLAT prefix in the RFC 6052 format (u-octet and suffix zero) that embeds a downstream unicast
/// IPv4 address (`crate::xlat::is_downstream_unicast`) other than `v4`.
pub fn fast_path_takes_ingress(
    packet: &[u8],
    v6: Ipv6Addr,
    v4: Ipv4Addr,
    prefix: &Nat64Prefix,
    clat_prefix: Option<&Nat64Prefix>,
) -> bool {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return false;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&packet[24..40]);
    if dst != v6.octets() {
        let Some(cp) = clat_prefix.filter(|p| p.contains(Ipv6Addr::from(dst))) else {
            return false;
        };
        if dst[8] != 0 || dst[13..] != [0, 0, 0] {
            return false;
        }
        let dst4 = Nat64Prefix::extract_at(Ipv6Addr::from(dst), cp.len());
        if dst4 == v4 || !crate::xlat::is_downstream_unicast(dst4) {
            return false;
        }
    }
    let next = packet[6];
    if next != TCP && next != UDP {
        return false;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&packet[8..24]);
    if !prefix
        .extract(Ipv6Addr::from(src))
        .is_some_and(|a| crate::xlat::is_remote_unicast(a, v4))
    {
        return false;
    }
    if packet[7] == 0 {
        return false;
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if payload < 8 || 40 + payload > packet.len() || payload + 20 > 0xffff {
        return false;
    }
    match next {
        UDP => packet[46] != 0 || packet[47] != 0,
        _ => payload >= 20,
    }
}

/// The counters map of a loaded object, summed over CPUs.
fn read_counters(ebpf: &Ebpf) -> Result<FastPathCounters, BpfError> {
    let map_err = |reason: String| BpfError::Map {
        map: COUNTERS_MAP,
        reason,
    };
    let map = ebpf
        .map(COUNTERS_MAP)
        .ok_or_else(|| map_err("missing from the object".into()))?;
    let counters: PerCpuArray<_, CountersRaw> =
        PerCpuArray::try_from(map).map_err(|e| map_err(error_chain(&e)))?;
    let values = counters.get(&0, 0).map_err(|e| map_err(error_chain(&e)))?;
    Ok(sum_counters(&values))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

fn load_error(e: &(dyn std::error::Error + 'static)) -> BpfError {
    if is_eperm(e) {
        BpfError::Permission(error_chain(e))
    } else {
        BpfError::Load(error_chain(e))
    }
}

fn ifname(ifindex: u32) -> Result<String, BpfError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, the size if_indextoname writes at most (with the NUL).
    let ret = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if ret.is_null() {
        return Err(BpfError::NoInterface {
            ifindex,
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn load_object() -> Result<Ebpf, BpfError> {
    #[cfg(autoclat_bpf_missing)]
    return Err(BpfError::NotBuilt(env!("AUTOCLAT_BPF_MISSING").into()));
    #[cfg(not(autoclat_bpf_missing))]
    {
        // One loader for the process, without kernel BTF: the programs use no CO-RE
        // relocations, and `EbpfLoader::new` parses all of vmlinux's BTF (~5 MB) each time,
        // which was most of the ~50 ms every CLAT start spent loading the programs.
        static LOADER: std::sync::Mutex<Option<aya::EbpfLoader<'static>>> =
            std::sync::Mutex::new(None);
        let mut loader = LOADER.lock().unwrap_or_else(|e| e.into_inner());
        loader
            .get_or_insert_with(|| {
                let mut l = aya::EbpfLoader::new();
                l.btf(None);
                l
            })
            .load(OBJECT)
            .map_err(|e| load_error(&e))
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| BpfError::Load(format!("program {name} missing from the object")))?;
    prog.try_into().map_err(|e: aya::programs::ProgramError| {
        BpfError::Load(format!("{name}: {}", error_chain(&e)))
    })
}

/// One attachment made by [`ClatBpf`].
#[derive(Debug)]
struct Attached {
    program: &'static str,
    link: SchedClassifierLinkId,
    ifindex: u32,
    hook: TcAttachType,
}

/// The loaded programs and their attachments for one CLAT. Dropping it detaches everything
/// (errors are logged); [`ClatBpf::detach`] does the same and reports errors.
#[derive(Debug)]
pub struct ClatBpf {
    ebpf: Ebpf,
    fast_path: bool,
    uplink_ifindex: u32,
    tun_ifindex: u32,
    attached: Vec<Attached>,
    /// Interfaces on which this loader created the clsact qdisc (netlink mode only).
    created_clsact: Vec<u32>,
    /// Attached through netlink (cls_bpf on clsact) rather than TCX links.
    netlink: bool,
    done: bool,
}

impl ClatBpf {
    /// Loads the programs and attaches the ingress guard to the uplink, and with `fast_path` the
    /// egress translator to the tun. TCX on kernels ≥ 6.6, else netlink.
    pub fn attach(cfg: &ClatBpfConfig) -> Result<ClatBpf, BpfError> {
        Self::attach_with(cfg, AttachMode::Auto)
    }

    /// [`ClatBpf::attach`] with a chosen attachment method.
    pub fn attach_with(cfg: &ClatBpfConfig, mode: AttachMode) -> Result<ClatBpf, BpfError> {
        let netlink = match mode {
            AttachMode::Auto => !tcx_supported(),
            AttachMode::Tcx => false,
            AttachMode::Netlink => true,
        };
        let uplink_name = ifname(cfg.uplink_ifindex)?;
        let tun_name = if cfg.fast_path {
            Some(ifname(cfg.tun_ifindex)?)
        } else {
            None
        };

        let mut ebpf = load_object()?;
        {
            let map = ebpf.map_mut(CONFIG_MAP).ok_or_else(|| BpfError::Map {
                map: CONFIG_MAP,
                reason: "missing from the object".into(),
            })?;
            let mut config: Array<_, ConfigRaw> =
                Array::try_from(map).map_err(|e| BpfError::Map {
                    map: CONFIG_MAP,
                    reason: error_chain(&e),
                })?;
            config
                .set(0, ConfigRaw::new(cfg), 0)
                .map_err(|e| BpfError::Map {
                    map: CONFIG_MAP,
                    reason: error_chain(&e),
                })?;
        }
        for name in [INGRESS_PROGRAM, EGRESS_PROGRAM] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|e| match load_error(&e) {
                    BpfError::Load(r) => BpfError::Load(format!("{name}: {r}")),
                    other => other,
                })?;
        }

        let mut me = ClatBpf {
            ebpf,
            fast_path: cfg.fast_path,
            uplink_ifindex: cfg.uplink_ifindex,
            tun_ifindex: cfg.tun_ifindex,
            attached: Vec::new(),
            created_clsact: Vec::new(),
            netlink,
            done: false,
        };
        // On failure `me` is dropped, which undoes what was attached so far.
        me.attach_one(
            INGRESS_PROGRAM,
            cfg.uplink_ifindex,
            &uplink_name,
            TcAttachType::Ingress,
            netlink,
        )?;
        if let Some(tun_name) = tun_name {
            me.attach_one(
                EGRESS_PROGRAM,
                cfg.tun_ifindex,
                &tun_name,
                TcAttachType::Egress,
                netlink,
            )?;
        }
        tracing::info!(
            uplink = %uplink_name,
            fast_path = cfg.fast_path,
            method = if netlink { "netlink" } else { "tcx" },
            "BPF programs attached"
        );
        Ok(me)
    }

    fn attach_one(
        &mut self,
        program_name: &'static str,
        ifindex: u32,
        iface: &str,
        hook: TcAttachType,
        netlink: bool,
    ) -> Result<(), BpfError> {
        let attach_err = |reason: String| BpfError::Attach {
            program: program_name,
            iface: iface.to_owned(),
            reason,
        };
        let options = if netlink {
            let created = tc::add_clsact(ifindex)
                .map_err(|e| attach_err(format!("adding clsact qdisc: {e}")))?;
            if created {
                self.created_clsact.push(ifindex);
            }
            TcAttachOptions::Netlink(Default::default())
        } else {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        };
        let prog = program(&mut self.ebpf, program_name)?;
        let link = prog
            .attach_with_options(iface, hook, options)
            .map_err(|e| {
                if is_eperm(&e) {
                    BpfError::Permission(error_chain(&e))
                } else {
                    attach_err(error_chain(&e))
                }
            })?;
        self.attached.push(Attached {
            program: program_name,
            link,
            ifindex,
            hook,
        });
        Ok(())
    }

    /// The programs this loader attached that are no longer attached where it put them (a
    /// third party detached them, deleted the clsact qdisc, or the interface went away). Empty
    /// when everything is in place.
    pub fn missing_programs(&mut self) -> Result<Vec<&'static str>, BpfError> {
        let mut missing = Vec::new();
        let attached: Vec<(&'static str, u32, TcAttachType)> = self
            .attached
            .iter()
            .map(|a| (a.program, a.ifindex, a.hook))
            .collect();
        for (name, ifindex, hook) in attached {
            let present = if self.netlink {
                let tc_hook = match hook {
                    TcAttachType::Egress => tc::Hook::Egress,
                    _ => tc::Hook::Ingress,
                };
                match tc::filters(ifindex, tc_hook) {
                    Ok(filters) => filters.iter().any(|f| f.bpf_name.as_deref() == Some(name)),
                    Err(_) => false,
                }
            } else {
                let id = program(&mut self.ebpf, name)?
                    .info()
                    .map_err(|e| BpfError::Load(format!("{name}: {}", error_chain(&e))))?
                    .id();
                // Only what the kernel says counts: a query we may not make (or that fails)
                // proves nothing, so the program is taken to be there.
                tcx_program_ids(ifindex, hook).map_or(true, |ids| ids.contains(&id))
            };
            if !present {
                missing.push(name);
            }
        }
        Ok(missing)
    }

    /// The fast path's counters, summed over CPUs.
    pub fn counters(&self) -> Result<FastPathCounters, BpfError> {
        read_counters(&self.ebpf)
    }

    /// Whether the egress translator is attached and the ingress program translates.
    pub fn fast_path(&self) -> bool {
        self.fast_path
    }

    /// The uplink the guard sits on.
    pub fn uplink_ifindex(&self) -> u32 {
        self.uplink_ifindex
    }

    /// The tun the egress program sits on (if the fast path is on).
    pub fn tun_ifindex(&self) -> u32 {
        self.tun_ifindex
    }

    /// Detaches everything this loader attached and removes a clsact qdisc it created (only if
    /// no filter of anyone else is left on it). Every step is tried; failures are collected.
    /// With netlink attachment, call it in the network namespace `attach` ran in (netlink
    /// requests address interfaces by index in the caller's namespace); TCX links do not care.
    pub fn detach(mut self) -> Result<(), BpfError> {
        let errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BpfError::Detach(errors))
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut errors = Vec::new();
        for Attached {
            program: name,
            link,
            ..
        } in std::mem::take(&mut self.attached).into_iter().rev()
        {
            match program(&mut self.ebpf, name) {
                Ok(prog) => {
                    if let Err(e) = prog.detach(link) {
                        errors.push(format!("{name}: {}", error_chain(&e)));
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        for ifindex in std::mem::take(&mut self.created_clsact) {
            if let Err(e) = remove_clsact_if_unused(ifindex) {
                errors.push(e.to_string());
            }
        }
        errors
    }
}

impl Drop for ClatBpf {
    fn drop(&mut self) {
        for e in self.teardown() {
            tracing::warn!(error = %e, "BPF teardown");
        }
    }
}

/// Deletes the clsact qdisc of `ifindex` if no filter is left on either hook. A missing link or
/// qdisc is not an error.
fn remove_clsact_if_unused(ifindex: u32) -> Result<(), BpfError> {
    let nl = |e: std::io::Error| BpfError::Netlink {
        ifindex,
        reason: e.to_string(),
    };
    let gone = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::EINVAL)
        )
    };
    let mut in_use = false;
    for hook in [tc::Hook::Ingress, tc::Hook::Egress] {
        match tc::filters(ifindex, hook) {
            Ok(f) => in_use |= !f.is_empty(),
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(nl(e)),
        }
    }
    if in_use {
        tracing::info!(ifindex, "clsact qdisc kept: other filters use it");
        return Ok(());
    }
    match tc::del_clsact(ifindex) {
        Ok(()) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

/// The ids of the programs attached by TCX to `ifindex`'s hook (see [`tcx_attached`]).
fn tcx_program_ids(ifindex: u32, hook: TcAttachType) -> std::io::Result<Vec<u32>> {
    tcx_attached(ifindex, hook == TcAttachType::Egress).map(|a| a.prog_ids)
}

/// What TCX has attached to one hook of an interface, in the kernel's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcxAttached {
    pub prog_ids: Vec<u32>,
    /// The `bpf_link` of each program (0 for one attached without a link).
    pub link_ids: Vec<u32>,
}

/// The programs and links attached by TCX to `ifindex`'s ingress (or `egress`) hook
/// (`BPF_PROG_QUERY`, which needs only CAP_NET_ADMIN; aya's `query_tcx` also opens each
/// program by id, which needs CAP_SYS_ADMIN). `Err` for a query the kernel refused, e.g. for
/// a vanished interface.
pub fn tcx_attached(ifindex: u32, egress: bool) -> std::io::Result<TcxAttached> {
    /// `union bpf_attr` as `BPF_PROG_QUERY` reads it (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    let mut progs = [0u32; 64];
    let mut links = [0u32; 64];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: if egress {
            BPF_TCX_EGRESS
        } else {
            BPF_TCX_INGRESS
        },
        prog_ids: progs.as_mut_ptr() as u64,
        prog_cnt: progs.len() as u32,
        link_ids: links.as_mut_ptr() as u64,
        ..QueryAttr::default()
    };
    // SAFETY: `attr` is a valid, zero-padded BPF_PROG_QUERY request whose `prog_ids` and
    // `link_ids` point at `progs` and `links`, which have room for `prog_cnt` entries each and
    // outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            std::mem::size_of::<QueryAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = (attr.prog_cnt as usize).min(progs.len());
    Ok(TcxAttached {
        prog_ids: progs[..n].to_vec(),
        link_ids: links[..n].to_vec(),
    })
}

/// Removes what a crashed autoclat can have left on `ifindex`.
///
/// TCX links (kernels ≥ 6.6) are file descriptors of the loader process: the kernel detaches
/// them when the process dies, so nothing of them leaks. With netlink attachment (older kernels,
/// or [`AttachMode::Netlink`]) the cls_bpf filters and the clsact qdisc outlive the process; this
/// deletes the filters whose program is ours (`clat_ingress6`, `clat_egress4`) and then the clsact
/// qdisc if no other filter is left on it. A clsact qdisc with someone else's filters stays.
/// (`v4-U` tuns vanish with their filters when the controller deletes them.)
pub fn remove_leftovers(ifindex: u32) -> Result<(), BpfError> {
    let nl = |e: std::io::Error| BpfError::Netlink {
        ifindex,
        reason: e.to_string(),
    };
    if !tc::has_clsact(ifindex).map_err(nl)? {
        return Ok(());
    }
    let mut removed = false;
    for hook in [tc::Hook::Ingress, tc::Hook::Egress] {
        for filter in tc::filters(ifindex, hook).map_err(nl)? {
            let ours = filter
                .bpf_name
                .as_deref()
                .is_some_and(|n| n == INGRESS_PROGRAM || n == EGRESS_PROGRAM);
            if ours {
                tc::del_filter(ifindex, hook, &filter).map_err(nl)?;
                removed = true;
            }
        }
    }
    if removed {
        tracing::info!(ifindex, "removed leftover autoclat tc filters");
        // Only a qdisc that carried our filters is taken to be ours.
        remove_clsact_if_unused(ifindex)?;
    }
    Ok(())
}

/// Whether this host can load and attach the fast path: the object was built, the process has
/// CAP_NET_ADMIN (for attaching) and the kernel accepts both programs (privileges for BPF, the
/// verifier, the helpers used: `bpf_redirect_neigh` needs 5.10, `bpf_check_mtu` 5.12). Loads
/// the programs and unloads them; attaches nothing.
pub fn probe() -> Result<(), BpfError> {
    #[cfg(autoclat_bpf_missing)]
    return Err(BpfError::NotBuilt(env!("AUTOCLAT_BPF_MISSING").into()));
    #[cfg(not(autoclat_bpf_missing))]
    probe_built()
}

#[cfg(not(autoclat_bpf_missing))]
fn probe_built() -> Result<(), BpfError> {
    if !has_net_admin() {
        return Err(BpfError::Permission(
            "the process lacks CAP_NET_ADMIN, needed to attach tc programs".into(),
        ));
    }
    let mut ebpf = load_object()?;
    for name in [INGRESS_PROGRAM, EGRESS_PROGRAM] {
        program(&mut ebpf, name)?
            .load()
            .map_err(|e| match load_error(&e) {
                BpfError::Load(r) => BpfError::Load(format!("{name}: {r}")),
                other => other,
            })?;
    }
    Ok(())
}

/// CAP_NET_ADMIN (bit 12) in the effective set, from /proc/self/status.
#[cfg(not(autoclat_bpf_missing))]
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> ClatBpfConfig {
        ClatBpfConfig {
            uplink_ifindex: 3,
            tun_ifindex: 7,
            v4: Ipv4Addr::new(192, 0, 0, 4),
            v6: "2001:db8:1::a".parse().unwrap(),
            prefix: "2001:db8:64::/96".parse().unwrap(),
            clat_prefix: None,
            fast_path: true,
            uplink_is_ethernet: true,
        }
    }

    #[test]
    fn config_layout_matches_c() {
        assert_eq!(std::mem::size_of::<ConfigRaw>(), 80);
        assert_eq!(std::mem::size_of::<CountersRaw>(), 48);
        let raw = ConfigRaw::new(&cfg());
        assert_eq!(raw.v4.to_ne_bytes(), [192, 0, 0, 4]);
        assert_eq!(raw.prefix[..6], [0x20, 0x01, 0x0d, 0xb8, 0, 0x64]);
        assert_eq!(raw.prefix_len, 96);
        assert_eq!(raw.uplink_l2_len, 14);
        assert_eq!(raw.fast_path, 1);
        assert_eq!(raw.tun_l2_len, 0, "in service the tun carries bare IPv4");
        let raw = ConfigRaw::new(&ClatBpfConfig {
            uplink_is_ethernet: false,
            fast_path: false,
            ..cfg()
        });
        assert_eq!((raw.uplink_l2_len, raw.fast_path), (0, 0));
        assert_eq!((raw.clat_prefix, raw.clat_prefix_len), ([0; 16], 0));
        let raw = ConfigRaw::new(&ClatBpfConfig {
            clat_prefix: Some("2001:db8:1:ff00::/64".parse().unwrap()),
            ..cfg()
        });
        assert_eq!(
            raw.clat_prefix[..8],
            [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0xff, 0]
        );
        assert_eq!(raw.clat_prefix[8..], [0; 8]);
        assert_eq!(raw.clat_prefix_len, 64);
    }

    /// Stateless mode: packets to a downstream host's address inside the CLAT prefix.
    #[test]
    fn ingress_eligibility_in_stateless_mode() {
        let c = cfg();
        let cp: Nat64Prefix = "2001:db8:1:ff00::/64".parse().unwrap();
        let take = |p: &[u8]| fast_path_takes_ingress(p, c.v6, c.v4, &c.prefix, Some(&cp));
        let from = "2001:db8:64::cb00:710a";
        let lan = cp.embed(Ipv4Addr::new(198, 51, 100, 23)).to_string();
        assert!(take(&udp6(from, &lan, 17, 1, 8)));
        assert!(take(&udp6(from, &lan, 6, 1, 20)));
        // The CLAT's own address still works.
        assert!(take(&udp6(from, "2001:db8:1::a", 17, 1, 8)));
        // Without the prefix, not ours.
        let p = udp6(from, &lan, 17, 1, 8);
        assert!(!fast_path_takes_ingress(&p, c.v6, c.v4, &c.prefix, None));
        // Not in the RFC 6052 format, not downstream unicast, our own IPv4 address, outside.
        for dst in [
            "2001:db8:1:ff00:1c6:3364:1700:0",
            "2001:db8:1:ff00:c6:3364:1700:1",
            "2001:db8:1:ff00:c6:3364:17ff:ffff",
        ] {
            assert!(!take(&udp6(from, dst, 17, 1, 8)), "{dst}");
        }
        for a in [
            "127.0.0.1",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.0.4",
        ] {
            let dst = cp.embed(a.parse().unwrap()).to_string();
            assert!(!take(&udp6(from, &dst, 17, 1, 8)), "{a}");
        }
        assert!(!take(&udp6(
            from,
            "2001:db8:1:fe00:c6:3364:1700:0",
            17,
            1,
            8
        )));
        // The source rules still hold: our own address embedded, hop limit 0, zero checksum.
        let ours = c.prefix.embed(c.v4).to_string();
        assert!(!take(&udp6(&ours, &lan, 17, 1, 8)));
        let mut p = udp6(from, &lan, 17, 1, 8);
        p[7] = 0;
        assert!(!take(&p));
        assert!(!take(&udp6(from, &lan, 17, 0, 8)));
    }

    #[test]
    fn counters_sum_over_cpus() {
        let a = CountersRaw {
            v6_to_v4_packets: 1,
            v6_to_v4_bytes: 100,
            v4_to_v6_packets: 2,
            v4_to_v6_bytes: 200,
            guard_drops: 3,
            errors: 0,
        };
        let s = sum_counters(&[a, a, CountersRaw::default()]);
        assert_eq!(s.v6_to_v4_packets, 2);
        assert_eq!(s.v4_to_v6_bytes, 400);
        assert_eq!(s.guard_drops, 6);
    }

    fn udp6(src: &str, dst: &str, next: u8, check: u16, payload_len: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40 + usize::from(payload_len)];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        if payload_len >= 8 {
            p[46..48].copy_from_slice(&check.to_be_bytes());
        }
        p
    }

    #[test]
    fn ingress_eligibility_mirrors_the_program() {
        let c = cfg();
        let take = |p: &[u8]| fast_path_takes_ingress(p, c.v6, c.v4, &c.prefix, None);
        let from = "2001:db8:64::c633:640a";
        assert!(take(&udp6(from, "2001:db8:1::a", 17, 0x1234, 12)));
        assert!(take(&udp6(from, "2001:db8:1::a", 6, 0, 20)));
        // Zero UDP checksum, ICMPv6, fragment header, other destination, outside the prefix,
        // truncated, short TCP.
        assert!(!take(&udp6(from, "2001:db8:1::a", 17, 0, 12)));
        assert!(!take(&udp6(from, "2001:db8:1::a", 58, 1, 12)));
        assert!(!take(&udp6(from, "2001:db8:1::a", 44, 1, 12)));
        assert!(!take(&udp6(from, "2001:db8:1::b", 17, 1, 12)));
        assert!(!take(&udp6("2001:db8:65::1", "2001:db8:1::a", 17, 1, 12)));
        let mut truncated = udp6(from, "2001:db8:1::a", 17, 1, 12);
        truncated.truncate(50);
        assert!(!take(&truncated));
        assert!(!take(&udp6(from, "2001:db8:1::a", 6, 0, 12)));
        // Link-layer padding after the packet is fine.
        let mut padded = udp6(from, "2001:db8:1::a", 17, 1, 8);
        padded.extend_from_slice(&[0; 10]);
        assert!(take(&padded));
    }

    /// Issue 9 §3: embedded IPv4 sources the userspace translator refuses, and hop limit 0
    /// (clatd answers Time Exceeded), are not the fast path's.
    #[test]
    fn ingress_refuses_what_userspace_refuses() {
        let c = cfg();
        let take = |p: &[u8]| fast_path_takes_ingress(p, c.v6, c.v4, &c.prefix, None);
        for refused in [
            "127.0.0.53",
            "127.0.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.251",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.4",
        ] {
            let a: Ipv4Addr = refused.parse().unwrap();
            let src = c.prefix.embed(a).to_string();
            assert!(!take(&udp6(&src, "2001:db8:1::a", 17, 1, 8)), "{refused}");
            assert!(!take(&udp6(&src, "2001:db8:1::a", 6, 1, 20)), "{refused}");
        }
        for accepted in [
            "198.51.100.10",
            "1.0.0.1",
            "126.255.255.255",
            "223.255.255.254",
        ] {
            let a: Ipv4Addr = accepted.parse().unwrap();
            let src = c.prefix.embed(a).to_string();
            assert!(take(&udp6(&src, "2001:db8:1::a", 17, 1, 8)), "{accepted}");
        }
        let from = "2001:db8:64::c633:640a";
        let mut p = udp6(from, "2001:db8:1::a", 17, 1, 8);
        p[7] = 0;
        assert!(!take(&p), "hop limit 0");
        p[7] = 1;
        assert!(take(&p), "hop limit 1 is translated");
        // A payload that would make the IPv4 packet longer than 65535 octets.
        let big = udp6(from, "2001:db8:1::a", 17, 1, 65535 - 19);
        assert!(!take(&big));
        let fits = udp6(from, "2001:db8:1::a", 17, 1, 65535 - 20);
        assert!(take(&fits));
    }

    #[test]
    fn ingress_eligibility_at_every_prefix_length() {
        let v4 = Ipv4Addr::new(198, 51, 100, 10);
        for prefix in [
            "2001:db8::/32",
            "2001:db8:100::/40",
            "2001:db8:122::/48",
            "2001:db8:122:300::/56",
            "2001:db8:122:344::/64",
            "2001:db8:122:344::/96",
        ] {
            let prefix: Nat64Prefix = prefix.parse().unwrap();
            let src = prefix.embed(v4).to_string();
            let p = udp6(&src, "2001:db8:1::a", 17, 1, 8);
            assert!(
                fast_path_takes_ingress(&p, cfg().v6, cfg().v4, &prefix, None),
                "{prefix}"
            );
            let p = udp6("2001:db9::1", "2001:db8:1::a", 17, 1, 8);
            assert!(
                !fast_path_takes_ingress(&p, cfg().v6, cfg().v4, &prefix, None),
                "{prefix}"
            );
            let ours = prefix.embed(cfg().v4).to_string();
            let p = udp6(&ours, "2001:db8:1::a", 17, 1, 8);
            assert!(
                !fast_path_takes_ingress(&p, cfg().v6, cfg().v4, &prefix, None),
                "{prefix}"
            );
        }
    }

    #[test]
    fn object_is_embedded() {
        #[cfg(not(autoclat_bpf_missing))]
        assert!(OBJECT.starts_with(b"\x7fELF"));
    }
}
