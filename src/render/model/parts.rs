//! The parts of a container's description: mounts, environment, secrets, network,
//! security, labels, dependencies and the host adaptations with their reasons.

use crate::base::escape;

/// The label `podman auto-update` reads (Quadlet's `AutoUpdate=` sets it).
pub const AUTO_UPDATE_LABEL: &str = "io.containers.autoupdate";

/// How `podman auto-update` (and `sandboxctl update`) finds a newer image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoUpdate {
    /// The image in local storage under the same name was rebuilt (`image build`).
    Local,
    /// The registry has a newer image under the same reference.
    Registry,
}

impl AutoUpdate {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Registry => "registry",
        }
    }

    /// `local` for an image only in local storage (`localhost/…`, what `image build`
    /// makes), `registry` for a fully qualified reference; none for a short name
    /// (Podman refuses `registry` there) or a digest (nothing can be newer).
    pub fn for_image(image: &str) -> Option<Self> {
        if image.contains('@') {
            return None;
        }
        let (domain, _) = image.split_once('/')?;
        if domain == "localhost" {
            Some(Self::Local)
        } else if domain.contains('.') || domain.contains(':') {
            Some(Self::Registry)
        } else {
            None
        }
    }
}

/// The container's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNs {
    /// The host user is the same uid inside, so files in mounts keep their owner.
    KeepId,
}

impl UserNs {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeepId => "keep-id",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Bind(Bind),
    Tmpfs(Tmpfs),
}

/// A host directory or file mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: BindSource,
    pub target: String,
    pub access: Access,
    pub relabel: Option<Relabel>,
    /// What the mount is for (targets without host paths, like Kubernetes, map by it).
    pub role: BindRole,
}

/// What a bind mount is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRole {
    /// A project directory, at its host path.
    Project,
    /// A git dir pinned over a project, protecting git on the host.
    GitPin,
    /// One of the client's own state dirs (`home`, `claude`, `codex`, `history`).
    State(&'static str),
    /// The directory of the egress proxy's socket.
    ProxySocket,
    /// The directory of the agent event socket (notifications).
    NotifyEvents,
    /// A mount the user asked for (`--mount`, `--mount-rw`).
    User,
    /// The empty file over a masked file of a project (`mask`).
    Mask,
}

impl Bind {
    /// The podman volume options (`rw,z`, `ro`, …).
    pub fn options(&self) -> String {
        let mut o = self.access.as_str().to_owned();
        if let Some(r) = self.relabel {
            o.push(',');
            o.push_str(r.as_str());
        }
        o
    }

    pub fn escape_source(&self) -> escape::VolumeSource<'_> {
        match &self.source {
            BindSource::Host(p) => escape::VolumeSource::Path(p),
            BindSource::Runtime(p) => escape::VolumeSource::Runtime(p),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSource {
    /// An absolute host path.
    Host(String),
    /// A path relative to the user's runtime directory (`%t` in unit files), which
    /// systemd expands when the unit starts.
    Runtime(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWrite => "rw",
            Self::ReadOnly => "ro",
        }
    }
}

/// `SELinux` relabelling of a bind mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relabel {
    /// `z`: a label other containers and tools may share.
    Shared,
    /// `Z`: a label private to this container.
    Private,
}

impl Relabel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "z",
            Self::Private => "Z",
        }
    }
}

/// A tmpfs mounted at `target` with podman's tmpfs options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: String,
    pub options: String,
}

impl Tmpfs {
    /// `TARGET:OPTIONS`, as `--tmpfs` and `Tmpfs=` take it.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.target, self.options)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    pub(crate) fn new(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            value: value.into(),
        }
    }

    /// `NAME=VALUE`.
    pub fn assignment(&self) -> String {
        format!("{}={}", self.name, self.value)
    }
}

/// A Podman secret mounted as a file under `/run/secrets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMount {
    /// The secret's name in Podman's store.
    pub podman_name: String,
    pub target: String,
}

impl SecretMount {
    /// `NAME,type=mount,target=TARGET`, as `--secret` and `Secret=` take it.
    pub fn spec(&self) -> String {
        format!("{},type=mount,target={}", self.podman_name, self.target)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Podman's default network for rootless containers.
    Default,
    /// No network interface but loopback.
    None,
}

/// The container's confinement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// Capabilities dropped (`all`).
    pub drop_capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub read_only: bool,
    /// An init as PID 1 that reaps processes and forwards signals.
    pub init: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl Label {
    /// `KEY=VALUE`.
    pub fn assignment(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

/// A unit started with the sandbox and ordered before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub unit: String,
    pub why: &'static str,
}

/// The service's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `Restart=on-failure`: a crashed agent comes back, a stopped one stays stopped.
    pub restart_on_failure: bool,
    /// Long enough for a first image pull.
    pub timeout_start_sec: u32,
}

/// Something this host needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adaptation {
    pub kind: AdaptationKind,
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdaptationKind {
    /// `--cgroups=disabled`: rootless Podman on cgroup v1.
    CgroupsDisabled,
    /// Remove a stale cid file before starting (old Podman leaves one).
    RemoveStaleCidFile,
    /// No journald: stdout and stderr go to this file under the runtime directory.
    LogToFile { runtime_relative: String },
}
