//! The translator's I/O edge (the `clatd` binary and the supervisor's socket set-up): uplink
//! sockets and their filter, the tun checks, the command line, and the packet loop around the
//! pure [`crate::xlat::Translator`].

pub mod args;
pub mod csum;
pub mod filter;
pub mod neigh;
pub mod run;
pub mod sandbox;
pub mod sockets;
pub mod stats;
pub mod tun;

pub use args::{ArgsError, ClatdArgs};
pub use filter::{rx_filter, rx_filter_behind, rx_filter_exact, FastPathExclusion};
pub use run::{Exit, Fds, IoCounters, IoLoop, RunError};
pub use sockets::{
    lock_rx_filter, open_gso_tx, open_rx, open_tx, rx_filter_locked, rx_framing, set_rx_filter,
    RxFraming, SocketError,
};
pub use tun::{check_tun, TunError, TunInfo};
