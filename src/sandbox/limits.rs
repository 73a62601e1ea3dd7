//! Per-client resource limits (`--memory`, `--cpus`, `--pids`): their typed values as
//! settings keep them, and whether this host can enforce them. Rootless Podman can
//! only limit a container through cgroup v2 controllers that systemd delegated to the
//! user's manager; anywhere else a limit would silently do nothing, so it is refused.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The smallest memory limit Podman accepts (6 MiB).
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Fewer tasks than this cannot even run tmux, the agent and a shell.
pub const MIN_PIDS: u32 = 16;
/// The largest pid limit the kernel knows (`pid_max` on 64-bit).
pub const MAX_PIDS: u32 = 4_194_304;

/// A memory size in bytes, written as podman takes it (`512m`, `8g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Memory(u64);

impl Memory {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

const UNITS: [(char, u64); 4] = [
    ('t', 1 << 40),
    ('g', 1 << 30),
    ('m', 1 << 20),
    ('k', 1 << 10),
];

impl FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid memory size {s:?}: use a number with k, m or g (e.g. 512m, 8g)");
        let lower = s.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('b').unwrap_or(&lower);
        let (digits, factor) = match lower.chars().last() {
            Some(c) if c.is_ascii_digit() => (lower, 1),
            Some(c) => {
                let (_, f) = UNITS.iter().find(|(u, _)| *u == c).ok_or_else(bad)?;
                (&lower[..lower.len() - 1], *f)
            }
            None => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let bytes = n.checked_mul(factor).ok_or_else(bad)?;
        if bytes < MIN_MEMORY {
            return Err(format!(
                "memory limit {s:?} is too small: Podman needs at least 6m"
            ));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Memory {
    /// The largest unit that divides the size exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNITS.iter().find(|(_, m)| self.0.is_multiple_of(*m)) {
            Some((u, m)) => write!(f, "{}{u}", self.0 / m),
            None => write!(f, "{}", self.0),
        }
    }
}

impl TryFrom<String> for Memory {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Memory> for String {
    fn from(m: Memory) -> Self {
        m.to_string()
    }
}

/// A CPU quota in thousandths of a CPU (`--cpus 1.5` is 1500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cpus(u32);

impl Cpus {
    pub fn millis(self) -> u32 {
        self.0
    }
}

impl FromStr for Cpus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid CPU count {s:?}: use a number such as 2 or 0.5");
        let t = s.trim();
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(bad());
        }
        if frac.len() > 3 {
            return Err(format!(
                "CPU count {s:?} is too precise: use at most three decimals"
            ));
        }
        let whole: u32 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: u32 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        let millis = whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?;
        if millis < 10 {
            return Err(format!("CPU count {s:?} is too small: use at least 0.01"));
        }
        Ok(Self(millis))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, m) = (self.0 / 1000, self.0 % 1000);
        if m == 0 {
            write!(f, "{w}")
        } else {
            let frac = format!("{m:03}");
            write!(f, "{w}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl TryFrom<String> for Cpus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Cpus> for String {
    fn from(c: Cpus) -> Self {
        c.to_string()
    }
}

/// A client's limits; each one unset means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Each limit that is set: its option name and the cgroup controller enforcing it.
    pub fn requested(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.memory.is_some() {
            out.push(("--memory", "memory"));
        }
        if self.cpus.is_some() {
            out.push(("--cpus", "cpu"));
        }
        if self.pids.is_some() {
            out.push(("--pids", "pids"));
        }
        out
    }
}

/// A value of `--memory`, `--cpus` or `--pids`: a limit, or `none` to remove it.
pub fn parse_option<T: FromStr<Err = String>>(value: &str) -> Result<Option<T>, String> {
    if value == "none" {
        Ok(None)
    } else {
        value.parse().map(Some)
    }
}

/// A pid limit, within what the kernel and the sandbox's own processes allow.
pub fn parse_pids(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid pid limit {s:?}: use a whole number such as 4096"))?;
    if !(MIN_PIDS..=MAX_PIDS).contains(&n) {
        return Err(format!(
            "pid limit {n} is out of range: use {MIN_PIDS} to {MAX_PIDS}"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        let m = |s: &str| s.parse::<Memory>();
        assert_eq!(m("8g").map(Memory::bytes), Ok(8 << 30));
        assert_eq!(m("8G").map(Memory::bytes), Ok(8 << 30));
        assert_eq!(m("512mb").map(Memory::bytes), Ok(512 << 20));
        assert_eq!(m("1024m").map(|x| x.to_string()), Ok("1g".into()));
        assert_eq!(m("7340033").map(|x| x.to_string()), Ok("7340033".into()));
        for bad in [
            "",
            "g",
            "8x",
            "-1g",
            "1.5g",
            "8 g",
            "1k",
            "99999999999999999t",
        ] {
            assert!(m(bad).is_err(), "{bad}");
        }
        assert!(m("5m").expect_err("small").contains("at least 6m"));
    }

    #[test]
    fn cpu_counts() {
        let c = |s: &str| s.parse::<Cpus>().map(|c| (c.millis(), c.to_string()));
        assert_eq!(c("2"), Ok((2000, "2".into())));
        assert_eq!(c("1.5"), Ok((1500, "1.5".into())));
        assert_eq!(c(".25"), Ok((250, "0.25".into())));
        assert_eq!(c("0.01"), Ok((10, "0.01".into())));
        for bad in [
            "", ".", "x", "-1", "1.2345", "0.001", "0", "1e3", "99999999",
        ] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pids_and_none() {
        assert_eq!(parse_pids("4096"), Ok(4096));
        assert!(parse_pids("8").is_err());
        assert!(parse_pids("x").is_err());
        assert_eq!(parse_option::<Memory>("none"), Ok(None));
        assert_eq!(
            parse_option::<Memory>("1g").map(|m| m.map(Memory::bytes)),
            Ok(Some(1 << 30))
        );
    }
}
