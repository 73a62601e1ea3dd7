//! Notifications: the per-client agent event channel. Hooks of the agents inside the
//! sandbox (`agent-event KIND` in the image) write one line, `KIND SESSION\n`, to a Unix
//! socket in a host-only runtime directory that the client's container mounts
//! read-only; `sandboxctl-notify@CLIENT.service` (socket-activated, `sandboxctl notify`)
//! reads it, records the session's last state for `sandboxctl sessions` and sends a
//! freedesktop notification naming the client and the session.
//!
//! Everything on the socket is written by the sandbox, so it is hostile input: one line
//! of at most `LINE_MAX` bytes per connection, read within `READ_DEADLINE`, of a fixed
//! form (a kind from a fixed set, a session name of tmux's plain charset); anything else
//! is dropped and logged. A repeat of the same session and kind within `DEDUPE_SECS`
//! sends nothing, and at most `RATE_MAX` notifications go out per `RATE_WINDOW_SECS`.

pub mod desktop;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::sandbox::client::ClientName;

/// Where a client's event socket directory is mounted in its container.
pub const CONTAINER_DIR: &str = "/run/sandbox-events";
/// The socket's file name, in the host and the container directory.
pub const SOCKET_NAME: &str = "events.sock";
/// The longest line accepted, newline included.
pub const LINE_MAX: usize = 512;
/// How long one connection may take to send its line.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// A repeat of a session's state within this many seconds sends nothing.
pub const DEDUPE_SECS: u64 = 30;
/// At most `RATE_MAX` notifications per client within `RATE_WINDOW_SECS`.
pub const RATE_WINDOW_SECS: u64 = 60;
pub const RATE_MAX: usize = 6;
/// Sessions remembered per client (the oldest are forgotten first).
const MAX_SESSIONS: usize = 128;
/// The service exits after this long without a connection; the socket stays.
const IDLE_EXIT: Duration = Duration::from_mins(5);
/// The largest state file read back.
const STATE_MAX: u64 = 64 * 1024;

pub fn socket_unit(client: &ClientName) -> String {
    format!("sandboxctl-notify@{client}.socket")
}

pub fn service_unit(client: &ClientName) -> String {
    format!("sandboxctl-notify@{client}.service")
}

/// The host directory of a client's event socket, relative to the user's runtime
/// directory (`%t` in unit files); must match `sandboxctl-notify@.socket`.
pub use crate::sandbox::layout::events_dir_relative;

fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
}

/// The host directory of a client's event socket.
pub fn events_dir(client: &ClientName) -> Option<PathBuf> {
    Some(runtime_dir()?.join(events_dir_relative(client)))
}

/// The host-only directory of a client's session states (the service's
/// `RuntimeDirectory=`); never mounted into a container.
pub fn state_dir(client: &ClientName) -> Option<PathBuf> {
    Some(
        runtime_dir()?
            .join("agent-sandbox/session-state")
            .join(client.as_str()),
    )
}

/// The file of a client's session states.
pub fn state_path(client: &ClientName) -> Option<PathBuf> {
    Some(state_dir(client)?.join("state.json"))
}

/// What an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// It waits for the user (a question, a permission prompt, idle at its prompt).
    Waiting,
    /// It finished its turn.
    Finished,
    /// The user gave it a prompt: it works (recorded, never notified).
    Working,
}

impl Kind {
    pub const NAMES: [&'static str; 3] = ["waiting", "finished", "working"];

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "waiting" => Some(Self::Waiting),
            "finished" => Some(Self::Finished),
            "working" => Some(Self::Working),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Finished => "finished",
            Self::Working => "working",
        }
    }

    fn notifies(self) -> bool {
        !matches!(self, Self::Working)
    }
}

/// A tmux session name as sandboxctl uses them: 1-64 of A-Z, a-z, 0-9, '-' and '_'.
pub fn is_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// One event from the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub session: String,
}

/// Parses `KIND SESSION\n`, exactly; anything else is `None`.
pub fn parse_line(line: &[u8]) -> Option<Event> {
    if line.len() > LINE_MAX {
        return None;
    }
    let body = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let (kind, session) = body.split_once(' ')?;
    let kind = Kind::from_name(kind)?;
    is_session_name(session).then(|| Event {
        kind,
        session: session.to_owned(),
    })
}

/// A session's last reported state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub state: Kind,
    /// When it was reported, in seconds since the epoch.
    pub at: u64,
}

/// A client's session states and its recent notifications (for the rate limit), kept
/// in `state_path` by the service and read by `sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub sessions: BTreeMap<String, SessionState>,
    /// When notifications were sent, within the last `RATE_WINDOW_SECS`.
    #[serde(default)]
    pub sent: Vec<u64>,
}

/// What an event leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Notify,
    /// The same state of the same session was reported within `DEDUPE_SECS`.
    Duplicate,
    /// Recorded, but `RATE_MAX` notifications already went out in the window.
    RateLimited,
    /// Recorded; this kind is not notified.
    Recorded,
}

impl State {
    /// Records `event` at `now` (seconds since the epoch) and decides whether to notify.
    pub fn record(&mut self, event: &Event, now: u64) -> Decision {
        let previous = self.sessions.get(&event.session);
        if previous.is_some_and(|p| p.state == event.kind && now.saturating_sub(p.at) < DEDUPE_SECS)
        {
            return Decision::Duplicate;
        }
        self.sessions.insert(
            event.session.clone(),
            SessionState {
                state: event.kind,
                at: now,
            },
        );
        while self.sessions.len() > MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(n, _)| n.clone());
            match oldest {
                Some(n) => self.sessions.remove(&n),
                None => break,
            };
        }
        if !event.kind.notifies() {
            return Decision::Recorded;
        }
        self.sent
            .retain(|t| now.saturating_sub(*t) < RATE_WINDOW_SECS && *t <= now);
        if self.sent.len() >= RATE_MAX {
            return Decision::RateLimited;
        }
        self.sent.push(now);
        Decision::Notify
    }

    /// Reads the state file; a missing one is empty. Written only by the service from
    /// validated events, but read with bounds anyway: a malformed file is empty and
    /// names that are not session names are dropped.
    pub fn load(path: &Path) -> Result<Self> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut text = Vec::new();
        file.take(STATE_MAX)
            .read_to_end(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut state: Self = serde_json::from_slice(&text).unwrap_or_default();
        state.sessions.retain(|name, _| is_session_name(name));
        Ok(state)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).context("cannot serialise the session states")?;
        crate::base::atomic::write(path, &text, 0o600)
    }
}

/// Sends a notification for an event.
pub trait Notifier {
    fn notify(&self, client: &ClientName, event: &Event) -> Result<()>;
}

/// Reads one line (at most `LINE_MAX` bytes, newline included) within `deadline`;
/// `None` when the peer sends more, too slowly, or closes before a newline.
fn read_line(stream: &mut UnixStream, deadline: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 128];
    loop {
        let left = deadline.checked_sub(start.elapsed())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            // Bytes after the line are ignored: one event per connection.
            buf.truncate(end + 1);
            return (buf.len() <= LINE_MAX).then_some(buf);
        }
        if buf.len() >= LINE_MAX {
            return None;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Handles one connection: read, parse, record, notify. Returns what it logs.
pub fn handle(
    mut stream: UnixStream,
    client: &ClientName,
    state_path: &Path,
    notifier: &dyn Notifier,
    now: u64,
) -> String {
    let Some(line) = read_line(&mut stream, READ_DEADLINE) else {
        return format!(
            "dropped a connection: no complete line of at most {LINE_MAX} bytes within {} s",
            READ_DEADLINE.as_secs()
        );
    };
    drop(stream);
    let Some(event) = parse_line(&line) else {
        let shown = &line[..line.len().min(80)];
        return format!(
            "dropped a malformed event ({} bytes): {}",
            line.len(),
            crate::base::terminal::sanitize(shown)
        );
    };
    let mut state = match State::load(state_path) {
        Ok(s) => s,
        Err(e) => return format!("cannot read the session states: {e:#}"),
    };
    let decision = state.record(&event, now);
    if decision != Decision::Duplicate
        && let Err(e) = state.save(state_path)
    {
        return format!("cannot record the session state: {e:#}");
    }
    let what = format!("{} {}", event.kind.as_str(), event.session);
    match decision {
        Decision::Duplicate => format!("{what}: a repeat within {DEDUPE_SECS} s, not notified"),
        Decision::RateLimited => format!(
            "{what}: recorded, not notified ({RATE_MAX} notifications in {RATE_WINDOW_SECS} s already)"
        ),
        Decision::Recorded => format!("{what}: recorded"),
        Decision::Notify => match notifier.notify(client, &event) {
            Ok(()) => format!("{what}: notified"),
            Err(e) => format!("{what}: recorded; the notification failed: {e:#}"),
        },
    }
}

/// Serves `listener` one connection at a time until it has been idle for `IDLE_EXIT`.
pub fn serve(
    client: &ClientName,
    listener: &UnixListener,
    state_path: &Path,
    notifier: &dyn Notifier,
) -> Result<()> {
    let last = Arc::new(AtomicU64::new(now_secs()));
    let busy = Arc::new(AtomicBool::new(false));
    {
        let (last, busy) = (Arc::clone(&last), Arc::clone(&busy));
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(10));
                let idle = now_secs().saturating_sub(last.load(Ordering::SeqCst));
                if !busy.load(Ordering::SeqCst) && idle >= IDLE_EXIT.as_secs() {
                    // systemd starts the service again on the next connection.
                    std::process::exit(0);
                }
            }
        });
    }
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot accept on the event socket"),
        };
        busy.store(true, Ordering::SeqCst);
        let line = handle(stream, client, state_path, notifier, now_secs());
        crate::base::log_file::write_line(format!("{client}: {line}\n").as_bytes());
        last.store(now_secs(), Ordering::SeqCst);
        busy.store(false, Ordering::SeqCst);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::Write;

    #[test]
    fn lines_are_strict() {
        assert_eq!(
            parse_line(b"waiting main\n"),
            Some(Event {
                kind: Kind::Waiting,
                session: "main".into()
            })
        );
        assert_eq!(
            parse_line(b"finished wt_2-b\n").map(|e| e.kind),
            Some(Kind::Finished)
        );
        let long = format!("waiting {}\n", "a".repeat(65));
        for bad in [
            &b"waiting main"[..],
            b"waiting main\r\n",
            b"waiting  main\n",
            b"waiting main extra\n",
            b"Waiting main\n",
            b"rm main\n",
            b"waiting ma:in\n",
            b"waiting \x1b]52;c;x\x07\n",
            b"waiting \xff\n",
            b"waiting \n",
            b"\n",
            long.as_bytes(),
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    fn ev(kind: Kind, session: &str) -> Event {
        Event {
            kind,
            session: session.into(),
        }
    }

    #[test]
    fn repeats_within_the_window_are_dropped() {
        let mut s = State::default();
        assert_eq!(s.record(&ev(Kind::Waiting, "main"), 1000), Decision::Notify);
        assert_eq!(
            s.record(&ev(Kind::Waiting, "main"), 1000 + DEDUPE_SECS - 1),
            Decision::Duplicate
        );
        // Another session, another kind: not repeats.
        assert_eq!(s.record(&ev(Kind::Waiting, "wt"), 1001), Decision::Notify);
        assert_eq!(
            s.record(&ev(Kind::Finished, "main"), 1002),
            Decision::Notify
        );
        assert_eq!(
            s.record(&ev(Kind::Working, "main"), 1003),
            Decision::Recorded
        );
        assert_eq!(s.record(&ev(Kind::Waiting, "main"), 1004), Decision::Notify);
        assert_eq!(
            s.record(&ev(Kind::Waiting, "main"), 1004 + DEDUPE_SECS),
            Decision::Notify
        );
        assert_eq!(s.sessions["main"].state, Kind::Waiting);
    }

    #[test]
    fn notifications_are_rate_limited_but_states_recorded() {
        let mut s = State::default();
        for i in 0..RATE_MAX {
            let name = format!("s{i}");
            assert_eq!(s.record(&ev(Kind::Waiting, &name), 100), Decision::Notify);
        }
        assert_eq!(
            s.record(&ev(Kind::Waiting, "late"), 101),
            Decision::RateLimited
        );
        assert_eq!(s.sessions["late"].state, Kind::Waiting);
        assert_eq!(
            s.record(&ev(Kind::Waiting, "later"), 100 + RATE_WINDOW_SECS),
            Decision::Notify
        );
    }

    #[test]
    fn sessions_are_bounded() {
        let mut s = State::default();
        for i in 0..(MAX_SESSIONS as u64 + 10) {
            s.record(&ev(Kind::Working, &format!("s{i}")), i);
        }
        assert_eq!(s.sessions.len(), MAX_SESSIONS);
        assert!(!s.sessions.contains_key("s0"));
        assert!(s.sessions.contains_key(&format!("s{}", MAX_SESSIONS + 9)));
    }

    #[test]
    fn state_file_round_trips_and_survives_garbage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.json");
        assert_eq!(State::load(&path).expect("missing"), State::default());
        let mut s = State::default();
        s.record(&ev(Kind::Finished, "main"), 5);
        s.save(&path).expect("save");
        assert_eq!(State::load(&path).expect("load"), s);
        std::fs::write(&path, b"{not json").expect("write");
        assert_eq!(State::load(&path).expect("garbage"), State::default());
        std::fs::write(
            &path,
            br#"{"sessions":{"a b":{"state":"waiting","at":1},"ok":{"state":"waiting","at":1}}}"#,
        )
        .expect("write");
        let s = State::load(&path).expect("load");
        assert_eq!(s.sessions.keys().collect::<Vec<_>>(), ["ok"]);
    }

    #[derive(Default)]
    struct Recorder(RefCell<Vec<(String, Event)>>);

    impl Notifier for Recorder {
        fn notify(&self, client: &ClientName, event: &Event) -> Result<()> {
            self.0
                .borrow_mut()
                .push((client.to_string(), event.clone()));
            Ok(())
        }
    }

    /// Sends `bytes` on one connection and handles it.
    fn send(bytes: &[u8], state: &Path, rec: &Recorder, now: u64) -> String {
        let (mut a, b) = UnixStream::pair().expect("pair");
        a.write_all(bytes).expect("write");
        drop(a);
        let client = ClientName::parse("acme").expect("name");
        handle(b, &client, state, rec, now)
    }

    #[test]
    fn connections_notify_once_and_drop_garbage() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state.json");
        let rec = Recorder::default();
        let log = send(b"waiting main\n", &state, &rec, 10);
        assert!(log.ends_with("notified"), "{log}");
        send(b"waiting main\n", &state, &rec, 11);
        let log = send(b"\x1b]52;c;x\x07 main\n", &state, &rec, 12);
        assert!(log.contains("malformed") && log.contains("^[]52"), "{log}");
        let log = send(&[b'a'; 2000], &state, &rec, 12);
        assert!(log.contains("no complete line"), "{log}");
        send(b"waiting main", &state, &rec, 12);
        assert_eq!(
            rec.0.borrow().as_slice(),
            [("acme".to_owned(), ev(Kind::Waiting, "main"))]
        );
        assert_eq!(
            State::load(&state).expect("load").sessions["main"],
            SessionState {
                state: Kind::Waiting,
                at: 10
            }
        );
    }

    #[test]
    fn a_slow_sender_is_cut_off() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        a.write_all(b"wait").expect("write");
        let start = Instant::now();
        assert_eq!(read_line(&mut b, Duration::from_millis(200)), None);
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
