//! The system-test harness: the test user's environment, a runner for `sandboxctl` and
//! other commands with deadlines, polling helpers, and `Client`, a per-test sandbox that
//! is disabled and purged when it goes out of scope.
//!
//! Everything here runs as the unprivileged test user prepared by
//! `tests/system/setup-host.sh`; a missing prerequisite is a panic with a message saying
//! what to do, never a skip.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long one command may run before the test fails (a start includes a container run).
pub const COMMAND_TIMEOUT: Duration = Duration::from_mins(2);

/// What the suite needs from the host, checked once.
pub struct Env {
    /// The `sandboxctl` binary under test.
    pub bin: PathBuf,
    /// The agent image in the test user's store.
    pub image: String,
    pub home: PathBuf,
    pub runtime_dir: PathBuf,
    pub uid: u32,
    /// `SANDBOXCTL_QUADLET=none`: the run writes plain services instead of Quadlet units
    /// (the lane for hosts whose Podman has no generator).
    pub plain: bool,
}

impl Env {
    /// `$HOME/.config/containers/systemd`, where `enable` writes units.
    pub fn unit_dir(&self) -> PathBuf {
        self.home.join(".config/containers/systemd")
    }

    /// `$HOME/.local/share/agent-sandbox`, the default data root.
    pub fn data_root(&self) -> PathBuf {
        self.home.join(".local/share/agent-sandbox")
    }

    /// Where the user manager's generators write their units.
    pub fn generator_dir(&self) -> PathBuf {
        self.runtime_dir.join("systemd/generator")
    }

    /// The file the user manager loads `unit` from: the generated service in the
    /// Quadlet lane, the plain service `enable` wrote in the plain lane.
    pub fn loaded_unit_file(&self, unit: &str) -> PathBuf {
        if self.plain {
            self.home.join(".config/systemd/user").join(unit)
        } else {
            self.generator_dir().join(unit)
        }
    }
}

fn prerequisite(ok: bool, what: &str) {
    assert!(
        ok,
        "system-test prerequisite missing: {what}\n\
         Prepare the host with `sudo tests/system/setup-host.sh` and run the suite with \
         `sudo tests/run-all.sh` (it runs these tests as the test user)."
    );
}

/// The checked environment; the first call panics if anything is missing.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let bin = std::env::var_os("SANDBOXCTL_BIN").map(PathBuf::from);
        prerequisite(bin.is_some(), "SANDBOXCTL_BIN is not set");
        let bin = bin.expect("checked above");
        prerequisite(
            is_executable(&bin),
            &format!("SANDBOXCTL_BIN={} is not an executable file", bin.display()),
        );
        let uid = rustix::process::getuid().as_raw();
        prerequisite(
            uid != 0,
            "the system tests must run as an unprivileged user, not root",
        );
        let home = std::env::var_os("HOME").map(PathBuf::from);
        prerequisite(home.is_some(), "HOME is not set");
        let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        prerequisite(runtime_dir.is_some(), "XDG_RUNTIME_DIR is not set");
        prerequisite(
            std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
            "DBUS_SESSION_BUS_ADDRESS is not set",
        );
        let state = Command::new("systemctl")
            .args(["--user", "show", "--property=SystemState", "--value"])
            .output();
        let state = state.map_or_else(
            |e| format!("systemctl failed: {e}"),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
        prerequisite(
            state == "running" || state == "degraded",
            &format!("the systemd user manager is not running (SystemState: {state:?})"),
        );
        let generator = [
            "/usr/local/lib/systemd/user-generators/podman-user-generator",
            "/usr/lib/systemd/user-generators/podman-user-generator",
            "/lib/systemd/user-generators/podman-user-generator",
        ]
        .iter()
        .any(|p| is_executable(Path::new(p)));
        prerequisite(
            generator,
            "no Quadlet user generator (podman-user-generator) is installed",
        );
        let image = std::env::var("SANDBOXCTL_TEST_IMAGE")
            .unwrap_or_else(|_| "localhost/agent-sandbox:latest".to_owned());
        let exists = Command::new("podman")
            .args(["image", "exists", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        prerequisite(
            exists,
            &format!("the image {image} is not in the test user's podman store"),
        );
        Env {
            bin,
            image,
            home: home.expect("checked above"),
            runtime_dir: runtime_dir.expect("checked above"),
            uid,
            plain: std::env::var_os("SANDBOXCTL_QUADLET").is_some_and(|v| v == "none"),
        }
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The result of one command, with everything needed to explain a failed assertion.
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n--> {} after {:.2?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.command, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "command failed:\n{self}");
        self
    }

    /// Panics unless the command exited non-zero.
    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "command should have failed with an exit code:\n{self}"
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// A command to run with a deadline; the child gets only the environment we inherit
/// (the test user's, set by `as-user.sh`) plus what is set here.
pub struct Cmd {
    command: Command,
    shown: String,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            command: Command::new(program),
            shown: program.to_string_lossy().into_owned(),
            timeout: COMMAND_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        let _ = write!(self.shown, " {}", shell_quote(&arg.to_string_lossy()));
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion (killing it at the deadline, which fails the test).
    #[track_caller]
    pub fn run(mut self) -> Output {
        let start = Instant::now();
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.shown));
        let mut out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let out = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let err = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for child") {
                break status;
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
                let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
                panic!(
                    "`{}` did not finish within {:?} (killed)\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
                    self.shown, self.timeout
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Output {
            command: self.shown,
            status,
            stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
            elapsed: start.elapsed(),
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `sandboxctl ARGS…`
pub fn sbx<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cmd::new(&env().bin).args(args)
}

/// `systemctl --user ARGS…`
pub fn systemctl<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cmd::new("systemctl").arg("--user").args(args)
}

/// `podman ARGS…`
pub fn podman<I, S>(args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cmd::new("podman").args(args)
}

/// The small file system of the test user's for the full-disk tests
/// (`SANDBOXCTL_TEST_SMALL_FS`, a 1 MiB tmpfs made by the host setup).
pub fn small_fs() -> PathBuf {
    std::env::var_os("SANDBOXCTL_TEST_SMALL_FS")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .expect("SANDBOXCTL_TEST_SMALL_FS names no directory: run tests/system/setup-host.sh")
}

/// Fills the file system of `dir` to the last byte with the file `dir/name`; returns it.
pub fn fill_up(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write as _;
    let filler = dir.join(name);
    let mut f = std::fs::File::create(&filler).expect("create the filler");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[0]);
    filler
}

/// One property of a user unit, e.g. `unit_property("agent-x.service", "ActiveState")`.
pub fn unit_property(unit: &str, property: &str) -> String {
    systemctl(["show", unit, "--value", &format!("--property={property}")])
        .run()
        .success()
        .stdout
        .trim()
        .to_owned()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with
/// `what` and the last diagnostic `describe` returns.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            describe()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A unique client name for this test run (valid: `^[a-z0-9][a-z0-9-]{0,62}$`).
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client under test: a project directory in the user's home and the client's name.
/// Dropping it runs `sandboxctl disable --purge` and removes what is left.
pub struct Client {
    pub name: String,
    pub project: PathBuf,
    /// Extra directories the test created (removed on drop).
    scratch: Vec<PathBuf>,
}

impl Client {
    /// A new client named `<tag>-<pid>-<n>` with an empty project directory.
    pub fn new(tag: &str) -> Self {
        Self::named(unique_name(tag))
    }

    /// The client `name` with its project directory (created if missing), for a test that
    /// finds its client again in a later process (the booted lane's reboot).
    pub fn named(name: String) -> Self {
        let env = env();
        let project = env
            .home
            .join("sbx-system-tests")
            .join(format!("{name}-project"));
        std::fs::create_dir_all(&project)
            .unwrap_or_else(|e| panic!("create {}: {e}", project.display()));
        Self {
            name,
            project,
            scratch: Vec::new(),
        }
    }

    /// Another directory for this test (e.g. for `--mount`), removed on drop.
    pub fn scratch_dir(&mut self, what: &str) -> PathBuf {
        let dir = env()
            .home
            .join("sbx-system-tests")
            .join(format!("{}-{what}", self.name));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        self.scratch.push(dir.clone());
        dir
    }

    pub fn project_str(&self) -> &str {
        self.project.to_str().expect("UTF-8 project path")
    }

    pub fn unit(&self) -> String {
        format!("agent-{}.service", self.name)
    }

    pub fn container(&self) -> String {
        format!("agent-{}", self.name)
    }

    /// The unit `enable` writes: the `.container`, or the plain service in the plain lane.
    pub fn unit_file(&self) -> PathBuf {
        if env().plain {
            env().loaded_unit_file(&self.unit())
        } else {
            env()
                .unit_dir()
                .join(format!("agent-{}.container", self.name))
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        env().data_root().join("clients").join(&self.name)
    }

    /// `sandboxctl enable NAME PROJECT --agent shell --image IMAGE EXTRA…`, must succeed.
    #[track_caller]
    pub fn enable(&self, extra: &[&str]) -> Output {
        self.enable_cmd(&env().image).args(extra).run().success()
    }

    /// `sandboxctl enable NAME PROJECT --agent shell --image IMAGE`, to add options to
    /// and run.
    pub fn enable_cmd(&self, image: &str) -> Cmd {
        sbx([
            "enable",
            &self.name,
            self.project_str(),
            "--agent",
            "shell",
            "--image",
            image,
        ])
    }

    /// `sandboxctl start NAME`, must succeed and leave the unit active.
    #[track_caller]
    pub fn start(&self) -> Output {
        let out = sbx(["start", &self.name]).run().success();
        assert_eq!(
            unit_property(&self.unit(), "ActiveState"),
            "active",
            "after a successful `start` the unit must be active:\n{out}\n{}",
            self.diagnostics()
        );
        out
    }

    /// `sandboxctl exec NAME -- ARGS…` (not checked).
    pub fn exec(&self, args: &[&str]) -> Output {
        sbx(["exec", &self.name, "--"]).args(args).run()
    }

    /// `sandboxctl exec NAME -- sh -c SCRIPT` (not checked).
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// The container's main process as the host sees it, from `podman inspect`.
    pub fn host_pid(&self) -> u32 {
        let out = podman([
            "container",
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &self.container(),
        ])
        .run()
        .success();
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad pid ({e}):\n{out}"))
    }

    pub fn container_id(&self) -> Option<String> {
        let out = podman([
            "container",
            "inspect",
            "--format",
            "{{.Id}}",
            &self.container(),
        ])
        .run();
        out.status.success().then(|| out.stdout.trim().to_owned())
    }

    /// What the unit and podman say, for failure messages.
    pub fn diagnostics(&self) -> String {
        let status = systemctl(["status", "--no-pager", "--lines=20", &self.unit()]).run();
        let ps = podman([
            "ps",
            "-a",
            "--filter",
            &format!("name={}", self.container()),
        ])
        .run();
        let logs = podman(["logs", "--tail=20", &self.container()]).run();
        format!("{status}\n{ps}\n{logs}")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let out = Cmd::new(&env().bin)
            .args(["disable", &self.name, "--purge"])
            .timeout(Duration::from_mins(1))
            .run();
        if !out.status.success() {
            eprintln!("cleanup: {out}");
        }
        // Whatever `disable` left (it is asserted in its own test, not here).
        if self.unit_file().exists() {
            let _ = std::fs::remove_file(self.unit_file());
            let _ = systemctl(["daemon-reload"]).run();
        }
        let _ = podman(["rm", "--force", "--ignore", &self.container()]).run();
        let mut dirs = self.scratch.clone();
        dirs.push(self.project.clone());
        dirs.push(self.data_dir());
        for dir in dirs.iter().filter(|d| d.exists()) {
            // Files made by a container's root belong to a sub-uid: remove them from
            // inside the user namespace.
            if std::fs::remove_dir_all(dir).is_err() {
                let _ = podman(["unshare", "rm", "-rf"]).arg(dir).run();
            }
        }
    }
}

/// A tmux server on the host (its own socket) whose one pane runs `command` in a
/// pseudo-terminal: the user's terminal, for `attach`.
pub struct HostTerminal {
    socket: String,
}

impl HostTerminal {
    pub fn start(command: &str) -> Self {
        let socket = unique_name("sbxtest-host");
        Cmd::new("tmux")
            .env("TERM", "xterm-256color")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "48",
            ])
            .arg(command)
            .run()
            .success();
        Self { socket }
    }

    fn tmux(&self) -> Cmd {
        Cmd::new("tmux").args(["-L", &self.socket])
    }

    /// What the pane shows now.
    pub fn screen(&self) -> String {
        self.tmux().args(["capture-pane", "-p", "-J"]).run().stdout
    }

    /// The pane's process on the host (the attaching command).
    pub fn pane_pid(&self) -> u32 {
        let out = self
            .tmux()
            .args(["display-message", "-p", "#{pane_pid}"])
            .run()
            .success();
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad pane pid ({e}):\n{out}"))
    }

    /// Types `text` and presses Enter.
    pub fn type_line(&self, text: &str) {
        self.tmux().args(["send-keys", "-l", text]).run().success();
        self.tmux().args(["send-keys", "Enter"]).run().success();
    }

    /// Waits until the shell in the client's tmux session answers: keys typed before the
    /// inner tmux is up may be lost, so it probes until one answer shows.
    #[track_caller]
    pub fn wait_for_shell(&self, c: &Client) {
        wait_for(
            "the shell in the container's tmux session to answer",
            Duration::from_mins(1),
            || {
                self.type_line("echo probe-$((40+2))");
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(3) {
                    if self.screen().lines().any(|l| l.trim() == "probe-42") {
                        return Some(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                None
            },
            || format!("--- screen ---\n{}\n{}", self.screen(), c.diagnostics()),
        );
    }

    /// Waits until the screen contains a line that is exactly `line` (after trimming).
    #[track_caller]
    pub fn wait_for_line(&self, line: &str, timeout: Duration) -> String {
        wait_for(
            &format!("the line {line:?} on the attached terminal"),
            timeout,
            || {
                let screen = self.screen();
                screen.lines().any(|l| l.trim() == line).then_some(screen)
            },
            || format!("--- screen ---\n{}", self.screen()),
        )
    }

    /// Appends everything the pane prints from now on to `file` (lines a command
    /// prints before a full-screen program takes the terminal over stay readable).
    pub fn log_to(&self, file: &Path) {
        let cat = format!("cat >>'{}'", file.display());
        self.tmux().args(["pipe-pane", "-o", &cat]).run().success();
    }

    /// Kills the terminal: the tmux server and with it the pane's pseudo-terminal.
    pub fn kill(&self) {
        let _ = self.tmux().arg("kill-server").run();
    }
}

impl Drop for HostTerminal {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a host process exists.
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
