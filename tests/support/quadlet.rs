//! The real Quadlet generator for the tests that feed it units.

use std::path::PathBuf;

use sandboxctl::host::QUADLET_CANDIDATES;

/// The real Quadlet generator. Tests that need it fail (never skip) without one: the
/// generator, not our own parser, judges the units `enable` writes.
pub fn quadlet() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDBOXCTL_QUADLET").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "SANDBOXCTL_QUADLET={} is not a file: point it at the Quadlet generator (tests/system/setup-host.sh extracts one)",
            p.display()
        );
        return p;
    }
    QUADLET_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no Quadlet generator: set SANDBOXCTL_QUADLET to one (Podman >= 4.4 ships it; on Debian 12 run tests/system/setup-host.sh, which extracts Debian 13's into /opt/sandboxctl-test)"
            )
        })
}
