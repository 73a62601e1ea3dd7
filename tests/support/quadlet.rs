//! The real Quadlet generator for the tests that feed it units.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// `quadlet -dryrun -user` over `unit_dir`, with the generator `quadlet`: the one
/// place the tests run the generator.
pub fn dry_run_with(quadlet: &Path, unit_dir: &Path) -> std::process::Output {
    Command::new(quadlet)
        .args(["-dryrun", "-user"])
        .env("QUADLET_UNIT_DIRS", unit_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", quadlet.display()))
}

/// The service the real generator makes of `unit` written as `file`
/// (`agent-acme.container`), or what it said when it made none.
pub fn generate(file: &str, unit: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(file), unit).expect("write the unit");
    let out = dry_run_with(&quadlet(), dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let service = format!("---{}.service---", file.trim_end_matches(".container"));
    if out.status.success() && stdout.contains(&service) {
        Ok(stdout)
    } else {
        Err(format!("{stderr}\n{stdout}"))
    }
}
