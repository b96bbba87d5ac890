//! The integration tests, compiled as one binary (as casey/just does): `cargo test sync::` runs
//! one module. Tests that need a tool the machine lacks skip through `support::tooling`'s gate,
//! and the run ends with a summary of what was skipped (`sudo tests/setup` installs it all).

mod support;

mod check;
mod contrib;
mod dist;
mod docs;
mod e2e_systemd;
mod fleet;
mod fleet_view;
mod harness_servers;
mod packaging;
mod polling;
mod recipes;
mod reliability;
mod reporting;
mod rollback;
mod rollout;
mod rollout_host;
mod secrets;
mod sync;
mod transports;
mod trust;
mod truthful;
mod units;
mod webhook;
