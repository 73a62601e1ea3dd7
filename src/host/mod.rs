//! What this host runs: the Podman and Quadlet versions, the cgroup layout, whether
//! systemd is the init and journald is there. The renderer chooses unit keys and host
//! adaptations from this, never from guesses. Versions come from running the binaries,
//! which costs tens of milliseconds, so they are cached keyed by each binary's path,
//! size and modification time.

pub mod enforce;
pub mod image;
pub mod package_hosts;
pub mod podman;
pub mod systemd;
pub mod user;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Finds the first `N.N[.N]` in `text` (e.g. "podman version 4.3.1").
    pub fn find_in(text: &str) -> Option<Self> {
        text.split(|c: char| c.is_whitespace() || c == '-' || c == '+')
            .find_map(Self::parse)
    }

    fn parse(word: &str) -> Option<Self> {
        let word = word.strip_prefix('v').unwrap_or(word);
        let mut parts = word.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(Self::new(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cgroups {
    V1,
    /// v1 controllers with cgroup2 mounted at `/sys/fs/cgroup/unified`.
    Hybrid,
    V2,
}

impl fmt::Display for Cgroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::Hybrid => "v1 (hybrid)",
            Self::V2 => "v2",
        })
    }
}

/// The Quadlet generator found on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quadlet {
    pub path: PathBuf,
    pub version: Version,
}

/// The oldest Podman sandboxctl supports: the one its tests run on (Debian 12's 4.3).
/// Podman 3.x cannot mount a secret under a name of our choosing (`--secret
/// NAME,type=mount,target=…` came with 4.0), which the agents' keys need.
pub const OLDEST_PODMAN: Version = Version::new(4, 3, 0);

/// The first Podman that ships the Quadlet generator.
pub const FIRST_QUADLET: Version = Version::new(4, 4, 0);

/// The value of `SANDBOXCTL_QUADLET` that disables Quadlet: units are plain services.
pub const QUADLET_NONE: &str = "none";

/// Which kind of unit this host gets for a client's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitTarget {
    /// A `.container` unit the Quadlet generator of this version turns into a service.
    Quadlet(Version),
    /// A plain systemd user service that runs `podman run` itself; `why` says why
    /// there is no usable generator.
    Plain { why: String },
}

/// Everything the renderer needs to know about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(clippy::struct_excessive_bools)] // independent yes/no facts about the host
pub struct HostProfile {
    pub podman: Option<Version>,
    /// The podman binary, for units that run it themselves.
    pub podman_path: Option<PathBuf>,
    pub quadlet: Option<Quadlet>,
    /// `SANDBOXCTL_QUADLET=none`: Quadlet is not used even if it is installed.
    pub quadlet_disabled: bool,
    /// `SANDBOXCTL_QUADLET` named this generator and it did not run.
    pub quadlet_broken: Option<PathBuf>,
    pub cgroups: Cgroups,
    pub rootless: bool,
    /// systemd is PID 1 (`sd_booted()`): only then do the network-online units that
    /// Quadlet's default dependencies wait for exist.
    pub systemd_booted: bool,
    pub journald: bool,
    /// Where sandboxctl's template units (the proxy's, …) come from.
    pub template_units: TemplateUnits,
    /// On cgroup v2, the controllers systemd delegated to the user's manager (the
    /// `cgroup.controllers` of `user@UID.service`); `None` elsewhere or unreadable.
    /// Resource limits apply only through these.
    pub delegated_controllers: Option<Vec<String>>,
}

/// Where sandboxctl's template units (`systemd/` of the source tree) come from: decided
/// once per run, here, for every template unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TemplateUnits {
    /// The distribution package's, in `dir`, running `binary`: `enable` writes no
    /// template unit and no copy of sandboxctl into the user's home.
    Packaged { dir: PathBuf, binary: PathBuf },
    /// Copies in the user's unit directory, running sandboxctl's private copy in
    /// `Layout::libexec_dir`.
    PerUser,
}

/// Where the package puts the template units.
pub const PACKAGED_UNIT_DIR: &str = "/usr/lib/systemd/user";
/// Every template unit file of `systemd/`: the package installs them all.
pub const TEMPLATE_UNIT_FILES: [&str; 4] = [
    crate::sandbox::layout::PROXY_SOCKET_FILE,
    crate::sandbox::layout::PROXY_SERVICE_FILE,
    crate::sandbox::layout::NOTIFY_SOCKET_FILE,
    crate::sandbox::layout::NOTIFY_SERVICE_FILE,
];
/// The binary the packaged units run.
pub const PACKAGED_BINARY: &str = "/usr/bin/sandboxctl";

impl TemplateUnits {
    /// `Packaged` when `dir` holds every template unit and the proxy's service runs
    /// `binary`, an executable file; else `PerUser`.
    pub fn detect(dir: &Path, binary: &Path) -> Self {
        let service = std::fs::read_to_string(dir.join(crate::sandbox::layout::PROXY_SERVICE_FILE));
        let runs_binary = service.is_ok_and(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("ExecStart="))
                .any(|rest| rest.split(' ').next() == Some(&*binary.to_string_lossy()))
        });
        let executable = std::fs::metadata(binary).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        let all_units = TEMPLATE_UNIT_FILES.iter().all(|f| dir.join(f).is_file());
        if runs_binary && executable && all_units {
            Self::Packaged {
                dir: dir.to_owned(),
                binary: binary.to_owned(),
            }
        } else {
            Self::PerUser
        }
    }
}

impl fmt::Display for TemplateUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Packaged { dir, binary } => write!(
                f,
                "packaged ({} running {})",
                dir.display(),
                binary.display()
            ),
            Self::PerUser => f.write_str("per-user copies"),
        }
    }
}

impl HostProfile {
    /// Detects the host, using the version cache in `cache_dir` where it is still valid;
    /// `persist` allows refreshing the cache (commands that must write nothing pass false).
    pub fn detect(cache_dir: &Path, persist: bool) -> Self {
        let podman_path = find_program(&crate::host::podman::binary());
        let quadlet_disabled = quadlet_disabled();
        let quadlet_path = if quadlet_disabled {
            None
        } else {
            find_quadlet()
        };
        let key = cache_key(podman_path.as_deref(), quadlet_path.as_deref());
        let cache_file = cache_dir.join("host.json");
        let cached: Option<VersionCache> = std::fs::read(&cache_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &VersionCache| c.key == key);
        let (podman, quadlet) = if let Some(c) = cached {
            (c.podman, c.quadlet)
        } else {
            let podman = podman_path.as_deref().and_then(program_version);
            let quadlet = quadlet_path.and_then(|path| {
                program_version(&path)
                    .filter(|_| generates_units(&path))
                    .map(|version| Quadlet { path, version })
            });
            let entry = VersionCache {
                key,
                podman,
                quadlet: quadlet.clone(),
            };
            if persist
                && crate::sandbox::layout::create_private_dir(cache_dir).is_ok()
                && let Ok(json) = serde_json::to_vec(&entry)
            {
                let _ = crate::base::atomic::write(&cache_file, &json, 0o600);
            }
            (podman, quadlet)
        };
        let quadlet_broken = if quadlet.is_none() && !quadlet_disabled {
            std::env::var_os("SANDBOXCTL_QUADLET")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        } else {
            None
        };
        let cgroups = detect_cgroups();
        Self {
            podman,
            podman_path: podman_path.map(|p| std::fs::canonicalize(&p).unwrap_or(p)),
            quadlet,
            quadlet_disabled,
            quadlet_broken,
            cgroups,
            delegated_controllers: (cgroups == Cgroups::V2)
                .then(|| delegated_controllers(Path::new("/"), rustix::process::getuid().as_raw()))
                .flatten(),
            rootless: !rustix::process::getuid().is_root(),
            systemd_booted: Path::new("/run/systemd/system").is_dir()
                && std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd"),
            journald: Path::new("/run/systemd/journal/socket").exists(),
            template_units: TemplateUnits::detect(
                Path::new(PACKAGED_UNIT_DIR),
                Path::new(PACKAGED_BINARY),
            ),
        }
    }

    /// Podman is there and new enough; else a one-line error saying what to install.
    pub fn require_podman(&self) -> Result<Version> {
        match self.podman {
            None => bail!(
                "podman not found: install Podman {OLDEST_PODMAN} or newer (e.g. `sudo apt-get install podman`) or set SANDBOXCTL_PODMAN"
            ),
            Some(v) if v < OLDEST_PODMAN => bail!(
                "podman {v} is too old: sandboxctl needs Podman {OLDEST_PODMAN} or newer; upgrade podman"
            ),
            Some(v) => Ok(v),
        }
    }

    /// The kind of unit this host gets, and why when it is not Quadlet's; an error if
    /// `SANDBOXCTL_QUADLET` names a generator that does not run (a setting to fix, not
    /// a reason to quietly write another kind of unit).
    pub fn unit_target(&self) -> Result<UnitTarget> {
        if let Some(q) = &self.quadlet {
            return Ok(UnitTarget::Quadlet(q.version));
        }
        if self.quadlet_disabled {
            return Ok(UnitTarget::Plain {
                why: format!("SANDBOXCTL_QUADLET={QUADLET_NONE}"),
            });
        }
        if let Some(p) = &self.quadlet_broken {
            bail!(
                "SANDBOXCTL_QUADLET={} does not run as a Quadlet generator (`-version` or a `-dryrun` of a probe unit failed); point it at the generator, or set it to `{QUADLET_NONE}` for plain systemd services",
                p.display()
            );
        }
        let why = match self.podman {
            Some(v) if v < FIRST_QUADLET => {
                format!("Podman {v} ships no Quadlet generator (it came with {FIRST_QUADLET})")
            }
            _ => "no Quadlet generator was found".to_owned(),
        };
        Ok(UnitTarget::Plain { why })
    }
    /// One line describing what was detected, for `render` and `status`.
    pub fn summary(&self) -> String {
        let podman = self
            .podman
            .map_or_else(|| "not found".to_owned(), |v| v.to_string());
        let quadlet = self.quadlet.as_ref().map_or_else(
            || {
                if self.quadlet_disabled {
                    format!("disabled (SANDBOXCTL_QUADLET={QUADLET_NONE})")
                } else {
                    "not found".to_owned()
                }
            },
            |q| format!("{} ({})", q.version, q.path.display()),
        );
        format!(
            "podman {podman}; Quadlet {quadlet}; cgroups {}; {}; systemd {}PID 1; journald {}",
            self.cgroups,
            if self.rootless { "rootless" } else { "root" },
            if self.systemd_booted {
                "is "
            } else {
                "is not "
            },
            if self.journald { "present" } else { "absent" },
        )
    }
}

#[derive(Serialize, Deserialize)]
struct VersionCache {
    key: String,
    podman: Option<Version>,
    quadlet: Option<Quadlet>,
}

fn cache_key(podman: Option<&Path>, quadlet: Option<&Path>) -> String {
    let part = |p: Option<&Path>| -> String {
        let Some(p) = p else { return "-".to_owned() };
        let meta = std::fs::metadata(p).ok();
        let mtime = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let size = meta.map_or(0, |m| m.len());
        format!("{}:{size}:{mtime}", p.display())
    };
    format!("1|{}|{}", part(podman), part(quadlet))
}

/// Resolves a program name through `PATH` (a name with a `/` is taken as a path).
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Where the Quadlet generator may be (after `$SANDBOXCTL_QUADLET`): first the links the
/// user manager runs as its generator, then where Podman installs it.
pub const QUADLET_CANDIDATES: [&str; 7] = [
    "/etc/systemd/user-generators/podman-user-generator",
    "/usr/local/lib/systemd/user-generators/podman-user-generator",
    "/usr/lib/systemd/user-generators/podman-user-generator",
    "/lib/systemd/user-generators/podman-user-generator",
    "/usr/libexec/podman/quadlet",
    "/usr/lib/podman/quadlet",
    "/usr/local/libexec/podman/quadlet",
];

/// `SANDBOXCTL_QUADLET=none`: write plain services even where Quadlet exists.
fn quadlet_disabled() -> bool {
    std::env::var_os("SANDBOXCTL_QUADLET").is_some_and(|v| v == QUADLET_NONE)
}

/// The generator the user manager runs, else the one Podman installs.
fn find_quadlet() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SANDBOXCTL_QUADLET").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    QUADLET_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

fn program_version(path: &Path) -> Option<Version> {
    // Quadlet answers `-version`; podman answers `--version`.
    let flag = if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("quadlet"))
    {
        "-version"
    } else {
        "--version"
    };
    let out = Command::new(path).arg(flag).output().ok()?;
    Version::find_in(&String::from_utf8_lossy(&out.stdout))
        .or_else(|| Version::find_in(&String::from_utf8_lossy(&out.stderr)))
}

/// Whether `path` really is a Quadlet generator: it turns a probe `.container` unit
/// into a service that runs `podman run` with the probe's image. A program that only
/// prints a version (a wrapped `true`, a stale script) is not taken for one.
fn generates_units(path: &Path) -> bool {
    const PROBE: &str = "sandboxctl-probe";
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let unit = format!("[Container]\nImage=localhost/{PROBE}\n");
    if std::fs::write(dir.path().join(format!("{PROBE}.container")), unit).is_err() {
        return false;
    }
    Command::new(path)
        .args(["-dryrun", "-user"])
        .env("QUADLET_UNIT_DIRS", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            o.status.success()
                && out.contains(&format!("---{PROBE}.service---"))
                && out.lines().any(|l| {
                    l.starts_with("ExecStart=") && l.contains(&format!("localhost/{PROBE}"))
                })
        })
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &str) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast, clippy::cast_lossless)]
        let kind = s.f_type as i64;
        kind == CGROUP2_SUPER_MAGIC
    })
}

fn detect_cgroups() -> Cgroups {
    if is_cgroup2("/sys/fs/cgroup") {
        Cgroups::V2
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        Cgroups::Hybrid
    } else {
        Cgroups::V1
    }
}

/// The controllers delegated to `uid`'s user manager, below `root` (`/` but in tests).
pub fn delegated_controllers(root: &Path, uid: u32) -> Option<Vec<String>> {
    let file = root.join(format!(
        "sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    ));
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.split_whitespace().map(str::to_owned).collect())
}

/// A fixed profile for tests and snapshots.
#[doc(hidden)]
pub fn fixed_profile(
    podman: Version,
    quadlet: Version,
    cgroups: Cgroups,
    booted: bool,
) -> HostProfile {
    HostProfile {
        podman: Some(podman),
        podman_path: Some(PathBuf::from("/usr/bin/podman")),
        quadlet: Some(Quadlet {
            path: PathBuf::from("/usr/libexec/podman/quadlet"),
            version: quadlet,
        }),
        quadlet_disabled: false,
        quadlet_broken: None,
        cgroups,
        rootless: true,
        systemd_booted: booted,
        journald: booted,
        template_units: TemplateUnits::PerUser,
        delegated_controllers: (cgroups == Cgroups::V2).then(|| {
            ["cpuset", "cpu", "io", "memory", "pids"]
                .map(str::to_owned)
                .to_vec()
        }),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
