//! The doctor's checks of the host: Podman, Quadlet, cgroups, subordinate ids, storage,
//! the user manager, the image and sandboxctl's own proxy units.

use std::path::{Path, PathBuf};

use crate::host::systemd::Systemd;
use crate::host::{Cgroups, HostProfile};
use crate::sandbox::layout::Layout;

pub use crate::host::OLDEST_PODMAN;

use super::{Checks, User};

/// The host checks that need no systemd connection and no podman process.
pub fn host_static(host: &HostProfile, user: &User, etc: &Path, systemd_root: &Path) -> Checks {
    let mut c = Checks::new("host");
    match host.podman {
        None => c.fail(
            "podman",
            "not found",
            "install Podman (e.g. `apt-get install podman uidmap`) or set SANDBOXCTL_PODMAN",
        ),
        Some(v) if v < OLDEST_PODMAN => c.fail(
            "podman",
            format!("{v}, older than {OLDEST_PODMAN}"),
            format!("install Podman {OLDEST_PODMAN} or newer"),
        ),
        Some(v) => c.ok("podman", v.to_string()),
    }
    if !host.rootless {
        c.fail(
            "rootless",
            "running as root",
            "run sandboxctl as your own user: its sandboxes are rootless by design",
        );
    }
    subordinate_ids(&mut c, user, etc);
    match &host.quadlet {
        Some(q) => c.ok(
            "quadlet",
            format!("generator {} at {}", q.version, q.path.display()),
        ),
        // Without a generator the sandboxes run as plain systemd services; a
        // generator named by SANDBOXCTL_QUADLET that does not run is an error.
        None => match host.unit_target() {
            Ok(crate::host::UnitTarget::Plain { why }) => c.warn(
                "quadlet",
                format!("not used: sandboxes run as plain systemd services ({why})"),
                "nothing needed; Podman 4.4 or newer ships the generator (/usr/libexec/podman/quadlet)",
            ),
            Ok(crate::host::UnitTarget::Quadlet(v)) => c.ok("quadlet", v.to_string()),
            Err(e) => c.fail(
                "quadlet",
                format!("{e:#}"),
                "install Podman 4.4 or newer (it ships /usr/libexec/podman/quadlet) or set SANDBOXCTL_QUADLET to the generator",
            ),
        },
    }
    cgroups(&mut c, host);
    let linger = systemd_root.join("var/lib/systemd/linger").join(&user.name);
    if linger.exists() {
        c.ok("linger", "on: sandboxes start at boot, without a login");
    } else {
        c.warn(
            "linger",
            "off: sandboxes start when you log in and stop when your last session ends",
            format!("`loginctl enable-linger {}`", user.name),
        );
    }
    if host.journald {
        c.ok("journald", "present: `sandboxctl logs` reads the journal");
    } else {
        c.ok(
            "journald",
            "absent: units log to files in $XDG_RUNTIME_DIR that `sandboxctl logs` reads",
        );
    }
    c
}

pub(crate) fn subordinate_ids(c: &mut Checks, user: &User, etc: &Path) {
    for (file, what) in [
        ("subuid", "subordinate uids"),
        ("subgid", "subordinate gids"),
    ] {
        let path = etc.join(file);
        match subordinate_range(&path, user) {
            Some(count) if count >= 65536 => {
                c.ok(file, format!("{count} {what} for {}", user.name));
            }
            Some(count) => c.warn(
                file,
                format!("only {count} {what} for {} in {}", user.name, path.display()),
                format!(
                    "give {} 65536: `usermod --add-sub{}s 100000-165535 {}`",
                    user.name,
                    &file[3..6],
                    user.name
                ),
            ),
            None => c.fail(
                file,
                format!("no {what} for {} in {}", user.name, path.display()),
                format!(
                    "`usermod --add-sub{}s 100000-165535 {}` (as root), then `podman system migrate`",
                    &file[3..6],
                    user.name
                ),
            ),
        }
    }
}

/// Whether `--memory`, `--cpus` and `--pids` can apply here (see `limits`).
pub(crate) fn cgroups(c: &mut Checks, host: &HostProfile) {
    match host.cgroups {
        Cgroups::V2 => {
            let delegated = host.delegated_controllers.as_deref().unwrap_or_default();
            let missing: Vec<&str> = ["memory", "pids", "cpu"]
                .into_iter()
                .filter(|want| !delegated.iter().any(|h| h == want))
                .collect();
            if missing.is_empty() {
                c.ok(
                    "cgroups",
                    "v2, memory, pids and cpu delegated to the user: --memory, --cpus and --pids apply",
                );
            } else {
                c.warn(
                    "cgroups",
                    format!(
                        "v2, not delegated to the user: {}; enable refuses the limits that need them",
                        missing.join(", ")
                    ),
                    format!(
                        "delegate them: a drop-in {} with `[Service]` `{}`, then `sudo systemctl daemon-reload` and log in again",
                        crate::host::enforce::DELEGATE_DROP_IN,
                        crate::host::enforce::DELEGATE_LINE
                    ),
                );
            }
        }
        other => c.warn(
            "cgroups",
            format!(
                "{other}: rootless Podman cannot apply memory, cpu or pids limits; enable refuses --memory, --cpus and --pids"
            ),
            format!(
                "boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`) and delegate the controllers ({} with `[Service]` `{}`) for resource limits",
                crate::host::enforce::DELEGATE_DROP_IN,
                crate::host::enforce::DELEGATE_LINE
            ),
        ),
    }
}

/// The entry for `user` in a subuid/subgid file (by name or uid): the size of its range.
pub(crate) fn subordinate_range(path: &Path, user: &User) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let uid = user.uid.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (who, _start, count) = (f.next()?, f.next()?, f.next()?);
            (who == user.name || who == uid)
                .then(|| count.trim().parse::<u64>().ok())
                .flatten()
        })
        .max()
}

/// Podman's storage: it must answer at all (a broken runtime dir shows here first), use
/// overlay, and have room to create a container.
pub fn podman_storage(c: &mut Checks) {
    let storage = match crate::host::podman::Storage::probe() {
        Ok(s) => s,
        Err(e) => {
            c.fail(
                "storage",
                format!("{e:#}"),
                "install Podman (or set SANDBOXCTL_PODMAN) and fix what podman says (a runtime dir owned by another user: remove it and log in again; `podman system migrate` after changing subordinate ids)",
            );
            return;
        }
    };
    match storage.driver.as_str() {
        "overlay" => c.ok("storage", "rootless storage, driver overlay"),
        driver => c.warn(
            "storage",
            format!("rootless storage, driver {driver} (slow and large)"),
            "write `[storage]` `driver = \"overlay\"` to ~/.config/containers/storage.conf, then `podman system reset`",
        ),
    }
    if storage.is_full() {
        c.fail(
            "storage space",
            format!("{}: no sandbox can start", storage.full_in_words()),
            crate::host::podman::STORAGE_FIX,
        );
    } else {
        c.ok(
            "storage space",
            format!(
                "{} free in {}",
                crate::base::sizes::human(storage.available),
                storage.graph_root.display()
            ),
        );
    }
}

/// The user manager over D-Bus; the connection, when there is one.
pub fn user_manager(c: &mut Checks) -> Option<Systemd> {
    let connected = Systemd::connect_user().and_then(|s| {
        s.unit_states(&["default.target".to_owned()])?;
        Ok(s)
    });
    match connected {
        Ok(s) => {
            c.ok("user manager", "reachable over D-Bus");
            Some(s)
        }
        Err(e) => {
            c.fail(
                "user manager",
                format!("{e:#}"),
                "run sandboxctl in a login session of this user (`systemctl --user status` must work); on a server, `loginctl enable-linger $USER`",
            );
            None
        }
    }
}

/// The default image and the agent versions it carries.
pub fn image(c: &mut Checks) {
    let image = crate::host::image::DEFAULT_IMAGE;
    match crate::host::image::exists(image) {
        Ok(true) => match crate::host::image::inspect(image) {
            Ok(s) => c.ok(
                "image",
                format!(
                    "{image}: Claude Code {}, Codex {}",
                    s.claude_version, s.codex_version
                ),
            ),
            Err(e) => c.warn(
                "image",
                format!("{image} is there but cannot be inspected: {e:#}"),
                "rebuild it with `sandboxctl image build`",
            ),
        },
        Ok(false) => c.warn(
            "image",
            format!("{image} is missing (it is built at the first start)"),
            "build it now with `sandboxctl image build`",
        ),
        Err(e) => c.fail(
            "image",
            format!("{e:#}"),
            "fix Podman first (see `storage`)",
        ),
    }
}

/// The proxy template units: installed, and running a binary that exists.
pub fn proxy_units(c: &mut Checks, layout: &Layout, host: &HostProfile, needed: bool) {
    let path = layout
        .systemd_user_dir
        .join(crate::units::proxy::SERVICE_FILE);
    if let crate::host::TemplateUnits::Packaged { dir, binary } = &host.template_units {
        if path.exists() {
            c.warn(
                "proxy units",
                format!(
                    "{} shadows the packaged units in {}",
                    path.display(),
                    dir.display()
                ),
                "run `sandboxctl enable CLIENT` for an allowlist client again: it removes the per-user copies",
            );
        } else {
            c.ok(
                "proxy units",
                format!("packaged: {} runs {}", dir.display(), binary.display()),
            );
        }
        return;
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) if !needed => {
            c.ok(
                "proxy units",
                "not installed (no client uses the allowlist)",
            );
            return;
        }
        Err(e) => {
            c.fail(
                "proxy units",
                format!("cannot read {}: {e}", path.display()),
                "run `sandboxctl enable CLIENT` for an allowlist client again: it installs them",
            );
            return;
        }
    };
    let private_copy = crate::units::proxy::binary_path(layout);
    match exec_start_binary(&text) {
        Some(bin) if is_executable(&bin) && bin == private_copy => c.ok(
            "proxy units",
            format!("per-user copies: {} runs {}", path.display(), bin.display()),
        ),
        Some(bin) if is_executable(&bin) => c.warn(
            "proxy units",
            format!(
                "{} runs {}, not sandboxctl's private copy {}",
                path.display(),
                bin.display(),
                private_copy.display()
            ),
            "run `sandboxctl enable CLIENT` again: it installs the copy no sandbox can reach",
        ),
        Some(bin) => c.fail(
            "proxy units",
            format!(
                "{} runs {}, which is missing or not executable",
                path.display(),
                bin.display()
            ),
            "run `sandboxctl enable CLIENT` again with the sandboxctl you use",
        ),
        None => c.fail(
            "proxy units",
            format!("{} has no ExecStart", path.display()),
            "run `sandboxctl enable CLIENT` again: it rewrites the file",
        ),
    }
}

/// The program of a unit's `ExecStart=` (quotes and the `-`/`@` prefixes removed).
pub(crate) fn exec_start_binary(unit: &str) -> Option<PathBuf> {
    let rest = unit.lines().find_map(|l| l.strip_prefix("ExecStart="))?;
    let rest = rest.trim_start_matches(['-', '@', '+', '!', ':']);
    let word = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()?
    } else {
        rest.split_whitespace().next()?
    };
    Some(PathBuf::from(word))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
