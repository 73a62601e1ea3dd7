//! The proxy's log: one JSON object per line on stderr (the journal, when run by
//! systemd), one line per decision, plus policy and lifecycle events.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// One decision on one request, written when the request is over (for an allowed
/// tunnel: when the tunnel closes, so the byte counts are complete).
#[derive(Serialize, Debug, Clone)]
pub struct DecisionRecord {
    pub client: String,
    /// The requested host (name or IP literal), when the request got that far.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `CONNECT`, `GET`, …
    pub method: Option<String>,
    pub decision: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The allow rule that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The address connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Status of the upstream response (plain HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong after the decision (upstream or tunnel error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Client to upstream.
    pub bytes_up: u64,
    /// Upstream to client.
    pub bytes_down: u64,
    pub duration_ms: u64,
}

impl DecisionRecord {
    /// A denial of which nothing is known yet but the client, maybe the method, and why.
    pub fn denied(client: String, method: Option<String>, reason: String) -> Self {
        Self {
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
        }
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
    /// Writes a decision line.
    pub fn decision(&self, record: &DecisionRecord) {
        self.write("decision", record);
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
                // cannot be written must not take the proxy down.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
    fn decision_is_one_json_line_with_the_fields() {
        let mem = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink::Memory(mem.clone());
        sink.decision(&DecisionRecord {
            host: Some("evil.example\n".into()),
            port: Some(443),
            duration_ms: 1,
            ..DecisionRecord::denied(
                "acme".into(),
                Some("CONNECT".into()),
                "host not in allowlist".into(),
            )
        });
        let lines = mem.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["event"], "decision");
        assert_eq!(v["client"], "acme");
        assert_eq!(v["host"], "evil.example\n");
        assert_eq!(v["port"], 443);
        assert_eq!(v["method"], "CONNECT");
        assert_eq!(v["decision"], "denied");
        assert_eq!(v["reason"], "host not in allowlist");
        assert_eq!(v["bytes_up"], 0);
        assert_eq!(v["duration_ms"], 1);
        assert!(v.get("addr").is_none());
    }
}
