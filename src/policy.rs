//! The pure decision: does this uplink need a CLAT, with which parameters, or why not.
//! (Owned by the config/policy work; see DESIGN §3 "When an uplink gets a CLAT".)
