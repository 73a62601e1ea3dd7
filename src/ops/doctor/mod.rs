//! `sandboxctl doctor`: what a user runs when something is wrong. Each check says what
//! it found and, when it is not fine, the exact fix. Host checks look at Podman, the
//! user's ids, the Quadlet generator, the user manager, cgroups, linger, journald, the
//! image and the proxy units; client checks at each client's unit, socket and policy;
//! the live checks look at a running sandbox from the host side (its `/proc` entries,
//! read by the host, which the agent cannot forge) and try the egress proxy from a fresh
//! process inside it.

pub(crate) mod client;
pub(crate) mod host;
pub(crate) mod live;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::Serialize;

pub use crate::host::OLDEST_PODMAN;

pub use client::client;
pub use host::{host_static, image, podman_storage, proxy_units, user_manager};
pub use live::live;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Works, but something a user may want to change (or a limit to know about).
    Warn,
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One check: where, what, what was found and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `host`, or `client NAME`.
    pub area: String,
    pub name: &'static str,
    pub outcome: Outcome,
    pub found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Collects checks for one area.
pub struct Checks {
    area: String,
    pub list: Vec<Check>,
}

impl Checks {
    pub fn new(area: impl Into<String>) -> Self {
        Self {
            area: area.into(),
            list: Vec::new(),
        }
    }

    pub fn ok(&mut self, name: &'static str, found: impl Into<String>) {
        self.push(name, Outcome::Ok, &found.into(), None);
    }

    pub fn warn(&mut self, name: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Outcome::Warn, &found.into(), Some(&fix.into()));
    }

    pub fn fail(&mut self, name: &'static str, found: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Outcome::Fail, &found.into(), Some(&fix.into()));
    }

    fn push(&mut self, name: &'static str, outcome: Outcome, found: &str, fix: Option<&str>) {
        self.list.push(Check {
            area: self.area.clone(),
            name,
            outcome,
            found: one_line(found),
            fix: fix.map(one_line),
        });
    }
}

/// Every check that ran.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub warnings: usize,
    pub failed: usize,
}

impl Report {
    pub fn add(&mut self, checks: Checks) {
        for c in checks.list {
            match c.outcome {
                Outcome::Ok => {}
                Outcome::Warn => self.warnings += 1,
                Outcome::Fail => self.failed += 1,
            }
            self.checks.push(c);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut area = "";
        for c in &self.checks {
            if c.area != area {
                writeln!(f, "{}", c.area)?;
                area = &c.area;
            }
            writeln!(f, "  {:<5} {:<16} {}", c.outcome, c.name, c.found)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "  {:<5} {:<16} fix: {fix}", "", "")?;
            }
        }
        write!(
            f,
            "{} checks: {} failed, {} warnings",
            self.checks.len(),
            self.failed,
            self.warnings
        )
    }
}

/// What doctor needs to know about the user running it, read once.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
}

impl User {
    pub fn current() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let name = crate::host::user::name().unwrap_or_else(|| uid.to_string());
        Self { name, uid }
    }
}

/// Makes a control-free single line of text that came from elsewhere.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
