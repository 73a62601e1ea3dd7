//! Helpers shared by the D-Bus tests: a private `dbus-daemon` with a fake systemd user
//! manager on it, and a small builder that runs the `sandboxctl` binary in its own home.

pub mod fake_systemd;
pub mod sandbox;

#[path = "quadlet.rs"]
mod quadlet_path;
pub use quadlet_path::quadlet;
