//! Running the `sandboxctl` binary the way a user does, in a home of its own, from one
//! command builder (`sandboxctl_in`): `Home` gives it a fake systemd on a private bus,
//! the real Quadlet generator and a fake podman that records its arguments and never
//! touches containers; `Sandbox` gives it no systemd at all, for the paths that must
//! fail before they reach one. The environment is set on the child process only,
//! starting from an empty one.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::fake_systemd::FakeSystemd;

/// A podman that answers what sandboxctl asks of it here: its version, `image exists`
/// (yes, unless the file `podman-no-image` exists next to it, in which case `build`
/// fails too), tmux's list of panes in the sandbox (one live pane: the agent runs) and
/// anything else with success. Each call is appended to `podman.log`.
const FAKE_PODMAN: &str = r#"#!/bin/sh
here=$(dirname "$0")
echo "$*" >>"$here/podman.log"
case "$1" in
--version) echo "podman version 5.4.2" ;;
image) [ "$2" = exists ] && [ -e "$here/podman-no-image" ] && exit 1 ;;
exec) case "$*" in *" tmux list-panes "*) echo 0 ;; esac ;;
build)
    if [ -e "$here/podman-no-image" ]; then
        echo "Error: the fake podman builds nothing" >&2
        exit 125
    fi
    ;;
esac
exit 0
"#;

/// The `sandboxctl` binary under test with an empty environment but for its home, its
/// runtime directory and its session bus: the one command builder of the library
/// tests (`Home::sandboxctl` and `Sandbox::command` add what they fake).
pub fn sandboxctl_in(home: &Path, runtime_dir: &Path, bus: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandboxctl"));
    cmd.env_clear()
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", runtime_dir)
        .env("DBUS_SESSION_BUS_ADDRESS", bus);
    cmd
}

/// Writes `text` to `path` as a program (mode 0755): the fakes the tests put on `PATH`.
pub fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A scratch home with a project dir and no systemd (a bus nobody listens on): for the
/// CLI's validation and error paths, which must fail before they reach the manager.
/// The environment is set on the child only.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("project")).expect("project");
        Self { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().expect("run sandboxctl")
    }

    /// `run` with a fake `podman` (and `journalctl`) in front of `PATH`: shell scripts
    /// given by name and body.
    pub fn run_with_fakes(&self, args: &[&str], fakes: &[(&str, &str)]) -> std::process::Output {
        let bin = self.dir.path().join("fake-bin");
        std::fs::create_dir_all(&bin).expect("fake-bin");
        for (name, body) in fakes {
            let path = bin.join(name);
            write_executable(&path, &format!("#!/bin/sh\n{body}\n"));
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        self.command(args)
            .env("PATH", path)
            .env("SANDBOXCTL_PODMAN", bin.join("podman"))
            .output()
            .expect("run sandboxctl")
    }

    /// Settings for a client written by hand, as `enable` would have left them.
    pub fn client_settings(&self, client: &str, toml: &str) -> PathBuf {
        let cfg = self
            .home()
            .join(".local/share/agent-sandbox/clients")
            .join(client)
            .join("config");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        std::fs::write(cfg.join("sandbox.toml"), toml).expect("settings");
        cfg
    }

    /// A podman that knows its version and succeeds at everything else.
    pub fn fake_podman(&self) -> PathBuf {
        let path = self.dir.path().join("fake-podman");
        if !path.exists() {
            write_executable(
                &path,
                "#!/bin/sh\n[ \"$1\" = --version ] && echo 'podman version 5.4.2'\nexit 0\n",
            );
        }
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        // Nothing listens on this bus: a command that got past validation would fail
        // to reach systemd, still before writing anything.
        let bus = format!("unix:path={}/no-bus", self.dir.path().display());
        let mut cmd = sandboxctl_in(&self.home(), &self.dir.path().join("run"), &bus);
        cmd.args(args)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // The real generator: host detection accepts only a program that generates
            // a unit from a probe, so a stand-in such as `/bin/true` does not pass.
            .env("SANDBOXCTL_QUADLET", super::quadlet());
        cmd
    }

    /// Every file under the home directory, for "nothing was written" checks.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                }
                out.push(p);
            }
        }
        let mut out = Vec::new();
        walk(&self.home(), &mut out);
        // The host-detection cache is not client state.
        out.retain(|p| !p.starts_with(self.home().join(".cache")));
        out
    }
}

/// A user's home with sandboxctl's world around it.
pub struct Home {
    pub fake: FakeSystemd,
    quadlet: PathBuf,
    dir: tempfile::TempDir,
}

impl Home {
    /// A fresh home; the fake manager runs the real generator over the unit directory
    /// on Reload, so only units the generator accepts become loaded services.
    pub fn new() -> Self {
        let quadlet = super::quadlet();
        let dir = tempfile::tempdir().expect("temp home");
        let bin = dir.path().join("fake-bin");
        std::fs::create_dir_all(&bin).expect("create fake-bin");
        let podman = bin.join("podman");
        write_executable(&podman, FAKE_PODMAN);
        std::fs::create_dir_all(dir.path().join("run")).expect("create the runtime dir");
        let fake = FakeSystemd::start();
        let home = Self { fake, quadlet, dir };
        home.fake.run_generator(&home.quadlet, &home.unit_dir());
        home.fake.load_services(&home.service_dir());
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `XDG_RUNTIME_DIR`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// Where Quadlet units go: `~/.config/containers/systemd`.
    pub fn unit_dir(&self) -> PathBuf {
        self.path().join(".config/containers/systemd")
    }

    /// Where plain user services go: `~/.config/systemd/user`.
    pub fn service_dir(&self) -> PathBuf {
        self.path().join(".config/systemd/user")
    }

    /// The plain service sandboxctl writes where Quadlet is not used.
    pub fn service_file(&self, client: &str) -> PathBuf {
        self.service_dir().join(format!("agent-{client}.service"))
    }

    pub fn unit_file(&self, client: &str) -> PathBuf {
        self.unit_dir().join(format!("agent-{client}.container"))
    }

    /// `~/.local/share/agent-sandbox/clients/<client>`.
    pub fn client_dir(&self, client: &str) -> PathBuf {
        self.path()
            .join(".local/share/agent-sandbox/clients")
            .join(client)
    }

    /// A directory under the home, created (e.g. a project).
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(&p).expect("create a directory");
        p
    }

    /// The arguments of every podman call so far, one per line.
    pub fn podman_log(&self) -> String {
        std::fs::read_to_string(self.path().join("fake-bin/podman.log")).unwrap_or_default()
    }

    /// Makes the fake podman say the image is missing and fail to build it.
    pub fn without_image(&self) {
        std::fs::write(self.path().join("fake-bin/podman-no-image"), "").expect("write flag");
    }

    /// `sandboxctl ARGS…` in this home.
    pub fn sandboxctl<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = sandboxctl_in(self.path(), &self.runtime_dir(), self.fake.address());
        cmd.args(args)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SANDBOXCTL_QUADLET", &self.quadlet)
            .env("SANDBOXCTL_PODMAN", self.path().join("fake-bin/podman"))
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Cmd { cmd, input: None }
    }
}

/// A command to run, in the style of casey/just's test builder.
pub struct Cmd {
    cmd: Command,
    /// Written to the child's stdin, then closed.
    input: Option<Vec<u8>>,
}

impl Cmd {
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Runs the child in `dir` instead of the home.
    #[allow(dead_code)] // used by tests/cli.rs, not by every test binary
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Sets (or overrides) one environment variable of the child.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Feeds `bytes` to the command's stdin (used by tests/cli.rs).
    #[allow(dead_code)]
    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Self {
        self.input = Some(bytes.to_vec());
        self
    }

    /// Gives the child a stdout whose reader is gone before it starts, as `sandboxctl …
    /// | head -0` has once head exited: every write to it fails with EPIPE.
    #[allow(dead_code)] // used by tests/cli.rs, not by every test binary
    pub fn stdout_closed(mut self) -> Self {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        self.cmd.stdout(writer);
        self
    }

    pub fn run(mut self) -> Output {
        let line = format!("{:?}", self.cmd);
        let out = match self.input.take() {
            None => self.cmd.output().expect("run sandboxctl"),
            Some(bytes) => {
                use std::io::Write as _;
                let mut child = self
                    .cmd
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("run sandboxctl");
                let mut stdin = child.stdin.take().expect("stdin");
                // A command that refuses before reading closes its end: ignore EPIPE.
                let _ = stdin.write_all(&bytes);
                drop(stdin);
                child.wait_with_output().expect("wait for sandboxctl")
            }
        };
        Output {
            line,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a run printed and how it ended.
pub struct Output {
    line: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit status 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success:\n{self}");
        self
    }

    /// Asserts exit status 1 and a single `sandboxctl: …` error line on stderr that
    /// contains every one of `wanted`.
    #[track_caller]
    pub fn failure(self, wanted: &[&str]) -> Self {
        assert_eq!(self.code, Some(1), "expected exit status 1:\n{self}");
        assert!(
            self.stderr.starts_with("sandboxctl: "),
            "expected `sandboxctl: <error>` on stderr:\n{self}"
        );
        for w in wanted {
            assert!(self.stderr.contains(w), "stderr lacks {w:?}:\n{self}");
        }
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit: {:?}\n--- stdout\n{}--- stderr\n{}",
            self.line, self.code, self.stdout, self.stderr
        )
    }
}
