//! The check of a tunnel's first bytes. A `CONNECT` is decided on the name it asks
//! for, but which site answers behind a shared address (a CDN's, where the hosts of the
//! default bundles live) is chosen by the TLS server name (SNI) the client sends once
//! the tunnel is up. So before any byte goes upstream, the proxy reads the client's
//! first bytes:
//!
//! - a TLS `ClientHello`, on any port, must name the `CONNECT` host (case and a trailing
//!   dot aside) or a name that the very rule which allowed the `CONNECT` allows (same
//!   wildcard, not denied). A hello without a name is refused, except on a tunnel to
//!   an IP literal (a client reaching an address sends none), and so is one with an
//!   encrypted `ClientHello` (ECH), whose real name cannot be seen;
//! - anything else on port 443, where a rule without a port allows HTTPS only, is
//!   refused; on other ports it goes through as before (SSH, plain HTTP). The
//!   upstream's bytes reach the client while the proxy waits for the client's, so
//!   protocols in which the server speaks first keep working;
//! - the hello must be whole within the head timeout (on port 443 counted from the
//!   tunnel's start, elsewhere from its first byte) and within 16 KiB.
//!
//! What passes goes upstream unchanged, then the tunnel is spliced as before. A refused
//! hello gets a TLS alert (`access_denied`, or `decode_error` when malformed) before the
//! tunnel is closed, other refused bytes just the close; the tunnel's close line says
//! why, with both names. Only the first `ClientHello` is seen: what follows it (a second
//! hello after a `HelloRetryRequest`, a renegotiation) goes through unread.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

use super::client_hello::{self, ClientHello, MAX_BYTES, Scan};
use super::policy::{Decision, Target};
use super::reload::Loaded;

/// The port on which a tunnel must carry TLS.
const HTTPS: u16 = 443;
/// How much of a server name a log line shows (a DNS name is at most 253 bytes).
const SHOWN: usize = 255;
/// The most bytes the first read takes; later ones take as much as was read before.
const FIRST_READ: usize = 4096;

/// What the `CONNECT` was allowed on, to hold the `ClientHello` against.
#[derive(Clone)]
pub(crate) struct Check {
    /// The host as the policy saw it (lowercase, no trailing dot).
    pub host: Target,
    pub port: u16,
    /// The allow rule that matched, as [`Decision::Allow`] names it.
    pub rule: String,
    pub private: bool,
    /// The policy that decided.
    pub policy: Loaded,
    /// How long the client may take to send its `ClientHello`.
    pub timeout: Duration,
}

/// The first bytes of a tunnel, allowed to go upstream.
#[derive(Debug)]
pub(crate) struct Passed {
    pub bytes: Vec<u8>,
    /// The server name of a TLS tunnel, for the log.
    pub server_name: Option<String>,
}

/// A TLS alert the proxy sends with a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alert {
    AccessDenied = 49,
    DecodeError = 50,
}

impl Alert {
    /// The alert as a plaintext record (fatal, before any key is agreed).
    pub(crate) fn record(self) -> [u8; 7] {
        [0x15, 3, 3, 0, 2, 2, self as u8]
    }
}

/// A tunnel refused on its first bytes.
#[derive(Debug)]
pub(crate) struct Refused {
    /// One line for the log.
    pub reason: String,
    pub alert: Option<Alert>,
    pub server_name: Option<String>,
}

/// Why the first bytes did not go upstream.
#[derive(Debug)]
pub(crate) enum Stopped {
    Refused(Refused),
    /// Reading from the client failed.
    Io(io::Error),
}

impl Refused {
    fn new(reason: impl Into<String>, alert: Option<Alert>) -> Self {
        Self {
            reason: format!("TLS refused: {}", reason.into()),
            alert,
            server_name: None,
        }
    }
}

/// What to do with the bytes received so far.
#[derive(Debug)]
enum Step {
    More,
    Forward(Option<String>),
    Refuse(Refused),
}

/// Where the client's bytes are read from.
pub(crate) trait Source: Send {
    /// Waits until there is something to read (or the end), if the source can tell.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what there is (at least one byte, or 0 at the end).
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Reads the client's first bytes (after `early`, what came with the `CONNECT` head)
/// from `source` until they can be judged; returns them if they may go upstream. A
/// client that closes before sending anything passes with no bytes.
pub(crate) async fn first_flight(
    check: &Check,
    early: &[u8],
    source: &mut impl Source,
) -> Result<Passed, Stopped> {
    let mut buf = early.to_vec();
    let mut deadline = (check.port == HTTPS).then(|| Instant::now() + check.timeout);
    loop {
        match judge(check, &buf) {
            Step::Forward(server_name) => {
                return Ok(Passed {
                    bytes: buf,
                    server_name,
                });
            }
            Step::Refuse(r) => return Err(Stopped::Refused(r)),
            Step::More => {}
        }
        if !buf.is_empty() && deadline.is_none() {
            deadline = Some(Instant::now() + check.timeout);
        }
        let old = buf.len();
        let got = match deadline {
            Some(d) => tokio::time::timeout_at(d, read_more(source, &mut buf)).await,
            None => Ok(read_more(source, &mut buf).await),
        };
        let n = match got {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(Stopped::Io(e)),
            Err(_) => {
                let secs = check.timeout.as_secs_f64();
                let r = if old == 0 {
                    Refused::new(format!("no ClientHello within {secs} s on port 443"), None)
                } else {
                    Refused::new(format!("ClientHello not complete within {secs} s"), None)
                };
                return Err(Stopped::Refused(r));
            }
        };
        if n == 0 {
            if old == 0 {
                return Ok(Passed {
                    bytes: buf,
                    server_name: None,
                });
            }
            return Err(Stopped::Refused(Refused::new(
                "the client closed the tunnel inside its ClientHello",
                None,
            )));
        }
    }
}

/// Reads more of the first flight into `buf`, once there is something to read: a
/// tunnel whose client is silent holds no buffer. The buffer grows as needed: most first
/// flights (a hello is 0.3–2 KiB) fit in the first read.
async fn read_more(source: &mut impl Source, buf: &mut Vec<u8>) -> io::Result<usize> {
    source.readable().await?;
    let old = buf.len();
    let room = old.max(FIRST_READ).min(MAX_BYTES - old);
    if room == 0 {
        // Not reached: `judge` decides on a full buffer.
        return Err(io::Error::other("first bytes beyond the limit"));
    }
    buf.resize(old + room, 0);
    let read = source.read(&mut buf[old..]).await;
    buf.truncate(old + read.as_ref().map_or(0, |&n| n));
    read
}

/// Judges the bytes received so far.
fn judge(check: &Check, buf: &[u8]) -> Step {
    match client_hello::scan(buf) {
        Err(e) => Step::Refuse(Refused::new(
            format!("malformed ClientHello: {e}"),
            Some(Alert::DecodeError),
        )),
        // `scan` never says `Incomplete` for a full buffer, so this only waits.
        Ok(Scan::Incomplete) => Step::More,
        Ok(Scan::NotTls) if check.port == HTTPS => Step::Refuse(Refused::new(
            "the tunnel to port 443 does not start with a ClientHello",
            None,
        )),
        Ok(Scan::NotTls) => Step::Forward(None),
        Ok(Scan::Ssl2Hello) => Step::Refuse(Refused::new(
            "an SSL 2-format ClientHello, which carries no server name",
            None,
        )),
        Ok(Scan::Hello { hello, .. }) => match allowed(check, &hello) {
            Ok(name) => Step::Forward(name),
            Err(r) => Step::Refuse(r),
        },
    }
}

/// Whether the hello's server name may go where the `CONNECT` was allowed to; the name
/// (for the log) if so.
fn allowed(check: &Check, hello: &ClientHello) -> Result<Option<String>, Refused> {
    let shown = hello.server_name.as_ref().map(|raw| {
        String::from_utf8_lossy(raw)
            .chars()
            .take(SHOWN)
            .collect::<String>()
    });
    let refuse = |why: String| Refused {
        server_name: shown.clone(),
        ..Refused::new(why, Some(Alert::AccessDenied))
    };
    let host = &check.host;
    if hello.encrypted {
        return Err(refuse(
            "an encrypted ClientHello (ECH) hides the server name".to_owned(),
        ));
    }
    let (Some(raw), Some(shown)) = (&hello.server_name, &shown) else {
        if matches!(host, Target::Ip(_)) {
            return Ok(None);
        }
        return Err(refuse(format!("no server name (SNI) for {host}")));
    };
    let name = match std::str::from_utf8(raw).map(Target::parse) {
        Ok(Ok(Target::Name(n))) => n,
        Ok(Ok(Target::Ip(_))) => return Err(refuse("the server name is an IP address".into())),
        _ => return Err(refuse(format!("{shown:?} is not a valid server name"))),
    };
    if let Target::Name(h) = host
        && *h == name
    {
        return Ok(Some(shown.clone()));
    }
    if let Target::Ip(_) = host {
        return Err(refuse(format!(
            "server name {name} on a tunnel to the address {host}"
        )));
    }
    let same_rule = match check.policy.as_ref() {
        Ok(policy) => matches!(
            policy.decide(&Target::Name(name.clone()), check.port),
            Decision::Allow { rule, private } if rule == check.rule && private == check.private
        ),
        Err(_) => false,
    };
    if same_rule {
        return Ok(Some(shown.clone()));
    }
    Err(refuse(format!(
        "server name {name} is neither the CONNECT host {host} nor allowed by its rule `{}`",
        check.rule
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::client_hello::build::{hello, message, records, sni};
    use super::super::policy;
    use super::*;

    const POLICY: &str = r#"allow = ["ok.example", "*.wild.example", "x.wild.example", "203.0.113.7", "ssh.example:22", "*.alt.example:8443"]
                            deny = ["bad.wild.example"]"#;

    fn check(host: &str, port: u16) -> Check {
        let policy = policy::parse(POLICY).unwrap();
        let host = Target::parse(host).unwrap();
        let Decision::Allow { rule, private } = policy.decide(&host, port) else {
            panic!("{host}:{port} is not allowed");
        };
        Check {
            host,
            port,
            rule,
            private,
            policy: Arc::new(Ok(policy)),
            timeout: Duration::from_secs(10),
        }
    }

    /// The outcome for `bytes`: `Ok(name)` when they may go upstream.
    fn outcome(c: &Check, bytes: &[u8]) -> Result<Option<String>, String> {
        match judge(c, bytes) {
            Step::Forward(n) => Ok(n),
            Step::Refuse(r) => Err(r.reason),
            Step::More => Err("more".to_owned()),
        }
    }

    #[test]
    fn the_server_name_must_be_the_connect_host_or_under_its_rule() {
        let ok = check("ok.example", 443);
        assert_eq!(
            outcome(&ok, &hello("ok.example")),
            Ok(Some("ok.example".into()))
        );
        // Case and one trailing dot do not matter; the log shows what was sent.
        assert_eq!(
            outcome(&ok, &hello("OK.Example.")),
            Ok(Some("OK.Example.".into()))
        );
        for other in [
            "other.example",
            "ok.example.evil",
            "a.ok.example",
            "x.wild.example",
        ] {
            let why = outcome(&ok, &hello(other)).unwrap_err();
            assert!(why.contains(other) && why.contains("ok.example"), "{why}");
        }
        let wild = check("a.wild.example", 443);
        for same in ["a.wild.example", "b.wild.example", "c.b.wild.example"] {
            assert_eq!(
                outcome(&wild, &hello(same)),
                Ok(Some(same.into())),
                "{same}"
            );
        }
        // Not the wildcard's own suffix, not a denied name, not one another rule allows.
        for other in [
            "wild.example",
            "bad.wild.example",
            "x.wild.example",
            "ok.example",
        ] {
            assert!(outcome(&wild, &hello(other)).is_err(), "{other}");
        }
        // The exact rule covers its own name only.
        let exact = check("x.wild.example", 443);
        assert!(outcome(&exact, &hello("y.wild.example")).is_err());
        // The port is part of the rule.
        let alt = check("a.alt.example", 8443);
        assert!(outcome(&alt, &hello("b.alt.example")).is_ok());
    }

    #[test]
    fn no_name_ech_and_names_that_are_no_names_are_refused() {
        let ok = check("ok.example", 443);
        let bare = records(&message(&[]), 1 << 14);
        assert!(outcome(&ok, &bare).unwrap_err().contains("no server name"));
        let ech = records(
            &message(&[(0, sni(b"ok.example")), (0xfe0d, vec![0; 40])]),
            1 << 14,
        );
        assert!(outcome(&ok, &ech).unwrap_err().contains("ECH"));
        for bad in [
            &b"203.0.113.7"[..],
            b"[::1]",
            b"ok.example\0.evil",
            b"ok example",
            b"*.example",
            b"\xff\xfe",
            b"ok.example..",
        ] {
            let h = records(&message(&[(0, sni(bad))]), 1 << 14);
            assert!(outcome(&ok, &h).is_err(), "{bad:?}");
        }
        // Hostile bytes reach the log as a bounded string.
        let long = records(&message(&[(0, sni(&[b'\n'; 4000]))]), 1 << 14);
        let Step::Refuse(r) = judge(&ok, &long) else {
            panic!("accepted")
        };
        assert_eq!(r.server_name.unwrap().len(), SHOWN);
        assert!(r.reason.len() < 2 * SHOWN * 4, "{}", r.reason.len());
    }

    #[test]
    fn a_tunnel_to_an_ip_literal_takes_a_hello_without_a_name_only() {
        let ip = check("203.0.113.7", 443);
        assert_eq!(outcome(&ip, &records(&message(&[]), 1 << 14)), Ok(None));
        assert!(outcome(&ip, &hello("ok.example")).is_err());
    }

    #[test]
    fn port_443_must_carry_tls_other_ports_need_not() {
        let https = check("ok.example", 443);
        assert!(outcome(&https, b"GET / HTTP/1.1\r\n").is_err());
        assert!(outcome(&https, &[0x80, 0x2e, 1, 3, 1]).is_err());
        let ssh = check("ssh.example", 22);
        assert_eq!(outcome(&ssh, b"SSH-2.0-OpenSSH_9.2\r\n"), Ok(None));
        // TLS is checked on any port, and so is the SSL 2 form.
        assert!(outcome(&ssh, &hello("other.example")).is_err());
        assert!(outcome(&ssh, &[0x80, 0x2e, 1, 3, 1]).is_err());
        assert_eq!(
            outcome(&ssh, &hello("ssh.example")),
            Ok(Some("ssh.example".into()))
        );
    }

    #[test]
    fn policy_refusals_get_access_denied_and_malformed_hellos_decode_error() {
        let ok = check("ok.example", 443);
        let alert = |bytes: &[u8]| match judge(&ok, bytes) {
            Step::Refuse(r) => r.alert,
            other => panic!("{other:?}"),
        };
        assert_eq!(alert(&hello("other.example")), Some(Alert::AccessDenied));
        assert_eq!(alert(&[0x16, 3, 1, 0, 0]), Some(Alert::DecodeError));
        assert_eq!(alert(b"GET /"), None);
        assert_eq!(Alert::AccessDenied.record(), [0x15, 3, 3, 0, 2, 2, 49]);
    }

    /// Hands out its chunks one read at a time, then the end; or never anything.
    struct Chunks(Option<std::vec::IntoIter<Vec<u8>>>);

    impl Source for Chunks {
        async fn readable(&mut self) -> io::Result<()> {
            if self.0.is_none() {
                std::future::pending::<()>().await;
            }
            Ok(())
        }

        async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(chunks) = &mut self.0 else {
                return std::future::pending().await;
            };
            let Some(chunk) = chunks.next() else {
                return Ok(0);
            };
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    /// Hands out as much of its bytes as fits each read.
    struct Stream(Vec<u8>);

    impl Source for Stream {
        async fn readable(&mut self) -> io::Result<()> {
            Ok(())
        }

        async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    #[tokio::test]
    async fn the_buffer_grows_to_a_large_hello_and_no_further() {
        let ok = check("ok.example", 443);
        let padded = records(
            &message(&[(0, sni(b"ok.example")), (21, vec![0; 12_000])]),
            1 << 14,
        );
        let mut stream = Stream([&padded[..], b"after"].concat());
        let passed = first_flight(&ok, &[], &mut stream).await.unwrap();
        assert!(passed.bytes.starts_with(&padded), "{}", passed.bytes.len());
        assert_eq!(passed.server_name.as_deref(), Some("ok.example"));
        // Other bytes on another port go after the first read.
        let ssh = check("ssh.example", 22);
        let mut stream = Stream(vec![b'x'; 10_000]);
        let passed = first_flight(&ssh, &[], &mut stream).await.unwrap();
        assert_eq!(passed.bytes.len(), FIRST_READ);
        // More than a hello may take is refused, however it arrives.
        let huge = records(
            &message(&[(0, sni(b"ok.example")), (21, vec![0; 16_500])]),
            100,
        );
        let refused = first_flight(&ok, &[], &mut Stream(huge)).await.unwrap_err();
        assert!(matches!(refused, Stopped::Refused(r) if r.reason.contains("malformed")));
    }

    async fn feed(c: &Check, early: &[u8], chunks: Vec<Vec<u8>>) -> Result<Passed, Stopped> {
        first_flight(c, early, &mut Chunks(Some(chunks.into_iter()))).await
    }

    #[tokio::test]
    async fn the_first_flight_is_read_in_pieces_and_forwarded_whole() {
        let ok = check("ok.example", 443);
        let mut bytes = records(&message(&[(0, sni(b"ok.example"))]), 9);
        bytes.extend(b"early data");
        let pieces: Vec<Vec<u8>> = bytes[3..].chunks(4).map(<[u8]>::to_vec).collect();
        let passed = feed(&ok, &bytes[..3], pieces).await.unwrap();
        // All that was read goes upstream, the hello and what came with its last piece.
        assert!(bytes.starts_with(&passed.bytes), "{passed:?}");
        assert!(passed.bytes.len() >= bytes.len() - 10);
        assert_eq!(passed.server_name.as_deref(), Some("ok.example"));
        // A client that closes at once passes with nothing; one that closes mid-hello not.
        assert!(feed(&ok, &[], vec![]).await.unwrap().bytes.is_empty());
        let cut = feed(&ok, &bytes[..20], vec![]).await.unwrap_err();
        assert!(matches!(cut, Stopped::Refused(r) if r.reason.contains("inside its ClientHello")));
    }

    #[tokio::test]
    async fn a_slow_hello_is_refused_after_the_timeout() {
        let short = |host, port| Check {
            timeout: Duration::from_millis(50),
            ..check(host, port)
        };
        let ok = short("ok.example", 443);
        let stalled = first_flight(&ok, &[], &mut Chunks(None)).await.unwrap_err();
        assert!(
            matches!(stalled, Stopped::Refused(r) if r.reason.contains("no ClientHello within 0.05 s"))
        );
        // Elsewhere the clock starts with the first byte: a silent client is the
        // server-speaks-first case and waits (for the idle timeout).
        let ssh = short("ssh.example", 22);
        let mut silent = Chunks(None);
        let waiting = first_flight(&ssh, &[], &mut silent);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waiting)
                .await
                .is_err()
        );
        let partial = first_flight(&ssh, &[0x16, 3], &mut Chunks(None))
            .await
            .unwrap_err();
        assert!(matches!(partial, Stopped::Refused(r) if r.reason.contains("not complete")));
    }
}
