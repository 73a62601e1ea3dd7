//! Helpers shared by the library tests: a private `dbus-daemon` with a fake systemd user
//! manager on it, the one builder that runs the `sandboxctl` binary in a home of its own
//! (`sandbox`), the real Quadlet generator, and a local TLS upstream.

pub mod fake_systemd;
pub mod fixture;
pub mod quadlet;
pub mod sandbox;
pub mod tls_upstream;

pub use quadlet::quadlet;
