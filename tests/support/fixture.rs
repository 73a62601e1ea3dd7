//! The fixed user and host the render, export and property tests render for: a user
//! `/home/user` with uid 1000, and this test machine (Podman 4.3.1, Debian 13's Quadlet
//! 5.4.2 generator, hybrid cgroups, systemd not PID 1).

use sandboxctl::host::{Cgroups, HostProfile, Version, fixed_profile};
use sandboxctl::sandbox::layout::Layout;

pub fn layout() -> Layout {
    Layout {
        data_dir: "/home/user/.local/share/agent-sandbox".into(),
        unit_dir: "/home/user/.config/containers/systemd".into(),
        cache_dir: "/home/user/.cache/sandboxctl".into(),
        systemd_user_dir: "/home/user/.config/systemd/user".into(),
        libexec_dir: "/home/user/.local/libexec/sandboxctl".into(),
        home_dir: "/home/user".into(),
        runtime_dir: Some("/run/user/1000".into()),
        user_config: "/home/user/.config/sandboxctl/config.toml".into(),
    }
}

/// This test machine: new generator, old podman, hybrid cgroups, no systemd as PID 1.
pub fn this_host() -> HostProfile {
    fixed_profile(
        Version::new(4, 3, 1),
        Version::new(5, 4, 2),
        Cgroups::Hybrid,
        false,
    )
}
