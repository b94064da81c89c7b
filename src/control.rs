//! The control socket protocol (`autoclat status`).
