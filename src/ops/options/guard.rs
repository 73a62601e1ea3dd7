//! The host-path guard: what a project or mount may not be (sandboxctl's own state, the
//! user's credentials, the home itself, another client's projects), resolved through
//! links before it is judged.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::sandbox::layout::Layout;
use crate::sandbox::settings::ExtraMount;

pub(crate) fn mount_flag(m: &ExtraMount) -> &'static str {
    if m.writable { "--mount-rw" } else { "--mount" }
}

pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// A place on the host that no sandbox may see, and why.
pub(crate) struct Protected {
    /// Where it really is (symlinks resolved): what paths are compared with.
    real: PathBuf,
    /// As configured, for messages.
    shown: PathBuf,
    what: &'static str,
    why: &'static str,
    /// The host's own Claude config, which `--claude-config` may share on purpose.
    claude: bool,
}

/// Host paths that a project, a mount or a shared config directory may not equal,
/// contain or lie inside: sandboxctl's state, anything that makes the host run code
/// (unit directories, the proxy's binary, the runtime directory's sockets) and the
/// user's own keys and agent logins. Compared by real path on both sides, so a
/// symlinked home, `~/.config` or data directory does not hide them.
pub(crate) struct Guard {
    protected: Vec<Protected>,
}

impl Guard {
    pub(crate) fn new(layout: &Layout) -> Self {
        const UNIT_RUNS: &str = "where a unit written by the sandbox would run on the host";
        const CONTAINERS: (&str, &str) = (
            "Podman's configuration",
            "which decides how every container runs, and holds the Quadlet units",
        );
        const SYSTEMD: (&str, &str) = ("systemd's user configuration", UNIT_RUNS);
        let home = &layout.home_dir;
        let mut list: Vec<(PathBuf, &'static str, &'static str)> = vec![
            (
                layout.data_dir.clone(),
                "sandboxctl's data directory",
                "which holds every client's credentials and settings",
            ),
            (
                layout.unit_dir.clone(),
                "the Quadlet unit directory",
                UNIT_RUNS,
            ),
            (
                layout.systemd_user_dir.clone(),
                "the systemd user unit directory",
                UNIT_RUNS,
            ),
            (
                layout.libexec_dir.clone(),
                "the sandboxctl binary the proxy units run",
                "which runs on the host",
            ),
            (
                layout.cache_dir.clone(),
                "sandboxctl's cache",
                "which names the programs sandboxctl runs on the host",
            ),
            (
                home.join(".local/share/containers"),
                "Podman's storage",
                "which holds every client's image and container",
            ),
        ];
        // `$XDG_CONFIG_HOME/containers` and `…/systemd` as a whole, and the same under
        // `~/.config` should XDG_CONFIG_HOME point elsewhere.
        let parent_named = |dir: &Path, name: &str| {
            dir.parent()
                .filter(|p| p.file_name().is_some_and(|n| n == name))
                .map(Path::to_path_buf)
        };
        for (dir, (what, why)) in [
            (parent_named(&layout.unit_dir, "containers"), CONTAINERS),
            (Some(home.join(".config/containers")), CONTAINERS),
            (parent_named(&layout.systemd_user_dir, "systemd"), SYSTEMD),
            (Some(home.join(".config/systemd")), SYSTEMD),
        ] {
            if let Some(dir) = dir {
                list.push((dir, what, why));
            }
        }
        if let Some(run) = &layout.runtime_dir {
            list.push((
                run.clone(),
                "the runtime directory",
                "which holds the sockets of the user manager, Podman and the proxies",
            ));
        }
        list.extend([
            (home.join(".ssh"), "~/.ssh", "which holds your SSH keys"),
            (
                home.join(".gnupg"),
                "~/.gnupg",
                "which holds your GnuPG keys",
            ),
            (
                home.join(".codex"),
                "the host's Codex config",
                "which holds your Codex login",
            ),
        ]);
        let mut protected: Vec<Protected> = list
            .into_iter()
            .map(|(shown, what, why)| Protected {
                real: real_path(&shown),
                shown,
                what,
                why,
                claude: false,
            })
            .collect();
        for name in [".claude", ".claude.json"] {
            let shown = home.join(name);
            protected.push(Protected {
                real: real_path(&shown),
                shown,
                what: "the host's Claude Code config",
                why: "which holds your Claude login",
                claude: true,
            });
        }
        Self { protected }
    }

    /// Refuses `path` if it is, contains or lies inside a protected path. With
    /// `sharing_claude`, the host's Claude config is allowed (`--claude-config`).
    pub(crate) fn check(&self, kind: &str, path: &Path, sharing_claude: bool) -> Result<()> {
        let real = real_path(path);
        for p in &self.protected {
            if sharing_claude && p.claude {
                continue;
            }
            let relation = if real == p.real {
                "is"
            } else if p.real.starts_with(&real) {
                "contains"
            } else if real.starts_with(&p.real) {
                "is inside"
            } else {
                continue;
            };
            let advice = if relation == "contains" {
                "choose a narrower path"
            } else {
                "choose a path outside it"
            };
            let shown = if real == *path {
                String::new()
            } else {
                format!(" (really {})", real.display())
            };
            bail!(
                "{kind} {}{shown} {relation} {} {}, {}; {advice}",
                path.display(),
                p.what,
                p.shown.display(),
                p.why,
            );
        }
        Ok(())
    }
}

/// Where `p` really is: canonical if it exists; otherwise its nearest existing
/// ancestor made canonical, with the rest appended (a protected directory that does
/// not exist yet is still protected where it will be created).
pub(crate) fn real_path(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return crate::base::lexical::normalize(&out);
        }
        match (cur.file_name(), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent;
            }
            _ => return crate::base::lexical::normalize(p),
        }
    }
}
