//! The agent image: `sandboxctl image build`, the existence check, and building the
//! default image when a command needs it and it is missing.
//!
//! The build context (the `image/` directory of the source tree) is embedded in the
//! binary, so an installed `sandboxctl` builds without a checkout: each build writes it
//! to a temporary directory, adds the extra CA certificates under `certs/` and the running
//! `sandboxctl` executable itself (the proxy of a client exported to Kubernetes runs it
//! from the image), and runs `podman build` there with its progress shown on stderr.

pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub use crate::sandbox::settings::DEFAULT_IMAGE;

pub use state::*;

/// The file of the build context that the Containerfile copies to
/// `render::kube::PROXY_BINARY`: the running executable, added by each build.
pub const CONTEXT_BINARY: &str = "sandboxctl";

/// Labels the Containerfile sets from its version arguments.
const LABEL_CLAUDE: &str = "io.sandboxctl.claude-code.version";

const LABEL_CODEX: &str = "io.sandboxctl.codex.version";

const LABEL_NODE: &str = "io.sandboxctl.node.version";

/// The npm packages of the agents, as the Containerfile installs them.
pub const CLAUDE_PACKAGE: &str = "@anthropic-ai/claude-code";

pub const CODEX_PACKAGE: &str = "@openai/codex";

/// A file of the build context: path inside the context, contents, mode.
struct ContextFile {
    path: &'static str,
    contents: &'static [u8],
    mode: u32,
}

macro_rules! context_file {
    ($path:literal, $mode:literal) => {
        ContextFile {
            path: $path,
            contents: include_bytes!(concat!("../../../image/", $path)),
            mode: $mode,
        }
    };
}

/// The `image/` directory, embedded. A unit test checks that it lists every file there.
const CONTEXT: &[ContextFile] = &[
    context_file!("Containerfile", 0o644),
    context_file!("README.md", 0o644),
    context_file!("agent-entry", 0o755),
    context_file!("agent-event", 0o755),
    context_file!("agent-package-hosts", 0o755),
    context_file!("agent-session", 0o755),
    context_file!("certs/.keep", 0o644),
    context_file!("certs/README.md", 0o644),
    context_file!("dpkg-nodoc.cfg", 0o644),
    context_file!("git-credential-sandbox", 0o755),
    context_file!("gitconfig", 0o644),
    context_file!("managed-settings.json", 0o644),
    context_file!("profile.sh", 0o644),
    context_file!("session.conf", 0o644),
    context_file!("ssh_config", 0o644),
    context_file!("tmux.conf", 0o644),
];

/// What `sandboxctl image build` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Base image (`BASE_IMAGE`); `None` keeps the Containerfile's registry base.
    pub base: Option<String>,
    /// Tag of the built image.
    pub tag: String,
    /// PEM files with extra CA certificates to trust inside the image.
    pub ca_certs: Vec<PathBuf>,
    /// Further `--build-arg`s, e.g. `("CLAUDE_CODE_VERSION", "2.1.332")`.
    pub build_args: Vec<(String, String)>,
}

impl BuildOptions {
    /// The default image from the Containerfile's defaults.
    pub fn default_image() -> Self {
        Self {
            base: None,
            tag: DEFAULT_IMAGE.to_owned(),
            ca_certs: Vec::new(),
            build_args: Vec::new(),
        }
    }
}

/// The outcome of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSummary {
    pub tag: String,
    pub size_bytes: u64,
    pub claude_version: String,
    pub codex_version: String,
    pub node_version: String,
    pub seconds: f64,
}

impl fmt::Display for BuildSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "built {} in {:.0} s", self.tag, self.seconds)?;
        writeln!(
            f,
            "  size         {}",
            crate::base::sizes::human(self.size_bytes)
        )?;
        writeln!(f, "  Claude Code  {}", self.claude_version)?;
        writeln!(f, "  Codex        {}", self.codex_version)?;
        write!(f, "  Node.js      {}", self.node_version)
    }
}

/// Builds the image: progress streams to stderr while podman runs.
pub fn build(opts: &BuildOptions) -> Result<BuildSummary> {
    let started = Instant::now();
    let context = tempfile::Builder::new()
        .prefix("sandboxctl-image-")
        .tempdir()
        .context("creating a temporary build context")?;
    // Read once, from the running process: the image carries the very bytes this host
    // runs, even if the file on disk was replaced since (an upgrade).
    let binary = fs::read("/proc/self/exe")
        .context("cannot read the running sandboxctl (/proc/self/exe) to copy it into the image")?;
    write_context(context.path(), &opts.ca_certs, &binary)?;

    let mut cmd = crate::host::podman::command(build_args(opts, context.path()));
    cmd.stdin(Stdio::null()).stdout(io::stderr());
    let status = spawn_checked(&mut cmd)?
        .wait()
        .context("waiting for podman build")?;
    if !status.success() {
        bail!(
            "podman build of {} failed ({status}); its output is above",
            opts.tag
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut summary = inspect(&opts.tag)?;
    summary.seconds = seconds;
    Ok(summary)
}

/// Whether `image` is in the user's podman store.
pub fn exists(image: &str) -> Result<bool> {
    let out = output_checked(&mut crate::host::podman::command([
        "image", "exists", image,
    ]))?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "podman image exists {image} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// Makes sure `image` exists: the default image is built (with progress) when missing;
/// any other image must be built or pulled by the user.
pub fn ensure(image: &str) -> Result<()> {
    if exists(image)? {
        return Ok(());
    }
    if image != DEFAULT_IMAGE {
        bail!(
            "image {image} not found: build it (`sandboxctl image build --tag {image}`) \
             or pull it (`podman pull {image}`)"
        );
    }
    eprintln!("sandboxctl: image {image} is missing; building it (this takes a few minutes)");
    let summary = build(&BuildOptions::default_image()).with_context(|| {
        format!(
            "building {image} failed; behind a TLS-intercepting proxy, build it with \
             `sandboxctl image build --ca-cert <proxy CA file>`"
        )
    })?;
    eprintln!("{summary}");
    Ok(())
}

/// The `podman build` arguments for `opts` with the context at `context`.
fn build_args(opts: &BuildOptions, context: &Path) -> Vec<String> {
    let mut args = vec!["build".to_owned(), "--tag".to_owned(), opts.tag.clone()];
    if let Some(base) = &opts.base {
        args.push("--build-arg".to_owned());
        args.push(format!("BASE_IMAGE={base}"));
    }
    for (name, value) in &opts.build_args {
        args.push("--build-arg".to_owned());
        args.push(format!("{name}={value}"));
    }
    args.push(context.display().to_string());
    args
}

/// Writes the embedded context into `dir`, plus each CA certificate of `ca_certs` as
/// `certs/NN-<name>.crt` (one certificate per file, as update-ca-certificates wants) and
/// `binary` as `CONTEXT_BINARY` (mode 0755; the image's copy is root's).
fn write_context(dir: &Path, ca_certs: &[PathBuf], binary: &[u8]) -> Result<()> {
    let exe = dir.join(CONTEXT_BINARY);
    fs::write(&exe, binary).with_context(|| format!("writing {}", exe.display()))?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", exe.display()))?;
    for file in CONTEXT {
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&path, file.contents).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    for (i, source) in ca_certs.iter().enumerate() {
        let certs = read_ca_certs(source)?;
        let stem = safe_stem(source);
        for (j, pem) in certs.iter().enumerate() {
            let name = if certs.len() == 1 {
                format!("{:02}-{stem}.crt", i + 1)
            } else {
                format!("{:02}-{stem}-{}.crt", i + 1, j + 1)
            };
            let path = dir.join("certs").join(name);
            fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";

const PEM_END: &str = "-----END CERTIFICATE-----";

/// The PEM certificates in `path` (one or more), each ending in a newline. Anything else
/// (DER, a key, text, an unreadable file) is an error naming the file.
fn read_ca_certs(path: &Path) -> Result<Vec<String>> {
    let bytes =
        fs::read(path).with_context(|| format!("reading CA certificate {}", path.display()))?;
    let not_pem = || {
        anyhow::anyhow!(
            "{} is not a PEM CA certificate (expected {PEM_BEGIN} … {PEM_END}; \
             convert DER with `openssl x509 -inform der -in FILE -out FILE.crt`)",
            path.display()
        )
    };
    let text = String::from_utf8(bytes).map_err(|_| not_pem())?;
    let mut certs = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(PEM_BEGIN) {
        let body_start = start + PEM_BEGIN.len();
        let Some(len) = rest[body_start..].find(PEM_END) else {
            return Err(not_pem());
        };
        let body = &rest[body_start..body_start + len];
        let base64 = body.chars().filter(|c| !c.is_whitespace());
        let mut count = 0usize;
        for c in base64 {
            if !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')) {
                return Err(not_pem());
            }
            count += 1;
        }
        if count == 0 || !count.is_multiple_of(4) {
            return Err(not_pem());
        }
        certs.push(format!("{PEM_BEGIN}{body}{PEM_END}\n"));
        rest = &rest[body_start + len + PEM_END.len()..];
    }
    if certs.is_empty() {
        return Err(not_pem());
    }
    Ok(certs)
}

/// A file-name stem safe inside the build context.
fn safe_stem(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.trim_matches('.').is_empty() {
        "ca".to_owned()
    } else {
        safe
    }
}

/// Size and agent versions of an image in the user's store, from `podman image inspect`
/// (the versions are the image's labels).
pub fn inspect(image: &str) -> Result<BuildSummary> {
    let format = format!(
        "{{{{.Size}}}}\t{{{{index .Labels \"{LABEL_CLAUDE}\"}}}}\t\
         {{{{index .Labels \"{LABEL_CODEX}\"}}}}\t{{{{index .Labels \"{LABEL_NODE}\"}}}}"
    );
    let out = output_checked(&mut crate::host::podman::command([
        "image", "inspect", "--format", &format, image,
    ]))?;
    if !out.status.success() {
        bail!(
            "podman image inspect {image} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_inspect(image, &String::from_utf8_lossy(&out.stdout))
}

fn parse_inspect(image: &str, text: &str) -> Result<BuildSummary> {
    let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
    let [size, claude, codex, node] = fields[..] else {
        bail!("unexpected output of podman image inspect {image}: {text:?}");
    };
    let label = |v: &str| match v {
        "" | "<no value>" => "unknown".to_owned(),
        v => v.to_owned(),
    };
    Ok(BuildSummary {
        tag: image.to_owned(),
        size_bytes: size
            .trim()
            .parse()
            .with_context(|| format!("podman reported the size of {image} as {size:?}"))?,
        claude_version: label(claude),
        codex_version: label(codex),
        node_version: label(node),
        seconds: 0.0,
    })
}

fn podman_not_found(cmd: &Command) -> anyhow::Error {
    anyhow::anyhow!(
        "podman not found: install podman (e.g. `sudo apt install podman`), or point \
         SANDBOXCTL_PODMAN at it (tried {})",
        cmd.get_program().to_string_lossy()
    )
}

fn spawn_checked(cmd: &mut Command) -> Result<std::process::Child> {
    cmd.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            podman_not_found(cmd)
        } else {
            anyhow::Error::new(e).context(format!("running {}", cmd.get_program().display()))
        }
    })
}

fn output_checked(cmd: &mut Command) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null());
    cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            podman_not_found(cmd)
        } else {
            anyhow::Error::new(e).context(format!("running {}", cmd.get_program().display()))
        }
    })
}

/// An agent version given to `image build`: exact, because the image's labels record
/// it and `status` shows it (`latest` would say nothing about what was installed).
pub fn check_version(flag: &str, v: &str) -> Result<()> {
    let ok = v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c));
    if !ok {
        bail!(
            "{flag} {}: use an exact npm version such as 2.1.332 (the image's labels record it)",
            crate::base::escape::display(v)
        );
    }
    Ok(())
}
