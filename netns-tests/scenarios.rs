//! Scenario tests of the autoclat daemon (placeholder while the harness is checked).

#[path = "common/mod.rs"]
mod common;
