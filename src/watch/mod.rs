//! The watcher: rtnetlink subscription and initial dump, feeding one [`Inventory`] of uplinks.

pub mod inventory;

pub use inventory::{Inventory, Uplink, V4Addr, V6Addr};
