//! The watcher: rtnetlink subscription and initial dump, feeding one [`Inventory`] of uplinks.
//!
//! [`inventory`] holds the state and how events change it, [`convert`] turns netlink messages
//! into events (both pure), and [`netlink`] is the I/O edge.

pub mod convert;
pub mod inventory;
pub mod netlink;
pub mod ralisten;
pub mod routerwatch;

pub use inventory::{
    AddrChange, DefaultRoute, Family, Inventory, LinkInfo, NetEvent, OnLinkRoute, Uplink, V4Addr,
    V6Addr,
};
pub use netlink::{dump, ifindex, run, WatchError};
