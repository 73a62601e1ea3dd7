//! A fake `org.freedesktop.systemd1` manager, served with zbus on a private
//! `dbus-daemon` that lives as long as the fake. Each test scripts it (job results,
//! unit states, which units exist) and reads back every call it received.
//!
//! Like the real manager, a job method replies with the job's object path first and
//! announces the job's end with `JobRemoved` afterwards; before the real signal it sends
//! decoys for other jobs, one of them for the same unit with the opposite result, so a
//! client that matches by unit name instead of job path gets the wrong answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sandboxctl::host::systemd::UnitRow;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

const PATH: &str = "/org/freedesktop/systemd1";
const INTERFACE: &str = "org.freedesktop.systemd1.Manager";

/// A private session bus: `dbus-daemon` on a socket in its own temp dir, killed on drop.
pub struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the bus");
        let config = dir.path().join("bus.conf");
        let socket = dir.path().join("bus");
        // A minimal session config: no service activation, no inherited environment.
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write the bus config");
        // Its complaints (e.g. that root may not raise the fd limit) go to a file,
        // shown only if it fails to start.
        let log = dir.path().join("dbus-daemon.log");
        let log_file = std::fs::File::create(&log).expect("create the bus log");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dbus-daemon ({e}): install it (`apt-get install dbus`)")
            });
        // The address is printed once the daemon listens, so the bus is ready after it.
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("dbus-daemon stdout"))
            .read_line(&mut line)
            .expect("read the bus address");
        let address = line.trim().to_owned();
        if address.is_empty() {
            let _ = child.kill();
            let status = child.wait().expect("wait for dbus-daemon");
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("dbus-daemon printed no address ({status}):\n{log}");
        }
        Self {
            child,
            address,
            _dir: dir,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One method call the fake received: its name and string arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub args: Vec<String>,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.method, self.args.join(", "))
    }
}

#[derive(Debug, Clone)]
struct Unit {
    active: String,
    sub: String,
    /// Produced by the generator at the last Reload (dropped when it no longer is).
    generated: bool,
    /// The service's `Result` property.
    result: String,
    /// The service's `NRestarts` property.
    restarts: u32,
    /// Started too often: systemd refuses every start until `ResetFailedUnit`.
    start_limited: bool,
}

impl Unit {
    fn new(generated: bool) -> Self {
        Self {
            active: "inactive".into(),
            sub: "dead".into(),
            generated,
            result: "success".into(),
            restarts: 0,
            start_limited: false,
        }
    }
}

/// When `JobRemoved` is sent relative to the method reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTiming {
    /// As systemd does: the reply first, the signal once the job has run.
    AfterReply,
    /// The job ends before the caller learns its path (a fast job): the signals arrive
    /// before the reply.
    BeforeReply,
}

struct Generator {
    quadlet: PathBuf,
    unit_dir: PathBuf,
}

struct State {
    units: BTreeMap<String, Unit>,
    results: BTreeMap<String, String>,
    /// The service `Result` a failed job leaves (`exit-code` unless scripted).
    service_results: BTreeMap<String, String>,
    /// The `NRestarts` a failed job leaves (0 unless scripted).
    restarts: BTreeMap<String, u32>,
    rejected: Vec<String>,
    calls: Vec<Call>,
    next_job: u32,
    timing: SignalTiming,
    omit_unknown: bool,
    generator: Option<Generator>,
    /// A directory of plain user services (`~/.config/systemd/user`) loaded on Reload.
    service_dir: Option<PathBuf>,
    /// Bus names that called Subscribe: systemd refuses a second call from the same one.
    subscribers: Vec<String>,
    /// Each service's unit file (`.container` or `.service`) as the last Reload read it.
    loaded_sources: BTreeMap<String, Option<Vec<u8>>>,
}

impl State {
    /// The file a service is made from: its `.container` in the generator's directory,
    /// else its `.service` in the plain services' directory.
    fn source_of(&self, service: &str) -> Option<Vec<u8>> {
        let stem = service.strip_suffix(".service")?;
        let container = self
            .generator
            .as_ref()
            .and_then(|g| std::fs::read(g.unit_dir.join(format!("{stem}.container"))).ok());
        container.or_else(|| {
            self.service_dir
                .as_ref()
                .and_then(|d| std::fs::read(d.join(service)).ok())
        })
    }
}

/// The fake manager on its own bus. Dropping it drops the connection, then the bus.
pub struct FakeSystemd {
    state: Arc<Mutex<State>>,
    _connection: zbus::blocking::Connection,
    bus: Bus,
}

impl FakeSystemd {
    /// Starts a bus and serves the fake on it, knowing no units.
    pub fn start() -> Self {
        let bus = Bus::start();
        let state = Arc::new(Mutex::new(State {
            units: BTreeMap::new(),
            results: BTreeMap::new(),
            service_results: BTreeMap::new(),
            restarts: BTreeMap::new(),
            rejected: Vec::new(),
            calls: Vec::new(),
            next_job: 1,
            timing: SignalTiming::AfterReply,
            omit_unknown: false,
            generator: None,
            service_dir: None,
            subscribers: Vec::new(),
            loaded_sources: BTreeMap::new(),
        }));
        let connection = zbus::blocking::connection::Builder::address(bus.address())
            .and_then(|b| b.name("org.freedesktop.systemd1"))
            .and_then(|b| {
                b.serve_at(
                    PATH,
                    Manager {
                        state: Arc::clone(&state),
                    },
                )
            })
            .and_then(zbus::blocking::connection::Builder::build)
            .expect("serve the fake systemd manager");
        Self {
            state,
            _connection: connection,
            bus,
        }
    }

    /// The D-Bus address clients connect to.
    pub fn address(&self) -> &str {
        self.bus.address()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake systemd state")
    }

    /// Makes `unit` known (loaded, inactive) without a generator.
    pub fn add_unit(&self, unit: &str) {
        self.state().units.insert(unit.to_owned(), Unit::new(false));
    }

    /// Sets a known unit's active and sub state.
    pub fn set_state(&self, unit: &str, active: &str, sub: &str) {
        let mut st = self.state();
        let u = st
            .units
            .entry(unit.to_owned())
            .or_insert_with(|| Unit::new(false));
        active.clone_into(&mut u.active);
        sub.clone_into(&mut u.sub);
    }

    /// The result of every later job on `unit` ("done" unless scripted).
    pub fn script_result(&self, unit: &str, result: &str) {
        self.state()
            .results
            .insert(unit.to_owned(), result.to_owned());
    }

    /// The service `Result` every later failed job on `unit` leaves.
    pub fn script_service_result(&self, unit: &str, result: &str) {
        self.state()
            .service_results
            .insert(unit.to_owned(), result.to_owned());
    }

    /// The restarts systemd made on its own before every later failed job on `unit`
    /// ended: a crash loop that `Restart=on-failure` ran until the start limit.
    pub fn script_restarts(&self, unit: &str, restarts: u32) {
        self.state().restarts.insert(unit.to_owned(), restarts);
    }

    /// Puts a known unit over its start limit, as five quick starts do: every start
    /// fails with `start-limit-hit` until `ResetFailedUnit`.
    pub fn hit_start_limit(&self, unit: &str) {
        let mut st = self.state();
        let u = st
            .units
            .get_mut(unit)
            .unwrap_or_else(|| panic!("the fake does not know {unit}"));
        u.start_limited = true;
    }

    /// A known unit's service `Result`.
    pub fn service_result(&self, unit: &str) -> Option<String> {
        self.state().units.get(unit).map(|u| u.result.clone())
    }

    /// Whether `JobRemoved` comes before or after the job method's reply.
    pub fn signal_timing(&self, timing: SignalTiming) {
        self.state().timing = timing;
    }

    /// Leaves units the fake does not know out of `ListUnitsByNames` replies.
    pub fn omit_unknown_units(&self) {
        self.state().omit_unknown = true;
    }

    /// On Reload, runs the real Quadlet generator in dry-run mode over `unit_dir`; the
    /// services it would generate become known units, the others are forgotten.
    pub fn run_generator(&self, quadlet: &Path, unit_dir: &Path) {
        self.state().generator = Some(Generator {
            quadlet: quadlet.to_owned(),
            unit_dir: unit_dir.to_owned(),
        });
    }

    /// On Reload, also loads the plain services (`*.service`, not templates) in `dir`,
    /// as the user manager loads `~/.config/systemd/user`.
    pub fn load_services(&self, dir: &Path) {
        self.state().service_dir = Some(dir.to_owned());
    }

    /// Treats `unit` as if the generator had refused it: never loaded, whatever Reload says.
    pub fn reject_unit(&self, unit: &str) {
        let mut st = self.state();
        st.rejected.push(unit.to_owned());
        st.units.remove(unit);
    }

    /// A Reload from someone else (`systemctl --user daemon-reload`).
    pub fn reload_now(&self) {
        Manager {
            state: Arc::clone(&self.state),
        }
        .reload();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// How many times `method` was called.
    pub fn count(&self, method: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// The calls, one per line, for assertion messages.
    pub fn call_log(&self) -> String {
        self.calls()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A known unit's (active, sub) state; `None` if the fake does not know it.
    pub fn unit_state(&self, unit: &str) -> Option<(String, String)> {
        self.state()
            .units
            .get(unit)
            .map(|u| (u.active.clone(), u.sub.clone()))
    }

    /// Whether the fake currently knows `unit` (it was generated or added).
    pub fn knows(&self, unit: &str) -> bool {
        self.state().units.contains_key(unit)
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum Fault {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
    AlreadySubscribed(String),
}

/// A `JobRemoved` signal's body.
type JobRemoved = (u32, OwnedObjectPath, String, String);

fn job_path(id: u32) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{PATH}/job/{id}")).expect("job path")
}

/// systemd's object path for a unit: bytes other than `[A-Za-z0-9]` become `_xx`.
fn unit_path(unit: &str) -> OwnedObjectPath {
    let mut escaped = String::new();
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            escaped.push(char::from(b));
        } else {
            write!(escaped, "_{b:02x}").expect("write to a String");
        }
    }
    OwnedObjectPath::try_from(format!("{PATH}/unit/{escaped}")).expect("unit path")
}

/// The services the generator would write for `unit_dir` (`---name.service---` headers
/// in its dry-run output).
fn generated_services(g: &Generator) -> Vec<String> {
    let out = super::quadlet::dry_run_with(&g.quadlet, &g.unit_dir);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("---")?.strip_suffix("---"))
        .filter(|name| name.ends_with(".service"))
        .map(str::to_owned)
        .collect()
}

/// The plain services in `dir` (`name.service`, not `name@.service` templates).
fn plain_services(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".service") && !n.contains('@'))
        .collect()
}

async fn emit(conn: &zbus::Connection, signals: &[JobRemoved]) {
    for (id, job, unit, result) in signals {
        conn.emit_signal(
            None::<&str>,
            PATH,
            INTERFACE,
            "JobRemoved",
            &(*id, ObjectPath::from(job), unit.as_str(), result.as_str()),
        )
        .await
        .expect("emit JobRemoved");
    }
}

struct Manager {
    state: Arc<Mutex<State>>,
}

impl Manager {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake systemd state")
    }

    /// Queues a job on `unit`: records it, updates the unit's state and returns the job
    /// path with the signals to send (decoys first).
    fn queue(
        &self,
        method: &'static str,
        unit: String,
        mode: String,
    ) -> Result<(OwnedObjectPath, Vec<JobRemoved>, SignalTiming), Fault> {
        let mut st = self.state();
        st.calls.push(Call {
            method,
            args: vec![unit.clone(), mode],
        });
        let mut result = st
            .results
            .get(&unit)
            .cloned()
            .unwrap_or_else(|| "done".to_owned());
        let mut service_result = st
            .service_results
            .get(&unit)
            .cloned()
            .unwrap_or_else(|| "exit-code".to_owned());
        let mut restarts = st.restarts.get(&unit).copied().unwrap_or(0);
        let timing = st.timing;
        let Some(u) = st.units.get_mut(&unit) else {
            return Err(Fault::NoSuchUnit(format!("Unit {unit} not found.")));
        };
        if u.start_limited && method != "StopUnit" {
            "failed".clone_into(&mut result);
            "start-limit-hit".clone_into(&mut service_result);
            restarts = 0;
        }
        let (active, sub) = match (method, result.as_str()) {
            ("StopUnit", "done") => ("inactive", "dead"),
            (_, "done") => ("active", "running"),
            _ => ("failed", "failed"),
        };
        active.clone_into(&mut u.active);
        sub.clone_into(&mut u.sub);
        (u.result, u.restarts) = if result == "done" {
            ("success".to_owned(), 0)
        } else {
            (service_result, restarts)
        };
        let id = st.next_job;
        st.next_job += 3;
        let opposite = if result == "done" { "failed" } else { "done" };
        let signals = vec![
            (
                id + 1,
                job_path(id + 1),
                "decoy.service".into(),
                "done".into(),
            ),
            (id + 2, job_path(id + 2), unit.clone(), opposite.into()),
            (id, job_path(id), unit, result),
        ];
        Ok((job_path(id), signals, timing))
    }

    async fn job(
        &self,
        method: &'static str,
        unit: String,
        mode: String,
        conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, Fault> {
        let (job, signals, timing) = self.queue(method, unit, mode)?;
        match timing {
            SignalTiming::BeforeReply => emit(conn, &signals).await,
            SignalTiming::AfterReply => {
                let conn = conn.clone();
                // The reply goes out when this method returns; the signals follow it.
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    let conn = zbus::blocking::Connection::from(conn);
                    for (id, job, unit, result) in &signals {
                        conn.emit_signal(
                            None::<&str>,
                            PATH,
                            INTERFACE,
                            "JobRemoved",
                            &(*id, ObjectPath::from(job), unit.as_str(), result.as_str()),
                        )
                        .expect("emit JobRemoved");
                    }
                });
            }
        }
        Ok(job)
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn reload(&self) {
        let generator = {
            let mut st = self.state();
            st.calls.push(Call {
                method: "Reload",
                args: Vec::new(),
            });
            (
                st.generator
                    .as_ref()
                    .map(|g| (g.quadlet.clone(), g.unit_dir.clone())),
                st.service_dir.clone(),
            )
        };
        let (generator, service_dir) = generator;
        if generator.is_none() && service_dir.is_none() {
            return;
        }
        let mut services = generator
            .map(|(quadlet, unit_dir)| generated_services(&Generator { quadlet, unit_dir }))
            .unwrap_or_default();
        if let Some(dir) = service_dir {
            services.extend(plain_services(&dir));
        }
        let mut st = self.state();
        let rejected = st.rejected.clone();
        st.units
            .retain(|name, u| !u.generated || services.contains(name));
        for s in services {
            if !rejected.contains(&s) {
                st.units.entry(s).or_insert_with(|| Unit::new(true));
            }
        }
        let names: Vec<String> = st.units.keys().cloned().collect();
        st.loaded_sources = names
            .into_iter()
            .map(|n| {
                let source = st.source_of(&n);
                (n, source)
            })
            .collect();
    }

    #[allow(clippy::needless_pass_by_value)] // zbus hands the header over by value
    fn subscribe(&self, #[zbus(header)] header: zbus::message::Header<'_>) -> Result<(), Fault> {
        let mut st = self.state();
        st.calls.push(Call {
            method: "Subscribe",
            args: Vec::new(),
        });
        let sender = header.sender().map(ToString::to_string).unwrap_or_default();
        if st.subscribers.contains(&sender) {
            return Err(Fault::AlreadySubscribed(
                "Client is already subscribed.".into(),
            ));
        }
        st.subscribers.push(sender);
        Ok(())
    }

    async fn start_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, Fault> {
        self.job("StartUnit", name, mode, conn).await
    }

    async fn stop_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, Fault> {
        self.job("StopUnit", name, mode, conn).await
    }

    async fn restart_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, Fault> {
        self.job("RestartUnit", name, mode, conn).await
    }

    fn reset_failed_unit(&self, name: &str) -> Result<(), Fault> {
        let mut st = self.state();
        st.calls.push(Call {
            method: "ResetFailedUnit",
            args: vec![name.to_owned()],
        });
        let Some(u) = st.units.get_mut(name) else {
            return Err(Fault::NoSuchUnit(format!("Unit {name} not loaded.")));
        };
        if u.active == "failed" {
            "inactive".clone_into(&mut u.active);
            "dead".clone_into(&mut u.sub);
        }
        "success".clone_into(&mut u.result);
        u.restarts = 0;
        u.start_limited = false;
        Ok(())
    }

    /// Also serves the unit's object, with the `Service` interface's `Result` and
    /// `NRestarts`.
    async fn get_unit(
        &self,
        name: String,
        #[zbus(object_server)] server: &zbus::ObjectServer,
    ) -> Result<OwnedObjectPath, Fault> {
        {
            let mut st = self.state();
            st.calls.push(Call {
                method: "GetUnit",
                args: vec![name.clone()],
            });
            if !st.units.contains_key(&name) {
                return Err(Fault::NoSuchUnit(format!("Unit {name} not loaded.")));
            }
        }
        let path = unit_path(&name);
        let object = ServiceObject {
            state: Arc::clone(&self.state),
            unit: name,
        };
        server
            .at(&path, UnitObject(object.clone()))
            .await
            .map_err(Fault::ZBus)?;
        server.at(&path, object).await.map_err(Fault::ZBus)?;
        Ok(path)
    }

    fn list_units_by_names(&self, names: Vec<String>) -> Vec<UnitRow> {
        let mut st = self.state();
        st.calls.push(Call {
            method: "ListUnitsByNames",
            args: names.clone(),
        });
        let root = OwnedObjectPath::try_from("/").expect("root path");
        names
            .into_iter()
            .filter_map(|name| {
                let (load, active, sub) = match st.units.get(&name) {
                    Some(u) => ("loaded", u.active.clone(), u.sub.clone()),
                    None if st.omit_unknown => return None,
                    None => ("not-found", "inactive".into(), "dead".into()),
                };
                Some((
                    name.clone(),
                    format!("fake {name}"),
                    load.to_owned(),
                    active,
                    sub,
                    String::new(),
                    unit_path(&name),
                    0,
                    String::new(),
                    root.clone(),
                ))
            })
            .collect()
    }
}

/// A unit's object: the `org.freedesktop.systemd1.Service` and `Unit` properties
/// sandboxctl reads.
#[derive(Clone)]
struct ServiceObject {
    state: Arc<Mutex<State>>,
    unit: String,
}

/// The `org.freedesktop.systemd1.Unit` interface of a unit's object.
struct UnitObject(ServiceObject);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObject {
    /// Whether the unit's file changed since the last Reload read it (a unit the fake
    /// was told about, not loaded from a file, never needs one).
    #[zbus(property)]
    fn need_daemon_reload(&self) -> bool {
        let st = self.0.state.lock().expect("fake systemd state");
        st.loaded_sources
            .get(&self.0.unit)
            .is_some_and(|loaded| *loaded != st.source_of(&self.0.unit))
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceObject {
    #[zbus(property)]
    fn result(&self) -> String {
        let st = self.state.lock().expect("fake systemd state");
        st.units
            .get(&self.unit)
            .map_or_else(|| "success".to_owned(), |u| u.result.clone())
    }

    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> u32 {
        let st = self.state.lock().expect("fake systemd state");
        st.units.get(&self.unit).map_or(0, |u| u.restarts)
    }
}
