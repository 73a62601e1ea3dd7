//! Proxy-held API keys: the agent talks plain HTTP to `http://127.0.0.1:3128/<provider>/…`
//! (its provider's base URL points there) with a placeholder key; the proxy maps the
//! provider name to the provider's API host, opens TLS to it itself (rustls with the
//! host's trust store), replaces whatever credential header the agent sent with the
//! client's real key, and streams the answer back. The key is read from a host-only
//! file (`config/proxy-keys/<VAR>`, mode 0600, never mounted into the sandbox) on every
//! request, so `sandboxctl secret set` takes effect at once.
//!
//! Only the providers of the client's agent are served; any other name on this path is
//! refused and logged. The key never appears in a log line or a reply to the agent.

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, bail};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, header};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;

pub use crate::sandbox::agent::{ANTHROPIC, OPENAI, PROVIDERS, Provider};

/// Whether `path` (the request's path, with its query) may carry the key to `p`: one of
/// the provider's [`Provider::paths`] or the client's own `extra` patterns. A pattern
/// ending in `*` also matches everything below it (`/v1/models*`: `/v1/models` and
/// `/v1/models/x`, not `/v1/modelsx`); any other is matched exactly. A path with a
/// `.` or `..` segment, an empty segment or a `%`-escape is refused whatever the lists
/// say: the provider might resolve it to another endpoint than the one matched here.
pub fn path_allowed(p: &Provider, extra: &[String], path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.contains('%') || rest.split('/').any(|seg| matches!(seg, "" | "." | "..")) {
        return false;
    }
    p.paths
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => {
                path == prefix
                    || path
                        .strip_prefix(prefix)
                        .is_some_and(|below| below.starts_with('/'))
            }
            None => path == pattern,
        })
}

/// Checks a client's `--key-path` pattern: an absolute API path of plain segments,
/// optionally ending in `*`.
pub fn check_path_pattern(pattern: &str) -> anyhow::Result<()> {
    let path = pattern.strip_suffix('*').unwrap_or(pattern);
    let ok = path.len() > 1
        && path.len() <= 200
        && path.starts_with('/')
        && !path.ends_with('/')
        && path[1..].split('/').all(|seg| {
            !matches!(seg, "" | "." | "..")
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~:".contains(&b))
        });
    if !ok {
        bail!(
            "invalid --key-path {}: give an API path such as /v1/files or /v1/files* (plain segments, `*` only at the end)",
            crate::base::escape::display(pattern)
        );
    }
    Ok(())
}

/// Sets the real key, after removing every credential header the agent sent.
fn set_key(p: &Provider, headers: &mut HeaderMap, key: &str) -> Result<()> {
    headers.remove(header::AUTHORIZATION);
    headers.remove(HeaderName::from_static("x-api-key"));
    let (name, value) = if p.bearer {
        (header::AUTHORIZATION, format!("Bearer {key}"))
    } else {
        (HeaderName::from_static("x-api-key"), key.to_owned())
    };
    let mut value = HeaderValue::from_str(&value).context("the key is not a valid header")?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

/// What the agent holds instead of the key (its tools insist on some value).
pub const PLACEHOLDER: &str = "sandboxctl-proxy-held-key";

/// The directory of a client's proxy-held keys, under its (never mounted) `config/`.
pub const KEY_DIR: &str = "proxy-keys";

/// Test-only: a PEM file of extra trust anchors for the provider connections.
pub const EXTRA_CA_ENV: &str = "SANDBOXCTL_PROXY_TEST_CA";
/// Test-only: connect to this address instead of the provider's (name checks unchanged).
pub const CONNECT_TO_ENV: &str = "SANDBOXCTL_PROXY_TEST_PROVIDER_ADDR";

/// Largest key file read.
const MAX_KEY: u64 = 64 * 1024;

/// The key-adding part of a proxy's configuration.
#[derive(Clone)]
pub struct Keys {
    /// The providers of the client's agent.
    pub providers: Vec<&'static Provider>,
    /// Where the keys are (`<KEY_DIR>/<key_var>`).
    pub key_dir: PathBuf,
    pub tls: Arc<rustls::ClientConfig>,
    /// Test-only override of the provider's address.
    pub connect_to: Option<SocketAddr>,
    /// The client's own additions to its providers' paths (`--key-path`).
    pub extra_paths: Vec<String>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("providers", &self.providers)
            .field("key_dir", &self.key_dir)
            .field("connect_to", &self.connect_to)
            .field("extra_paths", &self.extra_paths)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Trusts the host's certificates plus those in `extra_ca` (a PEM file, for tests).
    pub fn new(
        providers: Vec<&'static Provider>,
        key_dir: PathBuf,
        extra_ca: Option<&Path>,
    ) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            use pki_types::pem::PemObject as _;
            let certs = pki_types::CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            for c in certs {
                let c = c.with_context(|| format!("invalid CA file {}", path.display()))?;
                roots
                    .add(c)
                    .with_context(|| format!("invalid CA in {}", path.display()))?;
            }
        } else if added == 0 {
            bail!("no trusted certificate authorities found on the host (install ca-certificates)");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            providers,
            key_dir,
            tls: Arc::new(tls),
            connect_to: None,
            extra_paths: Vec::new(),
        })
    }

    /// The client's provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&'static Provider> {
        self.providers.iter().copied().find(|p| p.name == name)
    }

    /// Reads the key for `p`: a regular file (no symlink), at most 64 KiB, one line.
    pub fn key(&self, p: &Provider) -> Result<String> {
        read_key(&self.key_dir.join(p.key_var))
    }
}

fn read_key(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut raw = String::new();
    file.take(MAX_KEY)
        .read_to_string(&mut raw)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let key = raw.trim();
    if key.is_empty() || key.contains(['\n', '\r', '\0']) {
        bail!("{} holds no usable key", path.display());
    }
    Ok(key.to_owned())
}

/// Writes a proxy-held key (0600, in a 0700 directory), replacing any earlier one.
pub fn store(config_dir: &Path, var: &str, value: &[u8]) -> Result<()> {
    let dir = config_dir.join(KEY_DIR);
    crate::sandbox::layout::create_private_dir(&dir)?;
    crate::base::atomic::write(&dir.join(var), value, 0o600)
}

/// Removes a proxy-held key if there is one.
pub fn remove(config_dir: &Path, var: &str) -> Result<()> {
    let path = config_dir.join(KEY_DIR).join(var);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// A request for the key-adding path: not `CONNECT`, addressed to the forwarder itself
/// (a loopback name, origin-form with such a `Host` or absolute-form). Returns the
/// provider segment and the rest of the path (with its query), starting with `/`.
pub(crate) fn addressed<B>(req: &Request<B>) -> Option<(String, String)> {
    if req.method() == Method::CONNECT {
        return None;
    }
    let uri = req.uri();
    let host = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.host().to_owned(),
        (None, None) => {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            h.parse::<hyper::http::uri::Authority>()
                .ok()?
                .host()
                .to_owned()
        }
        _ => return None,
    };
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        return None;
    }
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let rest = pq.strip_prefix('/')?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    let tail = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    Some((name.to_owned(), tail))
}

/// Prepares the upstream request's headers: hop-by-hop ones are already gone; the
/// agent's credentials are replaced by the key and `Host` is the provider's.
pub(crate) fn upstream_headers(headers: &mut HeaderMap, p: &Provider, key: &str) -> Result<()> {
    set_key(p, headers, key)?;
    headers.insert(header::HOST, HeaderValue::from_static(p.host));
    Ok(())
}

/// How much is read from the provider's TCP socket at once. rustls asks for 4 KiB at a
/// time, which costs about five `read(2)` calls per 16 KiB record; reading ahead into
/// this buffer makes it one call per four records when data is flowing.
pub const UPSTREAM_READ_BUFFER: usize = 64 << 10;

/// The TLS stream to a provider, as the proxy reads it.
pub type UpstreamTls = Drain<tokio_rustls::client::TlsStream<BufReader<TcpStream>>>;

/// TLS on `tcp` to `host` (its certificate checked against `tls`'s roots), read ahead
/// and drained as described at [`Drain`]. The benchmark's direct client uses it too, so
/// both sides of the comparison read TLS the same way.
pub async fn tls_connect(
    tls: Arc<rustls::ClientConfig>,
    host: &'static str,
    tcp: TcpStream,
) -> std::io::Result<UpstreamTls> {
    let name = pki_types::ServerName::try_from(host)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tcp = BufReader::with_capacity(UPSTREAM_READ_BUFFER, tcp);
    let s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    Ok(Drain::new(s))
}

/// The provider's TLS stream as the HTTP client reads it: one `poll_read` hands over
/// all the plaintext that can be had without waiting (several records, up to the
/// caller's buffer), instead of one record (at most 16 KiB) per call. Fewer, larger
/// reads mean fewer body frames, so fewer hand-offs between the upstream and the
/// agent's connection and fewer, larger writes to the agent. Nothing is held back: as
/// soon as the stream would wait, what has been read is returned (server-sent events
/// go through as they arrive).
pub struct Drain<S> {
    inner: S,
    /// An error met after some bytes were handed over, returned by the next read.
    error: Option<std::io::Error>,
}

impl<S> Drain<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, error: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Drain<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > before && buf.remaining() > 0 => {}
                // Full, or the end of the stream (seen again by the next read).
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) if buf.filled().len() > start => {
                    self.error = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Drain<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn only_the_agents_api_paths_carry_the_key() {
        let extra = ["/v1/files*".to_owned(), "/v1/batches".to_owned()];
        for (p, path, none, widened) in [
            (&ANTHROPIC, "/v1/messages?beta=true", true, true),
            (
                &ANTHROPIC,
                "/v1/messages/count_tokens?beta=true",
                true,
                true,
            ),
            (&ANTHROPIC, "/v1/models", true, true),
            (&ANTHROPIC, "/v1/models/claude-x", true, true),
            (&ANTHROPIC, "/v1/complete", true, true),
            (&ANTHROPIC, "/v1/messages/batches", false, false),
            (&ANTHROPIC, "/v1/files", false, true),
            (&ANTHROPIC, "/v1/files/f1/content", false, true),
            (&ANTHROPIC, "/v1/batches", false, true),
            (&ANTHROPIC, "/v1/batches/b1", false, false),
            (&ANTHROPIC, "/v1/organizations/me", false, false),
            (&ANTHROPIC, "/v1/modelsx", false, false),
            (&ANTHROPIC, "/v1/messages/../files", false, false),
            (&ANTHROPIC, "/v1/models/./x", false, false),
            (&ANTHROPIC, "/v1//messages", false, false),
            (&ANTHROPIC, "/v1/%6dessages", false, false),
            (&ANTHROPIC, "v1/messages", false, false),
            (&OPENAI, "/v1/responses", true, true),
            (&OPENAI, "/v1/responses/compact", true, true),
            (&OPENAI, "/v1/responses/resp_123", false, false),
            (&OPENAI, "/v1/chat/completions", true, true),
            (&OPENAI, "/v1/embeddings", true, true),
            (&OPENAI, "/v1/organization/admin_api_keys", false, false),
            (&OPENAI, "/v1/files", false, true),
        ] {
            assert_eq!(path_allowed(p, &[], path), none, "{} {path}", p.name);
            assert_eq!(
                path_allowed(p, &extra, path),
                widened,
                "{} {path} widened",
                p.name
            );
        }
    }

    #[test]
    fn key_path_patterns_are_checked() {
        for ok in ["/v1/files", "/v1/files*", "/v1/batches/x-1_a.b~c:d"] {
            check_path_pattern(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "/",
            "*",
            "v1/files",
            "/v1/files/",
            "/v1//x",
            "/v1/../x",
            "/v1/./x",
            "/v1/f*x",
            "/v1/%2e",
            "/v1/a b",
            "/v1/x\n",
        ] {
            assert!(check_path_pattern(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_forwarder_path_is_recognised() {
        let r = req("/anthropic/v1/messages?beta=1", Some("127.0.0.1:3128"));
        assert_eq!(
            addressed(&r),
            Some(("anthropic".into(), "/v1/messages?beta=1".into()))
        );
        let r = req("http://localhost:3128/openai/v1/responses", None);
        assert_eq!(
            addressed(&r),
            Some(("openai".into(), "/v1/responses".into()))
        );
        let r = req("/anthropic", Some("127.0.0.1"));
        assert_eq!(addressed(&r), Some(("anthropic".into(), "/".into())));
        // Anything addressed elsewhere is an ordinary proxied request.
        assert_eq!(addressed(&req("/v1/messages", Some("example.com"))), None);
        assert_eq!(addressed(&req("http://example.com/anthropic/", None)), None);
        let c = Request::builder()
            .method(Method::CONNECT)
            .uri("127.0.0.1:3128")
            .body(())
            .expect("request");
        assert_eq!(addressed(&c), None);
    }

    #[test]
    fn the_agents_credentials_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(PLACEHOLDER));
        h.insert("authorization", HeaderValue::from_static("Bearer stolen?"));
        upstream_headers(&mut h, &ANTHROPIC, "sk-real").expect("headers");
        assert_eq!(h.get("x-api-key").expect("key"), "sk-real");
        assert!(h.get("authorization").is_none());
        assert_eq!(h.get("host").expect("host"), "api.anthropic.com");
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        upstream_headers(&mut h, &OPENAI, "sk-o").expect("headers");
        assert_eq!(h.get("authorization").expect("auth"), "Bearer sk-o");
        assert!(h.get("x-api-key").is_none());
        assert!(upstream_headers(&mut h, &OPENAI, "bad\u{7f}key").is_err());
    }

    #[test]
    fn keys_are_regular_files_of_one_line() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tmp");
        store(tmp.path(), "ANTHROPIC_API_KEY", b"sk-abc").expect("store");
        let path = tmp.path().join(KEY_DIR).join("ANTHROPIC_API_KEY");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_key(&path).expect("key"), "sk-abc");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(read_key(&link).is_err());
        remove(tmp.path(), "ANTHROPIC_API_KEY").expect("rm");
        remove(tmp.path(), "ANTHROPIC_API_KEY").expect("rm twice");
        assert!(read_key(&path).is_err());
    }

    /// A reader that plays a script: each entry is what one `poll_read` gives.
    struct Script(std::collections::VecDeque<Poll<std::io::Result<&'static [u8]>>>);

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                Some(Poll::Ready(Ok(b))) => {
                    buf.put_slice(b);
                    Poll::Ready(Ok(()))
                }
                Some(Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
                Some(Poll::Pending) => Poll::Pending,
                None => Poll::Ready(Ok(())),
            }
        }
    }

    fn read(d: &mut Drain<Script>, cap: usize) -> Poll<std::io::Result<Vec<u8>>> {
        let mut mem = vec![0; cap];
        let mut buf = ReadBuf::new(&mut mem);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(d)
            .poll_read(&mut cx, &mut buf)
            .map_ok(|()| buf.filled().to_vec())
    }

    fn ready(b: &'static [u8]) -> Poll<std::io::Result<&'static [u8]>> {
        Poll::Ready(Ok(b))
    }

    #[test]
    fn a_read_takes_every_record_at_hand_and_never_waits_for_more() {
        let mut d = Drain::new(Script(
            [
                ready(b"one "),
                ready(b"two "),
                ready(b"three"),
                Poll::Pending,
            ]
            .into_iter()
            .chain([ready(b"four"), Poll::Pending, Poll::Pending])
            .collect(),
        ));
        // All that is ready, in one read; the stream then waits: what was read goes.
        assert_eq!(
            read(&mut d, 64).map(Result::unwrap),
            Poll::Ready(b"one two three".to_vec())
        );
        assert_eq!(
            read(&mut d, 64).map(Result::unwrap),
            Poll::Ready(b"four".to_vec())
        );
        assert!(read(&mut d, 64).is_pending());
    }

    #[test]
    fn a_full_buffer_the_end_and_errors_come_through() {
        let mut d = Drain::new(Script(
            [ready(b"abcd"), ready(b"efgh"), ready(b"ij")]
                .into_iter()
                .chain([Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))])
                .collect(),
        ));
        // The caller's buffer is full after two records: the third waits for the next read.
        assert_eq!(
            read(&mut d, 8).map(Result::unwrap),
            Poll::Ready(b"abcdefgh".to_vec())
        );
        // Bytes before an error are handed over first, the error with the next read.
        assert_eq!(
            read(&mut d, 8).map(Result::unwrap),
            Poll::Ready(b"ij".to_vec())
        );
        let Poll::Ready(Err(e)) = read(&mut d, 8) else {
            panic!("the error is lost");
        };
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        // Then the end of the stream (an empty read).
        assert_eq!(read(&mut d, 8).map(Result::unwrap), Poll::Ready(Vec::new()));
    }

    #[test]
    fn base_urls() {
        assert_eq!(ANTHROPIC.base_url(3128), "http://127.0.0.1:3128/anthropic");
        assert_eq!(OPENAI.base_url(3128), "http://127.0.0.1:3128/openai/v1");
        assert_eq!(Provider::for_key_var("OPENAI_API_KEY"), Some(&OPENAI));
    }
}
