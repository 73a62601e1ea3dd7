//! Helpers shared by the D-Bus tests: a private `dbus-daemon` with a fake systemd user
//! manager on it, and a small builder that runs the `sandboxctl` binary in its own home.

pub mod fake_systemd;
pub mod fixture;
pub mod quadlet;
pub mod sandbox;
pub mod tls_upstream;

pub use quadlet::quadlet;
