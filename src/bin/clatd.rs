//! `clatd`: the 464XLAT translator for one uplink, compatible with Android clatd's flags.
//!
//! `clatd -i UPLINK -p PREFIX -4 V4ADDR -6 V6ADDR -t TUNFD [-m FWMARK] [-n NETID] [-r RXFD] [-w TXFD] [-g GSOFD] [-c STATSFD] [-P PPID] [-u USER]`
//!
//! Once its descriptors are set up, and before it reads the first packet, it drops root, every
//! capability and installs a seccomp allow-list (`autoclat::translator::sandbox`).
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 1 on a runtime failure, 2 on bad flags. Every failure
//! is one line on stderr.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Parser;

use autoclat::translator::neigh::NextHops;
use autoclat::translator::run::signal_fd;
use autoclat::translator::run::GsoSend;
use autoclat::translator::sandbox;
use autoclat::translator::sockets::has_vnet_hdr;
use autoclat::translator::sockets::{bind_tx_source, socket_kind};
use autoclat::translator::stats::StatsPage;
use autoclat::translator::tun::{is_open, set_cloexec, set_nonblocking};
use autoclat::translator::{
    check_tun, lock_rx_filter, open_gso_tx, open_rx, open_tx, rx_filter_locked, rx_framing,
    ClatdArgs, Exit, Fds, IoLoop,
};
use autoclat::xlat::{Translator, XlatConfig};

fn main() -> ExitCode {
    let args = match ClatdArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("clatd: {}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = args.validate() {
        eprintln!("clatd: {e}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole cause chain joined.
            eprintln!("clatd: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Clap's rendered error as one line: the paragraph before the usage, without `error: `.
fn one_line(rendered: &str) -> String {
    let joined = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

/// Take ownership of an inherited descriptor after checking it is open.
fn adopt(flag: char, fd: RawFd) -> anyhow::Result<OwnedFd> {
    if !is_open(fd) {
        bail!("-{flag} {fd}: not an open descriptor");
    }
    set_cloexec(fd).with_context(|| format!("-{flag} {fd}"))?;
    set_nonblocking(fd).with_context(|| format!("-{flag} {fd}"))?;
    // SAFETY: the number came from our command line as a descriptor handed to us, it is open,
    // and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uplink's MTU (SIOCGIFMTU needs no privileges).
fn uplink_mtu(name: &str) -> io::Result<u32> {
    // SAFETY: plain system call without pointers.
    let s = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` was just returned by socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name from and writes the MTU into `ifr`, which is live.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFMTU,
            &mut ifr,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The uplink's hardware type (`ARPHRD_*`) and address (SIOCGIFHWADDR needs no privileges).
fn uplink_hw_type(name: &str) -> io::Result<(u16, [u8; 6])> {
    // SAFETY: plain system call without pointers.
    let s = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` was just returned by socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `ifr`.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFHWADDR,
            &mut ifr,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let hw = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok((hw.sa_family, mac))
}

/// How super-packets can go out whole on this uplink: Ethernet (14-byte header, next hop
/// looked up) or a link without link-layer header; `None` for anything else.
fn gso_send(uplink: &str, ifindex: u32, fwmark: Option<u32>) -> Option<GsoSend> {
    /// `ARPHRD_RAWIP` (cellular modems), not in libc.
    const ARPHRD_RAWIP: u16 = 519;
    let (hw, src_mac) = match uplink_hw_type(uplink) {
        Ok(hw) => hw,
        Err(e) => {
            tracing::warn!("{uplink}: hardware type: {e}; no GSO sends");
            return None;
        }
    };
    match hw {
        libc::ARPHRD_ETHER => match NextHops::new(ifindex, fwmark) {
            Ok(nh) => Some(GsoSend {
                ifindex,
                src_mac,
                next_hops: Some(nh),
            }),
            Err(e) => {
                tracing::warn!("rtnetlink socket: {e}; no GSO sends");
                None
            }
        },
        libc::ARPHRD_NONE | ARPHRD_RAWIP => Some(GsoSend {
            ifindex,
            src_mac,
            next_hops: None,
        }),
        other => {
            tracing::info!("{uplink}: hardware type {other}: super-packets are cut here");
            None
        }
    }
}

fn run(args: &ClatdArgs) -> anyhow::Result<()> {
    // Signals first, so a SIGTERM during start-up is not lost (it stays pending).
    let signals = signal_fd().context("signals")?;
    // Die with the supervisor: a killed autoclat must not leave a translator (and with it the
    // tun, its address and route) behind. The signal arrives through the signal fd as usual.
    let parent = watch_parent(args.parent)?;
    // Whom to become, looked up while /etc/passwd can still be read.
    let identity = sandbox::resolve_user(args.user.as_deref()).context("-u")?;

    let tun_info = check_tun(args.tun_fd).map_err(|e| anyhow!("-t {}: {e}", args.tun_fd))?;
    set_cloexec(args.tun_fd).with_context(|| format!("-t {}", args.tun_fd))?;
    // SAFETY: check_tun established that the number is an open tun descriptor, handed to us.
    let tun = unsafe { OwnedFd::from_raw_fd(args.tun_fd) };

    let ifindex = nix::net::if_::if_nametoindex(args.uplink.as_str())
        .map_err(|e| anyhow!("-i {}: {}", args.uplink, io::Error::from(e)))?;
    let mtu6 = uplink_mtu(&args.uplink).map_err(|e| anyhow!("-i {}: MTU: {e}", args.uplink))?;

    let (rx, rx_framing) = match args.rx_fd {
        Some(fd) => {
            let owned = adopt('r', fd)?;
            let framing = rx_framing(std::os::fd::AsFd::as_fd(&owned)).ok_or_else(|| {
                anyhow!(
                    "-r {fd}: not a packet socket (SOCK_DGRAM, or SOCK_RAW with PACKET_VNET_HDR)"
                )
            })?;
            (owned, framing)
        }
        None => {
            let (fd, framing) = open_rx(ifindex, args.v6, None, args.clat_prefix, None)
                .with_context(|| format!("receive socket on {}", args.uplink))?;
            lock_rx_filter(std::os::fd::AsFd::as_fd(&fd)).context("receive socket")?;
            (fd, framing)
        }
    };
    match rx_filter_locked(std::os::fd::AsFd::as_fd(&rx)) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the inherited receive socket's filter is not locked (SO_LOCK_FILTER): the supervisor should lock it before spawning"
        ),
        Err(e) => tracing::warn!("cannot read SO_LOCK_FILTER of the receive socket: {e}"),
    }
    let tx = match args.tx_fd {
        Some(fd) => {
            let owned = adopt('w', fd)?;
            check_kind(
                'w',
                &owned,
                libc::AF_INET6,
                libc::SOCK_RAW,
                "a raw IPv6 socket",
            )?;
            owned
        }
        None => open_tx(ifindex, args.fwmark)
            .with_context(|| format!("send socket on {}", args.uplink))?,
    };

    // The GSO send socket: inherited, or (run by hand, privileged) our own; without one,
    // super-packets from a vnet-header tun are cut into segments here.
    let gso_fd = match args.gso_fd {
        Some(fd) => {
            let owned = adopt('g', fd)?;
            check_kind(
                'g',
                &owned,
                libc::AF_PACKET,
                libc::SOCK_RAW,
                "a raw packet socket",
            )?;
            if !has_vnet_hdr(std::os::fd::AsFd::as_fd(&owned)) {
                bail!("-g {fd}: the packet socket has no PACKET_VNET_HDR");
            }
            Some(owned)
        }
        None if tun_info.vnet_hdr_len.is_some() && args.rx_fd.is_none() => {
            match open_gso_tx(ifindex, args.fwmark) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::info!("no GSO send socket ({e}): super-packets are cut here");
                    None
                }
            }
        }
        None => None,
    };
    let gso = match (&gso_fd, tun_info.vnet_hdr_len) {
        (Some(_), Some(_)) => gso_send(&args.uplink, ifindex, args.fwmark),
        _ => None,
    };

    // Best effort: a socket the supervisor already bound (or a kernel without IPV6_FREEBIND)
    // still works, only a little slower.
    if let Err(e) = bind_tx_source(std::os::fd::AsFd::as_fd(&tx), args.v6) {
        tracing::debug!("send socket keeps an unbound source: {e}");
    }

    let cfg = XlatConfig {
        v4: args.v4,
        v6: args.v6,
        prefix: args.prefix,
        mtu6,
        clat_prefix: args.clat_prefix,
    };
    tracing::info!(
        "{}[{ifindex}] {} {} -> {}{} tun {} (fd {}{}), mtu {mtu6}{}{}{}{}",
        args.uplink,
        args.prefix,
        args.v6,
        args.v4,
        args.clat_prefix
            .map(|p| format!(", stateless: other downstream IPv4 sources <-> {p}"))
            .unwrap_or_default(),
        tun_info.name,
        args.tun_fd,
        tun_info
            .vnet_hdr_len
            .map(|l| format!(", virtio header {l}"))
            .unwrap_or_default(),
        args.fwmark
            .map(|m| format!(", mark {m:#x}"))
            .unwrap_or_default(),
        args.netid
            .map(|n| format!(", netid {n}"))
            .unwrap_or_default(),
        if args.rx_fd.is_some() || args.tx_fd.is_some() {
            ", inherited sockets"
        } else {
            ""
        },
        if gso.is_some() { ", GSO sends" } else { "" },
    );

    // The counter page: mapped now, before the loop (and any syscall filter) starts.
    let stats = match args.stats_fd {
        Some(fd) => {
            if !is_open(fd) {
                bail!("-c {fd}: not an open descriptor");
            }
            set_cloexec(fd).with_context(|| format!("-c {fd}"))?;
            // SAFETY: the number came from our command line as a descriptor handed to us, it
            // is open, and nothing else in this process owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            Some(StatsPage::open(owned).map_err(|e| anyhow!("-c {fd}: {e}"))?)
        }
        None => None,
    };
    // Everything is open: give up root, capabilities and every syscall the loop does not
    // need, before the first packet is read.
    sandbox::drop_privileges(&identity).context("dropping privileges")?;
    // The credential change cleared the parent-death signal: ask again, and check again.
    watch_parent(args.parent.or(Some(parent.as_raw())))?;
    let uid = nix::unistd::getuid();
    sandbox::install_seccomp().context("installing the seccomp filter")?;
    tracing::info!(
        "running as uid {uid}, no capabilities, seccomp allow-list of {} syscalls",
        sandbox::ALLOWED_SYSCALLS.len()
    );

    let mut io_loop = IoLoop::new(Translator::new(cfg));
    if let Some(page) = stats {
        io_loop.set_stats(page);
    }
    let gso_on = gso.is_some();
    if let Some(g) = gso {
        io_loop.set_gso(g);
    }
    let fds = Fds {
        tun: std::os::fd::AsFd::as_fd(&tun),
        rx: std::os::fd::AsFd::as_fd(&rx),
        rx_framing,
        tx: std::os::fd::AsFd::as_fd(&tx),
        tun_vnet_hdr: tun_info.vnet_hdr_len,
        gso: gso_fd
            .as_ref()
            .filter(|_| gso_on)
            .map(std::os::fd::AsFd::as_fd),
    };
    let result = io_loop.run(fds, &signals);
    match result {
        Ok(Exit::Signal(sig)) => {
            tracing::info!("{sig}: exiting; {}", io_loop.counters_line());
            Ok(())
        }
        Err(e) => {
            tracing::error!("{e}; {}", io_loop.counters_line());
            Err(e.into())
        }
    }
}

/// Ask for SIGTERM when the parent dies, then make sure the parent is still `expected` (the
/// supervisor's pid from `-P`; without it, the parent seen before asking). Returns the parent.
fn watch_parent(expected: Option<i32>) -> anyhow::Result<nix::unistd::Pid> {
    let before = nix::unistd::getppid();
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
        tracing::warn!(
            "cannot ask for SIGTERM on supervisor death: {}",
            io::Error::last_os_error()
        );
    }
    let now = nix::unistd::getppid();
    match expected {
        Some(p) if now.as_raw() != p => {
            bail!("-P {p}: our parent is {now}, not the supervisor (it is gone): exiting")
        }
        None if now != before => bail!("the supervisor exited while the translator was starting"),
        _ => Ok(now),
    }
}

/// Refuse an inherited socket of the wrong kind.
fn check_kind(flag: char, fd: &OwnedFd, domain: i32, ty: i32, what: &str) -> anyhow::Result<()> {
    let b: BorrowedFd<'_> = std::os::fd::AsFd::as_fd(fd);
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    match socket_kind(b) {
        Ok((d, t)) if d == domain && t == ty => Ok(()),
        Ok(_) => bail!("-{flag} {raw}: not {what}"),
        Err(e) => bail!("-{flag} {raw}: not {what} ({e})"),
    }
}
