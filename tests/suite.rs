//! The library's tests, one binary: CLI error paths (`cli`), the commands against a fake
//! systemd on a private bus (`dbus`), the Kubernetes export (`kube`), the egress proxy
//! against local upstreams (`proxy`) and the rendered units fed to the real Quadlet
//! generator (`render`). Shared builders and fixtures are in `support`.
//! The system tests (`tests/system.rs`, real podman and systemd) and the long property
//! runs (`tests/fuzz.rs`) are binaries of their own.

#[allow(dead_code)] // each helper is used by some of the modules, not all
mod support;

mod cli;
mod dbus;
mod kube;
mod layers;
mod proxy;
mod render;
