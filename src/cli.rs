//! The command line, declared with clap's derive API. Doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::sandbox::settings::{Agent, Autonomy, NetworkMode};

/// Locked-down, always-on coding-agent sandboxes, one per client, on rootless Podman
/// managed by your systemd user manager.
#[derive(Debug, Parser)]
#[command(name = "sandboxctl", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update clients: their data dirs, settings and Quadlet unit; reload systemd.
    ///
    /// Several clients can be given at once, separated by commas; they get the same
    /// options and systemd is reloaded once.
    Enable(EnableArgs),
    /// Stop a client's sandbox and remove its unit; data is kept unless --purge.
    Disable {
        client: String,
        /// Also delete the client's data (agent config, history, settings).
        #[arg(long)]
        purge: bool,
    },
    /// Start a client's sandbox and wait until it runs.
    Start { client: String },
    /// Stop a client's sandbox.
    Stop { client: String },
    /// Restart a client's sandbox (the agent restarts; the client's data stays).
    Restart { client: String },
    /// Show a client's state and settings (all clients without an argument).
    Status {
        client: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List all clients with their state.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Attach to the agent's tmux session, starting the sandbox if needed.
    ///
    /// Detach with the tmux prefix (Ctrl-b d): the agent keeps running, and attaching
    /// again resumes it.
    Attach {
        client: String,
        /// The tmux session to attach to or create.
        #[arg(long, default_value = "main")]
        session: String,
        /// Work on branch NAME in a git worktree of the client's first project
        /// (`PROJECT/.worktrees/NAME`, created inside the sandbox if missing), in a tmux
        /// session of the same name: agents of one client work in parallel.
        #[arg(long, value_name = "NAME", conflicts_with = "session")]
        worktree: Option<String>,
    },
    /// List the tmux sessions of a client's sandbox: what runs in each, whether it waits
    /// for input, and its worktree.
    Sessions {
        client: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage the git worktrees `attach --worktree` makes.
    #[command(subcommand)]
    Worktree(WorktreeCommand),
    /// Run one command inside a client's running sandbox.
    Exec {
        client: String,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Check the host and every client, and say how to fix what is wrong.
    ///
    /// Exit status 0 only when no check failed (warnings do not fail).
    Doctor {
        /// Also start (or use) this client's sandbox and check its isolation from the
        /// host side and through its egress proxy.
        #[arg(long, value_name = "CLIENT")]
        live: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a client's logs.
    Logs {
        client: String,
        /// The egress proxy's decisions (allowlist mode) instead of the sandbox's log.
        #[arg(long)]
        network: bool,
        /// Keep following new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many lines to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// Print the unit `enable` would write for a client; writes nothing.
    Render(EnableArgs),
    /// Enable, start and attach in one step (the original run-agent.sh interface).
    Run(RunArgs),
    /// Build and manage the agent image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Restart the clients whose image name now points to another image than they run
    /// (after `image build` or `podman pull`); a client whose new image does not come
    /// up is rolled back to its previous image.
    ///
    /// A client with a busy tmux session (an agent running, working or waiting for
    /// input; a command other than a shell at its prompt) is skipped unless --force.
    Update {
        /// Clients to update [default: every client].
        #[arg(value_name = "CLIENT")]
        clients: Vec<String>,
        /// List what would be restarted (old → new image, agent versions); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Restart busy clients too (their running sessions end).
        #[arg(long)]
        force: bool,
    },
    /// Manage a client's credentials: Podman secrets the agent sees as environment
    /// variables, never written into unit files.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Allow hosts in a client's network policy: `host` (port 443), `*.suffix`,
    /// `host:port`, an IP literal, or a bundle (`@github`, `@packages`, `@claude`,
    /// `@codex`). Applies to the next connection, no restart.
    Allow {
        client: String,
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
        /// The hosts may be on a private network (RFC 1918, IPv6 unique local, CGNAT),
        /// e.g. an internal git server. Loopback, link-local and metadata addresses
        /// are reachable only through an IP literal given with this flag.
        #[arg(long)]
        private: bool,
    },
    /// Deny hosts (deny beats allow), or switch a bundle off (`@github`).
    Deny {
        client: String,
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Show a client's network policy.
    Policy { client: String },
    /// Run a client's egress proxy (started by systemd socket activation).
    Proxy(ProxyArgs),
    /// Print the shell completion script: commands, flags and client names.
    ///
    /// bash: `sandboxctl completions bash > ~/.local/share/bash-completion/completions/sandboxctl`;
    /// zsh: `sandboxctl completions zsh > ~/.zfunc/_sandboxctl` (a directory in `fpath`);
    /// fish: `sandboxctl completions fish > ~/.config/fish/completions/sandboxctl.fish`.
    /// The script asks `sandboxctl` (found in PATH) for the candidates at each Tab.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (one per command) into a directory.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Forward a port of the host's 127.0.0.1 to a server on the sandbox's 127.0.0.1
    /// (works without network in the sandbox); without PORT, list the forwards.
    Port(PortArgs),
    /// Write a client's sandbox as Kubernetes objects: the agent as a Sandbox (or Pod)
    /// with volume claims, its egress proxy and network policies (multi-document YAML).
    ///
    /// What has no Kubernetes counterpart (host mounts, podman arguments, port
    /// forwards, …) is listed as not exported, at the top of the output and on stderr.
    Export(ExportArgs),
    /// Serve a client's agent event socket and send desktop notifications (started by
    /// systemd socket activation of `sandboxctl-notify@CLIENT.socket`).
    #[command(hide = true)]
    Notify {
        #[arg(long)]
        client: String,
        /// Serve the socket systemd passes in (`LISTEN_FDS`).
        #[arg(long, required = true)]
        systemd_socket: bool,
    },
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub client: String,
    /// The port a server listens on inside the sandbox (on 127.0.0.1).
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The port on the host's 127.0.0.1 [default: PORT]; 1024 or above.
    #[arg(long, value_name = "PORT", requires = "port",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub host_port: Option<u16>,
    /// Keep the forward across logout and reboot (units in ~/.config/systemd/user,
    /// started with the user manager); without it they live in the runtime directory.
    #[arg(long, requires = "port", conflicts_with = "rm")]
    pub persist: bool,
    /// Remove the forward(s) of PORT (only the one of --host-port, if given).
    #[arg(long, requires = "port")]
    pub rm: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub client: String,
    /// The target platform.
    #[arg(long, value_enum, value_name = "TARGET")]
    pub to: ExportTarget,
    /// What the agent runs as: sandbox (the agent-sandbox controller's `Sandbox`) or pod
    /// (a plain `Pod` and `PersistentVolumeClaim`s, e.g. for `podman kube play`).
    #[arg(long, value_enum, default_value = "sandbox")]
    pub flavor: crate::render::kube::Flavor,
    /// The namespace [default: sandboxctl-CLIENT, created by the output].
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The uid the agent and proxy run as [default: yours, as with the local sandbox].
    #[arg(long, value_name = "UID", value_parser = clap::value_parser!(u32).range(1..))]
    pub uid: Option<u32>,
    /// The gid they run as [default: yours].
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Include the client's secret values in a Secret (the file is then a credential).
    #[arg(long)]
    pub include_secrets: bool,
    /// Write to FILE (mode 0600) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Where `export` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportTarget {
    /// Kubernetes objects.
    Kube,
}

#[derive(Debug, Subcommand)]
pub enum WorktreeCommand {
    /// End a worktree's tmux session and remove the worktree (inside the sandbox); the
    /// branch stays.
    Rm {
        client: String,
        name: String,
        /// Remove it even with uncommitted changes (they are lost).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("listen").required(true))]
pub struct ProxyArgs {
    /// The client whose sandbox the proxy serves.
    #[arg(long)]
    pub client: String,
    /// The data directory whose `clients/CLIENT` the proxy serves: its policy, its
    /// settings and the key it holds [default: `$AGENT_SANDBOX_DATA`, else
    /// `$XDG_DATA_HOME/agent-sandbox`]. Each client's drop-in names it.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The policy file [default: the client's config/network.toml].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Serve the socket systemd passes in (`LISTEN_FDS`).
    #[arg(long, group = "listen")]
    pub systemd_socket: bool,
    /// Listen on a Unix socket.
    #[arg(long, value_name = "PATH", group = "listen")]
    pub listen_unix: Option<PathBuf>,
    /// Listen on a TCP address (in a cluster: `0.0.0.0:3128`, the proxy Service's port).
    #[arg(long, value_name = "ADDR", group = "listen")]
    pub listen_tcp: Option<std::net::SocketAddr>,
    /// Most connections open at once (tunnels included); one more is answered 503.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,
    /// Close a connection or tunnel after this many seconds without a byte either way.
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret, reading its value from stdin (e.g. `sandboxctl secret set acme
    /// GH_TOKEN < token.txt`); restart the sandbox to apply.
    Set {
        client: String,
        /// Environment variable name inside the sandbox, e.g. `GH_TOKEN`.
        name: String,
    },
    /// List a client's secrets (names only).
    List { client: String },
    /// Remove a client's secret; restart the sandbox to apply.
    Rm { client: String, name: String },
}

/// Options that describe a client's sandbox.
#[derive(Debug, Args, Clone, Default)]
pub struct SandboxOptions {
    /// The agent the sandbox runs: claude, codex or shell [default: claude].
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<Agent>,
    /// The container image [default: localhost/agent-sandbox:latest].
    #[arg(long, value_name = "IMG")]
    pub image: Option<String>,
    /// Extra bind mount, read-only (repeatable).
    #[arg(long = "mount", value_name = "HOST:CONTAINER")]
    pub mounts: Vec<String>,
    /// Extra bind mount, read-write (repeatable).
    #[arg(long = "mount-rw", value_name = "HOST:CONTAINER")]
    pub mounts_rw: Vec<String>,
    /// Extra argument for `podman run` (repeatable; may weaken the sandbox).
    #[arg(long = "podman-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub podman_args: Vec<String>,
    /// Share the Claude login of this config directory (e.g. ~/.claude) on purpose: its
    /// credentials file is copied in, and a token refresh of that same login is copied
    /// back (its tokens only); the directory itself is not mounted.
    #[arg(long, value_name = "DIR")]
    pub claude_config: Option<PathBuf>,
    /// Let the agent write the projects' `.git/config` and `.git/hooks`, which git on the
    /// host executes (`=false` to lock them again) [default: false, read-only].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub git_writable_config: Option<bool>,
    /// What the agent does without asking, inside the sandbox only: ask (its own
    /// permission prompts) or auto (Claude skips them, Codex runs without approvals)
    /// [default: ask].
    #[arg(long, value_name = "MODE")]
    pub autonomy: Option<Autonomy>,
    /// Extra argument for the agent's command line (repeatable; replaces the list,
    /// `--reset` clears it), e.g. `--agent-arg=--model --agent-arg=sonnet`.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
    /// Git's `user.name` inside the sandbox (`''` removes it).
    #[arg(long, value_name = "NAME")]
    pub git_name: Option<String>,
    /// Git's `user.email` inside the sandbox (`''` removes it).
    #[arg(long, value_name = "EMAIL")]
    pub git_email: Option<String>,
    /// A host whose HTTPS git credential requests are answered with the client's
    /// `GH_TOKEN` secret: HOST[:PORT], `http://HOST:PORT` for plain HTTP, or `none`
    /// (repeatable; replaces the list) [default: github.com].
    #[arg(long = "git-credential-host", value_name = "HOST[:PORT]")]
    pub git_credential_hosts: Vec<String>,
    /// Desktop notifications when an agent waits for input or finishes: on or off
    /// [default: on].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub notify: Option<bool>,
    /// Memory limit of the sandbox, e.g. 8g or 512m (no swap beyond it; `none`
    /// removes it). Needs cgroup v2 with the memory controller delegated to you.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU quota of the sandbox in CPUs, e.g. 2 or 0.5 (`none` removes it). Needs
    /// cgroup v2 with the cpu controller delegated to you.
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Most processes and threads in the sandbox, e.g. 4096 (`none` removes it). Needs
    /// cgroup v2 with the pids controller delegated to you.
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
    /// Give the agent its API key (mounted and exported) instead of letting the egress
    /// proxy add it on the way out: on or off [default: off, the proxy holds the key].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub key_in_sandbox: Option<bool>,
    /// Another API path the proxy adds the held key to, beyond what the agent uses
    /// (repeatable; replaces the list, `--reset` clears it), e.g. `--key-path '/v1/files*'`
    /// (`*` at the end: that path and everything below it).
    #[arg(long = "key-path", value_name = "PATH")]
    pub key_paths: Vec<String>,
    /// Files of the projects the sandbox sees empty and read-only, beyond the defaults
    /// (repeatable; replaces the list, `--reset` clears it): a file name at any depth or
    /// a path below the project, with `*` and `?`, e.g. `--mask 'secrets.*'`.
    #[arg(long = "mask", value_name = "PATTERN")]
    pub masks: Vec<String>,
    /// Mask the default set (`.env`, `.env.*`, keys and certificates, `.npmrc`, cloud
    /// credential files; `enable` prints it): on or off [default: on].
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub default_masks: Option<bool>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("use on or off, not {s:?}")),
    }
}

#[derive(Debug, Args, Clone)]
pub struct EnableArgs {
    /// Client name(s): a-z, 0-9 and '-'; several separated by commas.
    pub client: String,
    /// Project directories, mounted read-write at their host paths.
    pub projects: Vec<PathBuf>,
    #[command(flatten)]
    pub options: SandboxOptions,
    /// Network: allowlist (only the hosts the client's policy allows, through its
    /// proxy), none (loopback only) or open (anything) [default: allowlist].
    #[arg(long, value_name = "MODE")]
    pub network: Option<NetworkMode>,
    /// Start from the default settings instead of the client's current ones.
    #[arg(long)]
    pub reset: bool,
    /// Also start the sandbox(es) now.
    #[arg(long)]
    pub now: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Client/project identifier for data compartmentalisation.
    #[arg(long, value_name = "NAME")]
    pub client: String,
    /// Project directory, mounted read-write at its host path [default: the current
    /// directory, unless it may not be a project (e.g. your home)].
    pub project: Option<PathBuf>,
    #[command(flatten)]
    pub options: SandboxOptions,
    /// Reattach to the client's existing sandbox without changing it (a client that
    /// does not exist yet is created and started).
    #[arg(long)]
    pub resume: bool,
    /// Network: allowlist (only the hosts the client's policy allows, through its
    /// proxy), none (loopback only) or open (anything: `run-agent.sh`'s default)
    /// [default: the client's current mode; allowlist for a new client].
    #[arg(long, value_name = "MODE", conflicts_with_all = ["no_network", "firewall"])]
    pub network: Option<NetworkMode>,
    /// Disable all container networking (loopback only): `--network none`.
    #[arg(long, conflicts_with = "firewall")]
    pub no_network: bool,
    /// `--network allowlist` with the hosts `run-agent.sh --firewall` allowed switched
    /// on: the agent's API, `@github` (SSH to GitHub included) and `@packages`.
    #[arg(long)]
    pub firewall: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the agent image with Podman.
    Build {
        /// Base image [default: the Containerfile's registry base].
        #[arg(long, value_name = "IMG")]
        base: Option<String>,
        /// Tag of the built image.
        #[arg(long, value_name = "TAG", default_value = crate::sandbox::settings::DEFAULT_IMAGE)]
        tag: String,
        /// Extra CA certificate (PEM) to trust inside the image (repeatable).
        #[arg(long = "ca-cert", value_name = "FILE")]
        ca_certs: Vec<PathBuf>,
        /// Claude Code version to install, exact (e.g. 2.1.332) [default: the
        /// Containerfile's pin].
        #[arg(long, value_name = "VERSION")]
        claude_version: Option<String>,
        /// Codex version to install, exact (e.g. 0.171.0) [default: the Containerfile's
        /// pin].
        #[arg(long, value_name = "VERSION")]
        codex_version: Option<String>,
        /// Which agent versions to install: pinned (the Containerfile's) or latest (the
        /// newest Claude Code and Codex, looked up with `npm view` on this host)
        /// [default: pinned].
        #[arg(long, value_enum, value_name = "WHICH",
              conflicts_with_all = ["claude_version", "codex_version"])]
        agents: Option<AgentVersions>,
    },
}

/// `image build --agents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentVersions {
    /// The versions the Containerfile pins.
    Pinned,
    /// The newest versions on the npm registry, resolved before the build.
    Latest,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

/// A shell with a completion script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}
