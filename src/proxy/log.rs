//! The proxy's log: one JSON object per line on stderr (the journal, when run by
//! systemd): a `decision` line when a request is allowed or refused, a `close` line
//! when an allowed one ends, plus policy, capacity and lifecycle events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Where log lines go.
#[derive(Clone, Debug, Default)]
pub enum LogSink {
    /// One line per record on stderr.
    #[default]
    Stderr,
    /// Kept in memory (tests read them back).
    Memory(Arc<Mutex<Vec<String>>>),
}

/// Allowed or denied.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allowed,
    Denied,
}

/// What the proxy knows about one request. Two lines come from it, sharing `id`:
/// `decision` when the request is allowed or refused (before any byte of an allowed
/// tunnel moves, so a long tunnel is visible while it is open and a proxy killed
/// mid-tunnel has still logged it), and `close` when an allowed request ends, with byte
/// counts and duration. A refused request is over at its decision and has no `close`.
/// A tunnel whose first bytes are refused (a TLS server name other than the allowed
/// host, see `sni.rs`) was allowed on its `CONNECT`: its `close` line has the reason in
/// `error` (starting `TLS refused:`) and the name in `sni`, next to `host`.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// The connection's id, unique per proxy process (`PID-N`).
    pub id: String,
    pub client: String,
    /// The requested host (name or IP literal), when the request got that far.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `CONNECT`, `GET`, …
    pub method: Option<String>,
    pub decision: Verdict,
    pub reason: Option<String>,
    /// The allow rule that matched.
    pub rule: Option<String>,
    /// The address connected to.
    pub addr: Option<String>,
    /// Status of the upstream response (plain HTTP).
    pub status: Option<u16>,
    /// What went wrong after the decision (upstream or tunnel error, idle timeout).
    pub error: Option<String>,
    /// Client to upstream.
    pub bytes_up: u64,
    /// Upstream to client.
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// How a tunnel moved its bytes: `splice` (zero-copy, in the kernel) or `copy`
    /// (through the proxy's buffers).
    pub copy: Option<&'static str>,
    /// The server name of a TLS tunnel's `ClientHello`, as sent (at most 255
    /// characters), whether it was let through or refused.
    pub sni: Option<String>,
}

impl DecisionRecord {
    /// A denial of which nothing is known yet but the connection, the client, maybe the
    /// method, and why.
    pub fn denied(id: String, client: String, method: Option<String>, reason: String) -> Self {
        Self {
            id,
            client,
            host: None,
            port: None,
            method,
            decision: Verdict::Denied,
            reason: Some(reason),
            rule: None,
            addr: None,
            status: None,
            error: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            copy: None,
            sni: None,
        }
    }
}

/// The `decision` line's fields.
#[derive(Serialize)]
struct DecisionLine<'a> {
    id: &'a str,
    client: &'a str,
    host: Option<&'a str>,
    port: Option<u16>,
    method: Option<&'a str>,
    decision: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<&'a str>,
}

/// The `close` line's fields.
#[derive(Serialize)]
struct CloseLine<'a> {
    id: &'a str,
    client: &'a str,
    host: Option<&'a str>,
    port: Option<u16>,
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    bytes_up: u64,
    bytes_down: u64,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    copy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<&'a str>,
}

/// Lets one line through per interval and counts the rest, so a condition that
/// repeats (a client hammering a full proxy, accept failing for want of file
/// descriptors) cannot flood the log.
#[derive(Debug)]
pub(crate) struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were held back
    /// since the last one; `None` when this one is held back.
    pub(crate) fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    ts: f64,
    event: &'a str,
    #[serde(flatten)]
    body: T,
}

impl LogSink {
    /// Writes the `decision` line of a request.
    pub fn decision(&self, r: &DecisionRecord) {
        self.write(
            "decision",
            &DecisionLine {
                id: &r.id,
                client: &r.client,
                host: r.host.as_deref(),
                port: r.port,
                method: r.method.as_deref(),
                decision: r.decision,
                reason: r.reason.as_deref(),
                rule: r.rule.as_deref(),
                addr: r.addr.as_deref(),
            },
        );
    }

    /// Writes the `close` line of an allowed request.
    pub fn close(&self, r: &DecisionRecord) {
        self.write(
            "close",
            &CloseLine {
                id: &r.id,
                client: &r.client,
                host: r.host.as_deref(),
                port: r.port,
                method: r.method.as_deref(),
                status: r.status,
                error: r.error.as_deref(),
                bytes_up: r.bytes_up,
                bytes_down: r.bytes_down,
                duration_ms: r.duration_ms,
                copy: r.copy,
                sni: r.sni.as_deref(),
            },
        );
    }

    /// Writes any other event (`policy`, `start`, `stop`, …) with its fields.
    pub fn event(&self, event: &str, body: &impl Serialize) {
        self.write(event, body);
    }

    fn write(&self, event: &str, body: &impl Serialize) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let Ok(mut line) = serde_json::to_string(&Line { ts, event, body }) else {
            return;
        };
        match self {
            LogSink::Stderr => {
                line.push('\n');
                // One write per line so concurrent lines never interleave; a log that
                // cannot be written must not take the proxy down. Without journald the
                // file behind stderr is capped (`log_file`).
                crate::base::log_file::write_line(line.as_bytes());
            }
            LogSink::Memory(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_and_close_lines_share_the_id_and_split_the_fields() {
        let mem = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink::Memory(mem.clone());
        let mut rec = DecisionRecord {
            host: Some("evil.example\n".into()),
            port: Some(443),
            ..DecisionRecord::denied(
                "7-1".into(),
                "acme".into(),
                Some("CONNECT".into()),
                "host not in allowlist".into(),
            )
        };
        sink.decision(&rec);
        rec.decision = Verdict::Allowed;
        rec.reason = None;
        rec.bytes_up = 5;
        rec.duration_ms = 1;
        rec.error = Some("idle timeout".into());
        rec.sni = Some("other.example\u{1b}[2J".into());
        sink.close(&rec);
        let lines = mem.lock().unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| !l.contains('\n')));
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["event"], "decision");
        assert_eq!(v["id"], "7-1");
        assert_eq!(v["client"], "acme");
        assert_eq!(v["host"], "evil.example\n");
        assert_eq!(v["port"], 443);
        assert_eq!(v["method"], "CONNECT");
        assert_eq!(v["decision"], "denied");
        assert_eq!(v["reason"], "host not in allowlist");
        assert!(v.get("bytes_up").is_none());
        assert!(v.get("addr").is_none());
        let c: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(c["event"], "close");
        assert_eq!(c["id"], "7-1");
        assert_eq!(c["host"], "evil.example\n");
        assert_eq!(c["bytes_up"], 5);
        assert_eq!(c["bytes_down"], 0);
        assert_eq!(c["duration_ms"], 1);
        assert_eq!(c["error"], "idle timeout");
        assert_eq!(c["sni"], "other.example\u{1b}[2J");
        assert!(lines[1].contains(r"\u001b"), "{}", lines[1]);
        assert!(c.get("decision").is_none());
    }

    #[test]
    fn rate_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let mut r = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.check(t0), Some(0));
        for i in 1..=100 {
            assert_eq!(r.check(t0 + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(r.check(t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(r.check(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(25)), Some(1));
    }
}
