//! The eBPF tc programs (C, built by build.rs) and their loader.
