//! The user's systemd manager over D-Bus, behind a small synchronous API. zbus stays in
//! this module. Jobs are followed by their `JobRemoved` signal, subscribed to before the
//! job is queued and matched by the job's object path.

use anyhow::{Context, Result};
use serde::Serialize;
use zbus::blocking::Connection;
use zbus::zvariant::OwnedObjectPath;

/// Errors a caller may want to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("systemd does not know {0}")]
    NoSuchUnit(String),
    #[error("{unit}: job {verb} finished with result '{result}'")]
    JobFailed {
        unit: String,
        verb: &'static str,
        result: String,
    },
}

/// One row of `ListUnits*` (`(ssssssouso)`): name, description, load state, active
/// state, sub state, followed unit, unit path, job id, job type, job path.
pub type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = false,
    blocking_name = "ManagerProxy"
)]
trait Manager {
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<UnitRow>>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "UnitProxy"
)]
trait Unit {
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_async = false,
    blocking_name = "ServiceProxy"
)]
trait Service {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
}

/// systemd's `Result` of a service whose start it refused at the start limit.
pub const START_LIMIT_HIT: &str = "start-limit-hit";

/// How a service last ended, as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceOutcome {
    /// `Result`: `success`, `exit-code`, `signal`, `timeout`, `start-limit-hit`, …
    pub result: String,
    /// `NRestarts`: the restarts systemd made on its own (`Restart=`) since the last
    /// start that was asked for.
    pub restarts: u32,
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        self.active_state == "active" || self.active_state == "reloading"
    }
}

/// What a job does, for messages.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
        }
    }
}

/// A connection to the user's systemd manager.
pub struct Systemd {
    manager: ManagerProxy<'static>,
    /// systemd refuses a second `Subscribe` on the same connection.
    subscribed: std::cell::Cell<bool>,
}

const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// Longer than the unit's `TimeoutStartSec=` (900 s), after which systemd itself fails
/// the job.
const JOB_DEADLINE_START: std::time::Duration = std::time::Duration::from_mins(16);
/// Longer than systemd's default stop timeout (90 s).
const JOB_DEADLINE_STOP: std::time::Duration = std::time::Duration::from_secs(150);

/// The session bus address: `$DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus`.
pub fn session_bus_address() -> Result<String> {
    if let Some(a) = std::env::var("DBUS_SESSION_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
    {
        return Ok(a);
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .ok()
        .filter(|r| !r.is_empty())
        .context(
            "cannot find the user's D-Bus: neither DBUS_SESSION_BUS_ADDRESS nor XDG_RUNTIME_DIR is set; run sandboxctl in a login session with a systemd user manager",
        )?;
    Ok(format!("unix:path={runtime}/bus"))
}

impl Systemd {
    /// Connects to the user manager on the session bus.
    pub fn connect_user() -> Result<Self> {
        let address = session_bus_address()?;
        Self::connect(&address)
    }

    /// Connects to a manager at a D-Bus address (tests use a private bus).
    pub fn connect(address: &str) -> Result<Self> {
        let connection = zbus::blocking::connection::Builder::address(address)
            .and_then(zbus::blocking::connection::Builder::build)
            .with_context(|| {
                format!(
                    "cannot connect to the user's D-Bus at {address}: is a systemd user session running (`systemctl --user status`)?"
                )
            })?;
        Self::on(&connection)
    }

    fn on(connection: &Connection) -> Result<Self> {
        let manager = ManagerProxy::new(connection)
            .context("cannot reach the systemd user manager on D-Bus")?;
        Ok(Self {
            manager,
            subscribed: std::cell::Cell::new(false),
        })
    }

    /// `daemon-reload`: systemd reruns generators (Quadlet) and replies when done.
    pub fn reload(&self) -> Result<()> {
        self.manager
            .reload()
            .context("the systemd user manager refused to reload (daemon-reload)")
    }

    /// Starts, stops or restarts `unit` and waits for the job's result.
    pub fn run_job(&self, verb: Verb, unit: &str) -> Result<()> {
        if !self.subscribed.get() {
            match self.manager.subscribe() {
                Ok(()) => {}
                Err(e) if is_error_named(&e, ALREADY_SUBSCRIBED) => {}
                Err(e) => return Err(e).context("cannot subscribe to systemd job signals"),
            }
            self.subscribed.set(true);
        }
        // Listen before queuing the job, so its JobRemoved cannot be missed.
        let signals = self
            .manager
            .receive_job_removed()
            .context("cannot listen for systemd job signals")?;
        let queued = match verb {
            Verb::Start => self.manager.start_unit(unit, "replace"),
            Verb::Stop => self.manager.stop_unit(unit, "replace"),
            Verb::Restart => self.manager.restart_unit(unit, "replace"),
        };
        let job = queued.map_err(|e| map_error(e, unit))?;
        // systemd always ends a job (its own timeouts included); the deadline only guards
        // against a signal that never arrives, e.g. a manager that went away.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for signal in signals {
                let Ok(args) = signal.args() else { continue };
                if args.job().as_str() == job.as_str() {
                    let _ = tx.send((*args.result()).to_owned());
                    return;
                }
            }
        });
        let deadline = match verb {
            Verb::Stop => JOB_DEADLINE_STOP,
            Verb::Start | Verb::Restart => JOB_DEADLINE_START,
        };
        match rx.recv_timeout(deadline) {
            Ok(result) if result == "done" => Ok(()),
            Ok(result) => Err(SystemdError::JobFailed {
                unit: unit.to_owned(),
                verb: verb.as_str(),
                result,
            }
            .into()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => anyhow::bail!(
                "no result from systemd after {} s waiting for {unit} to {}; see `systemctl --user status {unit}`",
                deadline.as_secs(),
                verb.as_str()
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!(
                "lost the D-Bus connection while waiting for {unit} to {}",
                verb.as_str()
            ),
        }
    }

    /// Stops `unit` and waits; a unit systemd does not know is already stopped.
    pub fn stop_if_known(&self, unit: &str) -> Result<()> {
        match self.run_job(Verb::Stop, unit) {
            Err(e)
                if matches!(
                    e.downcast_ref::<SystemdError>(),
                    Some(SystemdError::NoSuchUnit(_))
                ) =>
            {
                Ok(())
            }
            other => other.with_context(|| format!("cannot stop {unit}")),
        }
    }

    /// Clears a unit's failed state; a unit systemd does not know is fine.
    pub fn reset_failed(&self, unit: &str) -> Result<()> {
        match self.manager.reset_failed_unit(unit) {
            Ok(()) => Ok(()),
            Err(e) if is_error_named(&e, NO_SUCH_UNIT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot reset the failed state of {unit}")),
        }
    }

    /// How the service last ended (`Result`, `NRestarts`); `None` for a unit systemd
    /// has not loaded.
    pub fn service_outcome(&self, unit: &str) -> Result<Option<ServiceOutcome>> {
        let path = match self.manager.get_unit(unit) {
            Ok(p) => p,
            Err(e) if is_error_named(&e, NO_SUCH_UNIT) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot look up {unit} in systemd")),
        };
        let service = ServiceProxy::builder(self.manager.inner().connection())
            .path(path)
            .and_then(|b| b.cache_properties(zbus::proxy::CacheProperties::No).build())
            .with_context(|| format!("cannot reach {unit} on D-Bus"))?;
        let read = || -> zbus::Result<ServiceOutcome> {
            Ok(ServiceOutcome {
                result: service.result()?,
                restarts: service.n_restarts()?,
            })
        };
        read()
            .map(Some)
            .with_context(|| format!("cannot read how {unit} ended from systemd"))
    }

    /// Whether a reload would change what systemd has loaded for `units`: one of them
    /// is not loaded, or its unit file (or the file a generator made it from) changed
    /// since (`NeedDaemonReload`).
    pub fn needs_reload(&self, units: &[String]) -> Result<bool> {
        for unit in units {
            let path = match self.manager.get_unit(unit) {
                Ok(p) => p,
                Err(e) if is_error_named(&e, NO_SUCH_UNIT) => return Ok(true),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot look up {unit} in systemd"));
                }
            };
            let proxy = UnitProxy::builder(self.manager.inner().connection())
                .path(path)
                .and_then(|b| b.cache_properties(zbus::proxy::CacheProperties::No).build())
                .with_context(|| format!("cannot reach {unit} on D-Bus"))?;
            let stale = proxy
                .need_daemon_reload()
                .with_context(|| format!("cannot read whether {unit} needs a reload"))?;
            if stale {
                return Ok(true);
            }
        }
        Ok(self
            .unit_states(units)?
            .iter()
            .any(|s| s.load_state != "loaded"))
    }

    /// Whether `unit` is active (or reloading).
    pub fn is_active(&self, unit: &str) -> Result<bool> {
        let states = self.unit_states(&[unit.to_owned()])?;
        Ok(states.first().is_some_and(UnitState::is_active))
    }

    /// The states of many units in one round trip; units systemd has not loaded are
    /// reported with load state `not-found` and active state `inactive`.
    pub fn unit_states(&self, units: &[String]) -> Result<Vec<UnitState>> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = units.iter().map(String::as_str).collect();
        let listed = self
            .manager
            .list_units_by_names(&names)
            .context("cannot list units from the systemd user manager")?;
        Ok(units
            .iter()
            .map(|u| {
                listed.iter().find(|l| &l.0 == u).map_or_else(
                    || UnitState {
                        unit: u.clone(),
                        load_state: "not-found".into(),
                        active_state: "inactive".into(),
                        sub_state: "dead".into(),
                    },
                    |l| UnitState {
                        unit: l.0.clone(),
                        load_state: l.2.clone(),
                        active_state: l.3.clone(),
                        sub_state: l.4.clone(),
                    },
                )
            })
            .collect())
    }
}

fn is_error_named(e: &zbus::Error, name: &str) -> bool {
    matches!(e, zbus::Error::MethodError(n, _, _) if n.as_str() == name)
}

fn map_error(e: zbus::Error, unit: &str) -> anyhow::Error {
    if is_error_named(&e, NO_SUCH_UNIT) {
        SystemdError::NoSuchUnit(unit.to_owned()).into()
    } else {
        anyhow::Error::new(e).context(format!("systemd refused the job for {unit}"))
    }
}
