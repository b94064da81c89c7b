//! The fast path's programs run on single packets with `BPF_PROG_TEST_RUN`, attached nowhere:
//! the differential test against the userspace translator (netns-tests/bpf_parity.rs) uses it.
//!
//! The kernel frames every test packet of a tc program in Ethernet: it parses the first 14
//! octets with `eth_type_trans` to set `skb->protocol`, whatever device the program would sit
//! on. So the programs are loaded with a configuration that expects an Ethernet header in front
//! of the packet on both sides (`tun_l2_len` = 14, which is 0 in service, and an Ethernet
//! uplink); the code that runs is the code that runs in service. A run returns the program's
//! verdict and the packet as the program left it; a redirect is only reported
//! (`TC_ACT_REDIRECT`), never carried out. `bpf_check_mtu` looks the uplink up by index in the
//! caller's network namespace: run the programs where `uplink_ifindex` names the uplink.

use aya::{Ebpf, TestRun, TestRunOptions};

use super::{
    error_chain, load_error, load_object, program, read_counters, BpfError, ClatBpfConfig,
    ConfigRaw, FastPathCounters, CONFIG_MAP, EGRESS_PROGRAM, INGRESS_PROGRAM,
};

/// Ethernet header length.
const ETH_HLEN: usize = 14;
/// The largest frame a run can return: an IPv4 packet of 64 KiB grown by translation and two
/// Ethernet headers, with room to spare.
const MAX_FRAME: usize = 65536 + 256;

/// What a tc program decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcVerdict {
    /// `TC_ACT_OK`: the packet goes on its way (egress: into the tun, i.e. to clatd).
    Pass,
    /// `TC_ACT_SHOT`: dropped (ingress guard: clatd has its own copy).
    Drop,
    /// `TC_ACT_REDIRECT`: translated and sent elsewhere by the fast path.
    Redirect,
    /// Any other return value (the programs return none).
    Other(u32),
}

impl TcVerdict {
    fn from_retval(v: u32) -> Self {
        match v {
            0 => Self::Pass,
            2 => Self::Drop,
            7 => Self::Redirect,
            v => Self::Other(v),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's verdict.
    pub verdict: TcVerdict,
    /// The frame as the program left it, from its first octet.
    pub frame: Vec<u8>,
}

/// Both programs of one CLAT, loaded with their own maps, for `BPF_PROG_TEST_RUN`.
#[derive(Debug)]
pub struct FastPathTestRun {
    ebpf: Ebpf,
}

impl FastPathTestRun {
    /// Loads both programs for `cfg` (which must describe an Ethernet uplink, as the kernel
    /// frames test packets in Ethernet; `fast_path` as given). Needs the privileges to load
    /// BPF programs, no interface.
    pub fn load(cfg: &ClatBpfConfig) -> Result<Self, BpfError> {
        if !cfg.uplink_is_ethernet {
            return Err(BpfError::Load(
                "BPF_PROG_TEST_RUN frames packets in Ethernet: it needs an Ethernet uplink \
                 configuration"
                    .into(),
            ));
        }
        let mut ebpf = load_object()?;
        {
            let map_err = |reason: String| BpfError::Map {
                map: CONFIG_MAP,
                reason,
            };
            let map = ebpf
                .map_mut(CONFIG_MAP)
                .ok_or_else(|| map_err("missing from the object".into()))?;
            let mut config: aya::maps::Array<_, ConfigRaw> =
                aya::maps::Array::try_from(map).map_err(|e| map_err(error_chain(&e)))?;
            let raw = ConfigRaw {
                tun_l2_len: ETH_HLEN as u32,
                ..ConfigRaw::new(cfg)
            };
            config
                .set(0, raw, 0)
                .map_err(|e| map_err(error_chain(&e)))?;
        }
        for name in [INGRESS_PROGRAM, EGRESS_PROGRAM] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|e| match load_error(&e) {
                    BpfError::Load(r) => BpfError::Load(format!("{name}: {r}")),
                    other => other,
                })?;
        }
        Ok(Self { ebpf })
    }

    /// Runs `clat_ingress6` on the IPv6 packet `packet`, framed in an Ethernet header. A
    /// translated packet comes back as its Ethernet header (type changed to IPv4) and the IPv4
    /// packet.
    pub fn ingress(&mut self, packet: &[u8]) -> Result<TestRunOutcome, BpfError> {
        self.run(INGRESS_PROGRAM, &frame(0x86dd, packet))
    }

    /// Runs `clat_egress4` on the IPv4 packet `packet` (as read from the tun), framed in an
    /// Ethernet header. A translated packet comes back as the placeholder Ethernet header the
    /// program pushes for `bpf_redirect_neigh`, the test framing, and the IPv6 packet.
    pub fn egress(&mut self, packet: &[u8]) -> Result<TestRunOutcome, BpfError> {
        self.run(EGRESS_PROGRAM, &frame(0x0800, packet))
    }

    /// The counters of the programs' map, summed over CPUs.
    pub fn counters(&self) -> Result<FastPathCounters, BpfError> {
        read_counters(&self.ebpf)
    }

    fn run(&mut self, name: &'static str, frame: &[u8]) -> Result<TestRunOutcome, BpfError> {
        let prog = program(&mut self.ebpf, name)?;
        let mut out = vec![0u8; MAX_FRAME];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        let r = prog
            .test_run(opts)
            .map_err(|e| BpfError::TestRun(format!("{name}: {}", error_chain(&e))))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutcome {
            verdict: TcVerdict::from_retval(r.return_value),
            frame: out,
        })
    }
}

/// `packet` behind an Ethernet header of type `ethertype` (locally administered unicast MACs).
fn frame(ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + packet.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(packet);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_framing() {
        assert_eq!(TcVerdict::from_retval(0), TcVerdict::Pass);
        assert_eq!(TcVerdict::from_retval(2), TcVerdict::Drop);
        assert_eq!(TcVerdict::from_retval(7), TcVerdict::Redirect);
        assert_eq!(TcVerdict::from_retval(1), TcVerdict::Other(1));
        let f = frame(0x86dd, &[0x60, 1]);
        assert_eq!(f.len(), 16);
        assert_eq!(&f[12..], &[0x86, 0xdd, 0x60, 1]);
    }
}
