//! Reads the TLS `ClientHello` that opens a tunnel, for the check of its server name
//! (`sni.rs`): the record layer, the handshake header and the extension list, and
//! nothing else. Written for hostile input: every length is checked against the bytes
//! that are there before it is used, the hello may come in several records (each read
//! in any number of pieces), and anything a server might read differently from the
//! proxy — a second handshake message behind the hello, another record type in the
//! middle of it, an extension twice, more than one name — is an error, not a guess.
//!
//! Public for the property tests in `tests/fuzz.rs`.

/// The largest `ClientHello` accepted, handshake header included. Real ones are 0.5–2
/// KiB (a post-quantum key share included); the limit only bounds what is held.
pub const MAX_HELLO: usize = 16 * 1024;
/// The most records a `ClientHello` may be split into.
pub const MAX_RECORDS: usize = 64;
/// A record's header: type, version, length.
pub const RECORD_HEADER: usize = 5;
/// The most bytes a `ClientHello` can take on the wire within the limits above.
pub const MAX_BYTES: usize = MAX_HELLO + MAX_RECORDS * RECORD_HEADER;

/// The largest record payload TLS allows (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// Extensions that carry the real server name encrypted: `encrypted_client_hello`
/// (RFC 9849, 0xfe0d), the code points of its drafts 8–12 and the older ESNI draft.
fn encrypts_the_name(ext: u16) -> bool {
    matches!(ext, 0xfe08..=0xfe0d | 0xffce)
}

/// What the first bytes of a tunnel are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Too few bytes to tell yet.
    Incomplete,
    /// Not a TLS handshake record (nor an SSL 2-format hello).
    NotTls,
    /// An SSL 2-format `ClientHello` (which some servers still take for TLS 1.0–1.2): it
    /// has no extensions, so no server name.
    Ssl2Hello,
    /// A whole `ClientHello`, in the records that make up the first `len` bytes.
    Hello { len: usize, hello: ClientHello },
}

/// The parts of a `ClientHello` the proxy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the `server_name` extension, as sent (not yet checked as a
    /// host name).
    pub server_name: Option<Vec<u8>>,
    /// An extension that carries the server name encrypted is present.
    pub encrypted: bool,
}

/// Why bytes that start like TLS are not a `ClientHello` the proxy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// Looks at the first bytes of a tunnel (everything received so far). Call again with
/// more bytes while it says [`Scan::Incomplete`]; once `buf` holds [`MAX_BYTES`] the
/// answer is never `Incomplete`.
pub fn scan(buf: &[u8]) -> Result<Scan, Malformed> {
    match buf {
        [] => Ok(Scan::Incomplete),
        [HANDSHAKE, ..] => handshake(buf),
        // SSL 2 record header with the long-length bit, then message type 1.
        [b0, rest @ ..] if b0 & 0x80 != 0 => match rest {
            [_, CLIENT_HELLO, ..] => Ok(Scan::Ssl2Hello),
            [_, _, ..] => Ok(Scan::NotTls),
            _ => Ok(Scan::Incomplete),
        },
        _ => Ok(Scan::NotTls),
    }
}

/// Handshake records from the start of `buf`, reassembled until the `ClientHello` is
/// whole.
fn handshake(buf: &[u8]) -> Result<Scan, Malformed> {
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0;
    for _ in 0..MAX_RECORDS {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
            return Ok(Scan::Incomplete);
        };
        if header[0] != HANDSHAKE {
            return Err(Malformed("a record of another type inside the ClientHello"));
        }
        if header[1] != 3 || header[2] > 4 {
            return Err(Malformed("not a TLS record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(Malformed("an empty handshake record"));
        }
        if len > MAX_RECORD {
            return Err(Malformed("a record longer than 16 KiB"));
        }
        let start = pos + RECORD_HEADER;
        let end = start + len;
        let have = buf.len().min(end);
        message.extend_from_slice(&buf[start..have]);
        // Checked on partial records too, so a wrong message or an oversized hello is
        // refused at once instead of after the client has sent all of it.
        let total = message_len(&message)?;
        if have < end {
            return Ok(Scan::Incomplete);
        }
        pos = end;
        match total {
            Some(total) if message.len() > total => {
                return Err(Malformed(
                    "more handshake data after the ClientHello in its record",
                ));
            }
            Some(total) if message.len() == total => {
                let hello = parse_hello(&message[4..])?;
                return Ok(Scan::Hello { len: pos, hello });
            }
            _ => {}
        }
    }
    Err(Malformed("a ClientHello split into more than 64 records"))
}

/// The length of the handshake message (header included) once its header is there.
fn message_len(message: &[u8]) -> Result<Option<usize>, Malformed> {
    if let Some(&kind) = message.first()
        && kind != CLIENT_HELLO
    {
        return Err(Malformed(
            "the first handshake message is not a ClientHello",
        ));
    }
    let &[_, a, b, c, ..] = message else {
        return Ok(None);
    };
    let total = 4 + ((usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c));
    if total > MAX_HELLO {
        return Err(Malformed("a ClientHello larger than 16 KiB"));
    }
    Ok(Some(total))
}

/// Reads from a byte slice, every read bounded; `None` when the bytes run out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `ClientHello`'s body (RFC 8446 §4.1.2; TLS 1.0–1.2 have the same layout).
fn parse_hello(body: &[u8]) -> Result<ClientHello, Malformed> {
    let truncated = Malformed("a ClientHello field runs past its end");
    let mut r = Reader(body);
    r.take(2 + 32).ok_or(truncated)?; // legacy_version, random
    let session_id = r.vec8().ok_or(truncated)?;
    if session_id.len() > 32 {
        return Err(Malformed("a session id longer than 32 bytes"));
    }
    let suites = r.vec16().ok_or(truncated)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed("an invalid cipher suite list"));
    }
    if r.vec8().ok_or(truncated)?.is_empty() {
        return Err(Malformed("no compression method"));
    }
    let mut hello = ClientHello {
        server_name: None,
        encrypted: false,
    };
    if r.is_empty() {
        // TLS 1.2 and older allow a hello without extensions.
        return Ok(hello);
    }
    let mut exts = Reader(r.vec16().ok_or(truncated)?);
    if !r.is_empty() {
        return Err(Malformed("bytes after the extensions"));
    }
    let mut seen = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16().ok_or(truncated)?;
        let data = exts.vec16().ok_or(truncated)?;
        seen.push(kind);
        if kind == SERVER_NAME {
            hello.server_name = Some(server_name(data)?.to_vec());
        } else if encrypts_the_name(kind) {
            hello.encrypted = true;
        }
    }
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        // Servers differ on which copy counts (if they refuse at all).
        return Err(Malformed("an extension given twice"));
    }
    Ok(hello)
}

/// The one host name of a `server_name` extension (RFC 6066 §3).
fn server_name(data: &[u8]) -> Result<&[u8], Malformed> {
    let bad = Malformed("an invalid server_name extension");
    let mut ext = Reader(data);
    let mut list = Reader(ext.vec16().ok_or(bad)?);
    if !ext.is_empty() {
        return Err(bad);
    }
    if list.u8().ok_or(bad)? != HOST_NAME {
        return Err(Malformed("a server name of another type than host_name"));
    }
    let name = list.vec16().ok_or(bad)?;
    if name.is_empty() {
        return Err(Malformed("an empty server name"));
    }
    if !list.is_empty() {
        return Err(Malformed("more than one server name"));
    }
    Ok(name)
}

/// Test vectors shared by this module's and `sni.rs`'s tests.
#[cfg(test)]
pub(crate) mod build {
    /// A `ClientHello` body with these extensions (type, data), in one handshake message.
    pub(crate) fn message(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // no session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut list = Vec::new();
        for (kind, data) in exts {
            list.extend(kind.to_be_bytes());
            list.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
            list.extend(data);
        }
        body.extend(u16::try_from(list.len()).unwrap().to_be_bytes());
        body.extend(list);
        let mut msg = vec![1];
        msg.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    /// The data of a `server_name` extension naming `name`.
    pub(crate) fn sni(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend(name);
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend(entry);
        data
    }

    /// `message` in records of at most `size` bytes each.
    pub(crate) fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend([0x16, 3, 1]);
            out.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    /// A `ClientHello` for `name` in one record.
    pub(crate) fn hello(name: &str) -> Vec<u8> {
        records(
            &message(&[(0, sni(name.as_bytes())), (10, vec![0, 2, 0, 29])]),
            1 << 14,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::build::{hello, message, records, sni};
    use super::*;

    fn name_of(buf: &[u8]) -> Result<Option<Vec<u8>>, Malformed> {
        match scan(buf)? {
            Scan::Hello { len, hello } => {
                assert_eq!(len, buf.len());
                assert!(!hello.encrypted);
                Ok(hello.server_name)
            }
            other => panic!("not a whole hello: {other:?}"),
        }
    }

    #[test]
    fn the_server_name_of_a_hello_in_one_or_many_records() {
        let one = hello("ok.example");
        assert_eq!(name_of(&one), Ok(Some(b"ok.example".to_vec())));
        let msg = message(&[(0, sni(b"ok.example"))]);
        for size in [1, 2, 3, 5, 17, 100] {
            let split = records(&msg, size);
            if split.len() <= MAX_BYTES && msg.len().div_ceil(size) <= MAX_RECORDS {
                assert_eq!(name_of(&split), Ok(Some(b"ok.example".to_vec())), "{size}");
            } else {
                assert!(scan(&split).is_err(), "{size}");
            }
        }
    }

    #[test]
    fn every_prefix_of_a_hello_is_incomplete() {
        let split = records(&message(&[(0, sni(b"a.example"))]), 7);
        for n in 0..split.len() {
            assert_eq!(scan(&split[..n]), Ok(Scan::Incomplete), "{n}");
        }
        // Bytes after the hello's records (early data, say) are not part of it.
        let mut more = split.clone();
        more.extend([0x17, 3, 3, 0, 1, 0]);
        assert!(matches!(scan(&more), Ok(Scan::Hello { len, .. }) if len == split.len()));
    }

    #[test]
    fn no_extensions_or_no_server_name_is_a_hello_without_a_name() {
        let mut msg = message(&[]);
        assert_eq!(name_of(&records(&msg, 1 << 14)), Ok(None));
        // Without the extension block at all (TLS 1.2 allows that).
        msg.truncate(msg.len() - 2);
        msg[3] -= 2;
        assert_eq!(name_of(&records(&msg, 1 << 14)), Ok(None));
        let alpn = message(&[(16, vec![0, 3, 2, b'h', b'2'])]);
        assert_eq!(name_of(&records(&alpn, 1 << 14)), Ok(None));
    }

    #[test]
    fn encrypted_client_hello_and_its_drafts_are_seen() {
        for ext in [0xfe0d, 0xfe08, 0xffce] {
            let msg = message(&[(0, sni(b"public.example")), (ext, vec![0; 8])]);
            match scan(&records(&msg, 1 << 14)) {
                Ok(Scan::Hello { hello, .. }) => assert!(hello.encrypted, "{ext:x}"),
                other => panic!("{ext:x}: {other:?}"),
            }
        }
    }

    #[test]
    fn what_is_not_tls() {
        assert_eq!(scan(b"GET / HTTP/1.1\r\n"), Ok(Scan::NotTls));
        assert_eq!(scan(b"SSH-2.0-OpenSSH_9.2\r\n"), Ok(Scan::NotTls));
        assert_eq!(scan(&[0x80]), Ok(Scan::Incomplete));
        assert_eq!(scan(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Ok(Scan::Ssl2Hello));
        assert_eq!(scan(&[0x80, 0x2e, 0x02]), Ok(Scan::NotTls));
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let good = message(&[(0, sni(b"ok.example"))]);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = good.clone();
            f(&mut m);
            m
        };
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("version", {
                let mut r = records(&good, 1 << 14);
                r[1] = 2;
                r
            }),
            (
                "empty record",
                [vec![0x16, 3, 1, 0, 0], records(&good, 1 << 14)].concat(),
            ),
            ("long record", vec![0x16, 3, 1, 0x40, 1]),
            ("not a hello", records(&with(&|m| m[0] = 2), 1 << 14)),
            ("huge hello", vec![0x16, 3, 1, 0, 4, 1, 0, 0x40, 0]),
            ("trailing message", {
                let mut m = good.clone();
                m.extend([1, 0, 0, 0]);
                records(&m, 1 << 14)
            }),
            ("alert between fragments", {
                let r = records(&good, 20);
                [&r[..25], &[0x15, 3, 3, 0, 2, 2, 40], &r[25..]].concat()
            }),
            (
                "twice",
                records(
                    &message(&[(0, sni(b"a.example")), (0, sni(b"b.example"))]),
                    1 << 14,
                ),
            ),
            (
                "twice, other",
                records(&message(&[(16, vec![]), (16, vec![])]), 1 << 14),
            ),
        ];
        // Every length in the body one too large and one too small.
        for (what, at) in [
            ("session id", 4 + 34),
            ("suites", 4 + 36),
            ("compression", 4 + 39),
        ] {
            for delta in [1u8, 255] {
                let m = with(&|m| m[at] = m[at].wrapping_add(delta));
                cases.push((what, records(&m, 1 << 14)));
            }
        }
        for (what, bytes) in cases {
            assert!(scan(&bytes).is_err(), "{what}: {:?}", scan(&bytes));
        }
        // The handshake length one too large leaves it waiting for more: incomplete.
        let m = with(&|m| m[3] += 1);
        assert_eq!(scan(&records(&m, 1 << 14)), Ok(Scan::Incomplete));
    }

    #[test]
    fn malformed_server_names_are_refused() {
        let name_ext = |data: Vec<u8>| records(&message(&[(0, data)]), 1 << 14);
        let edited = |f: fn(&mut Vec<u8>)| {
            let mut d = sni(b"a.example");
            f(&mut d);
            name_ext(d)
        };
        let two_names = {
            let mut d = sni(b"a.example");
            d.extend(&sni(b"b.example")[2..]);
            let n = u16::try_from(d.len() - 2).unwrap();
            d[..2].copy_from_slice(&n.to_be_bytes());
            name_ext(d)
        };
        for (what, bytes) in [
            ("empty extension", name_ext(vec![])),
            ("empty list", name_ext(vec![0, 0])),
            ("empty name", name_ext(vec![0, 3, 0, 0, 0])),
            ("two names", two_names),
            ("name type", edited(|d| d[2] = 1)),
            ("list too long", edited(|d| d[1] += 1)),
            ("list too short", edited(|d| d[1] -= 1)),
            ("name past the list", edited(|d| d[4] += 1)),
            ("name short of the list", edited(|d| d[4] -= 1)),
        ] {
            assert!(scan(&bytes).is_err(), "{what}: {:?}", scan(&bytes));
        }
    }

    #[test]
    fn too_many_records_are_refused_before_the_limit_of_bytes() {
        let msg = message(&[(0, sni(&[b'a'; 200]))]);
        let split = records(&msg, 2);
        assert!(split.len() < MAX_BYTES);
        assert_eq!(
            scan(&split),
            Err(Malformed("a ClientHello split into more than 64 records"))
        );
    }
}
