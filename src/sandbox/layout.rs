//! Where sandboxctl keeps things on disk: per-client state under the data directory,
//! Quadlet units under the user's containers/systemd directory.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::sandbox::client::ClientName;

/// The file names of sandboxctl's own template units: the per-client egress proxy and
/// the notifier, each a socket and the service it starts.
pub const PROXY_SOCKET_FILE: &str = "sandboxctl-proxy@.socket";
pub const PROXY_SERVICE_FILE: &str = "sandboxctl-proxy@.service";
pub const NOTIFY_SOCKET_FILE: &str = "sandboxctl-notify@.socket";
pub const NOTIFY_SERVICE_FILE: &str = "sandboxctl-notify@.service";

/// The host directory of a client's proxy socket, relative to the user's runtime
/// directory (`%t` in unit files).
pub fn proxy_socket_dir_relative(client: &ClientName) -> String {
    format!("agent-sandbox/proxy/{client}")
}

/// The host directory of a client's agent event socket, relative to the user's runtime
/// directory (`%t` in unit files).
pub fn events_dir_relative(client: &ClientName) -> String {
    format!("agent-sandbox/events/{client}")
}

/// The per-client directories, each created with mode 0700.
pub const CLIENT_SUBDIRS: [&str; 5] = ["claude", "codex", "config", "history", HOME_SUBDIR];

/// The client's persistent home, mounted at `/home/agent`.
pub const HOME_SUBDIR: &str = "home";

/// The file holding a client's settings, under its `config/` directory.
pub const SETTINGS_FILE: &str = "sandbox.toml";

/// The client's network policy (allowlist mode), under its `config/` directory.
pub const POLICY_FILE: &str = "network.toml";

/// The empty file masks mount, in the client's `config/`.
pub const MASK_FILE: &str = "masked";

#[derive(Debug, Clone)]
pub struct Layout {
    /// `$AGENT_SANDBOX_DATA`, default `$XDG_DATA_HOME/agent-sandbox`.
    pub data_dir: PathBuf,
    /// `$XDG_CONFIG_HOME/containers/systemd`.
    pub unit_dir: PathBuf,
    /// `$XDG_CACHE_HOME/sandboxctl`.
    pub cache_dir: PathBuf,
    /// `$XDG_CONFIG_HOME/systemd/user`, where the proxy's template units go.
    pub systemd_user_dir: PathBuf,
    /// `$HOME/.local/libexec/sandboxctl`: the copy of sandboxctl that the proxy units run.
    /// No sandbox may mount it (an agent that could replace it would run code on the host).
    pub libexec_dir: PathBuf,
    /// `$HOME`, for the host's own secrets and configuration that no sandbox may see.
    pub home_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR`, if set: the user manager's, Podman's and the proxies' sockets.
    pub runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/sandboxctl/config.toml`: the user's defaults for new clients.
    pub user_config: PathBuf,
}

impl Layout {
    /// The layout for the current user, from the environment.
    pub fn from_env() -> Result<Self> {
        let data_dir = match std::env::var_os("AGENT_SANDBOX_DATA") {
            Some(v) if !v.is_empty() => {
                let p = PathBuf::from(v);
                if !p.is_absolute() {
                    bail!(
                        "AGENT_SANDBOX_DATA={} is not an absolute path; set it to an absolute directory",
                        p.display()
                    );
                }
                p
            }
            _ => dirs::data_dir()
                .context("cannot find the data directory: set HOME or XDG_DATA_HOME")?
                .join("agent-sandbox"),
        };
        let config_dir = dirs::config_dir()
            .context("cannot find the config directory: set HOME or XDG_CONFIG_HOME")?;
        let unit_dir = config_dir.join("containers/systemd");
        let systemd_user_dir = config_dir.join("systemd/user");
        let user_config = config_dir.join("sandboxctl/config.toml");
        let cache_dir = dirs::cache_dir()
            .context("cannot find the cache directory: set HOME or XDG_CACHE_HOME")?
            .join("sandboxctl");
        let home_dir = dirs::home_dir().context("cannot find the home directory: set HOME")?;
        let libexec_dir = home_dir.join(".local/libexec/sandboxctl");
        Ok(Self {
            data_dir,
            unit_dir,
            cache_dir,
            systemd_user_dir,
            libexec_dir,
            home_dir,
            runtime_dir: dirs::runtime_dir(),
            user_config,
        })
    }

    /// Every directory under one root, for unit tests.
    #[cfg(test)]
    pub(crate) fn under(root: &Path) -> Self {
        Self {
            data_dir: root.join("data"),
            unit_dir: root.join("units"),
            cache_dir: root.join("cache"),
            systemd_user_dir: root.join("systemd-user"),
            libexec_dir: root.join("libexec"),
            home_dir: root.join("home"),
            runtime_dir: Some(root.join("run")),
            user_config: root.join("config.toml"),
        }
    }

    pub fn clients_dir(&self) -> PathBuf {
        self.data_dir.join("clients")
    }

    pub fn client_dir(&self, client: &ClientName) -> PathBuf {
        self.clients_dir().join(client.as_str())
    }

    pub fn client_subdir(&self, client: &ClientName, sub: &str) -> PathBuf {
        self.client_dir(client).join(sub)
    }

    pub fn settings_path(&self, client: &ClientName) -> PathBuf {
        self.client_subdir(client, "config").join(SETTINGS_FILE)
    }

    pub fn policy_path(&self, client: &ClientName) -> PathBuf {
        self.client_subdir(client, "config").join(POLICY_FILE)
    }

    pub fn unit_path(&self, client: &ClientName) -> PathBuf {
        self.unit_dir.join(client.unit_file_name())
    }

    /// Creates the client's directories (mode 0700), tightening modes of existing ones.
    /// The empty read-only file mounted over each masked file (see `mask`), in the
    /// client's `config/`, which no sandbox mounts.
    pub fn mask_file(&self, client: &ClientName) -> PathBuf {
        self.client_subdir(client, "config").join(MASK_FILE)
    }

    pub fn create_client_dirs(&self, client: &ClientName) -> Result<()> {
        for sub in CLIENT_SUBDIRS {
            create_private_dir(&self.client_subdir(client, sub))?;
        }
        let mask = self.mask_file(client);
        if fs::symlink_metadata(&mask).is_err() {
            std::os::unix::fs::OpenOptionsExt::mode(
                fs::OpenOptions::new().write(true).create_new(true),
                0o444,
            )
            .open(&mask)
            .with_context(|| format!("cannot create {}", mask.display()))?;
        }
        set_mode(&self.client_dir(client), 0o700)?;
        set_mode(&self.clients_dir(), 0o700)?;
        Ok(())
    }

    /// The host directory of a client's proxy socket, under the runtime directory.
    pub fn proxy_socket_dir(&self, client: &ClientName) -> Option<PathBuf> {
        let runtime = self.runtime_dir.as_ref()?;
        Some(runtime.join(proxy_socket_dir_relative(client)))
    }

    /// Whether `create_client_dirs` would change nothing: every directory there and
    /// private, and the mask file there.
    pub fn client_dirs_ready(&self, client: &ClientName) -> bool {
        let private = |d: &Path| {
            fs::symlink_metadata(d)
                .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o7777 == 0o700)
        };
        CLIENT_SUBDIRS
            .iter()
            .all(|sub| private(&self.client_subdir(client, sub)))
            && private(&self.client_dir(client))
            && private(&self.clients_dir())
            && fs::symlink_metadata(self.mask_file(client)).is_ok()
    }

    /// Clients that have a settings file, sorted by name.
    pub fn list_clients(&self) -> Result<Vec<ClientName>> {
        let dir = self.clients_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(client) = ClientName::parse(&name)
                && self.settings_path(&client).is_file()
            {
                out.push(client);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Deletes a client's data directory, whatever the agent planted in the parts it could
/// write (its home above all): symbolic links are removed, never followed (a link to
/// `~/.ssh` or `/` takes nothing with it), FIFOs and sockets are unlinked, never
/// opened, and directories the agent made unreadable or read-only are given back their
/// owner's permissions first. Call it with the sandbox stopped.
pub fn remove_client_tree(dir: &Path) -> Result<()> {
    // std's remove_dir_all opens each directory relative to its parent with
    // O_NOFOLLOW and unlinks entries: it never leaves the tree through a link.
    if fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot delete {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("cannot delete {}: not a directory", dir.display());
    }
    open_up(dir, meta.uid())?;
    fs::remove_dir_all(dir).with_context(|| format!("cannot delete {}", dir.display()))
}

/// Gives `dir` and every directory below it that belongs to `uid` read, write and
/// search permission for its owner, so that they can be listed and emptied. Only real
/// directories are touched (checked without following links). Others' directories
/// (the empty mount points Podman makes in the home as the container's root, a
/// subordinate uid) are left as they are: an empty one is removed all the same.
fn open_up(dir: &Path, uid: u32) -> Result<()> {
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Ok(());
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        set_mode(dir, 0o700)?;
    }
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        // `file_type` is lstat's: a link to a directory is a link.
        if entry
            .file_type()
            .with_context(|| format!("cannot read {}", entry.path().display()))?
            .is_dir()
        {
            open_up(&entry.path(), uid)?;
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents; the directory itself gets mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    set_mode(dir, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_dirs_are_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = Layout::under(tmp.path());
        let c = ClientName::parse("acme").expect("name");
        l.create_client_dirs(&c).expect("create");
        for sub in CLIENT_SUBDIRS {
            let m = fs::metadata(l.client_subdir(&c, sub)).expect("meta");
            assert_eq!(m.permissions().mode() & 0o777, 0o700, "{sub}");
        }
        assert_eq!(
            l.settings_path(&c),
            tmp.path().join("data/clients/acme/config/sandbox.toml")
        );
        assert_eq!(
            l.unit_path(&c),
            tmp.path().join("units/agent-acme.container")
        );
    }

    #[test]
    fn removing_a_client_never_follows_what_the_agent_planted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = Layout::under(tmp.path());
        let c = ClientName::parse("acme").expect("name");
        l.create_client_dirs(&c).expect("create");
        // A host directory the agent must not be able to take with the client.
        let host = tmp.path().join("host-ssh");
        fs::create_dir(&host).expect("mkdir");
        fs::write(host.join("id_ed25519"), "key").expect("write");
        let home = l.client_subdir(&c, HOME_SUBDIR);
        std::os::unix::fs::symlink(&host, home.join(".ssh")).expect("symlink");
        std::os::unix::fs::symlink(host.join("id_ed25519"), home.join("key")).expect("symlink");
        std::os::unix::fs::symlink("/", home.join("root")).expect("symlink");
        rustix::fs::mkfifoat(rustix::fs::CWD, home.join("fifo"), rustix::fs::Mode::RWXU)
            .expect("fifo");
        // Directories the agent locked: no permissions at all, and read-only.
        let locked = home.join(".config/locked");
        fs::create_dir_all(locked.join("deeper")).expect("mkdir");
        fs::write(locked.join("deeper/f"), "x").expect("write");
        fs::set_permissions(locked.join("deeper"), fs::Permissions::from_mode(0o500))
            .expect("chmod");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        // And the host dir behind a link, locked too: it must keep its mode.
        fs::set_permissions(&host, fs::Permissions::from_mode(0o500)).expect("chmod");
        remove_client_tree(&l.client_dir(&c)).expect("remove");
        assert!(!l.client_dir(&c).exists());
        assert_eq!(
            fs::read_to_string(host.join("id_ed25519")).expect("host file survives"),
            "key"
        );
        let mode = fs::metadata(&host).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o500, "a directory behind a link is not touched");
    }

    #[test]
    fn lists_only_clients_with_settings() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = Layout::under(tmp.path());
        for name in ["beta", "alpha"] {
            let c = ClientName::parse(name).expect("name");
            l.create_client_dirs(&c).expect("create");
            fs::write(l.settings_path(&c), "agent = \"shell\"\n").expect("write");
        }
        fs::create_dir_all(l.clients_dir().join("half-made")).expect("mkdir");
        fs::create_dir_all(l.clients_dir().join("Not_Valid")).expect("mkdir");
        let names: Vec<String> = l
            .list_clients()
            .expect("list")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["alpha", "beta"]);
    }
}
