//! Host patterns of the network policy (`host`, `*.suffix`, `host:port`, IP literals)
//! and the validation of host names that clients ask the proxy for.
//!
//! Every string that reaches the policy goes through [`Pattern::parse`], so a policy
//! can only hold patterns that mean one thing: lowercase ASCII names (IDNs in their
//! `xn--` form), a wildcard only as a leading `*.` on a name of two labels or more, and
//! IP literals in their standard form.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Port an allow entry without an explicit port permits (HTTPS through `CONNECT`).
pub const DEFAULT_PORT: u16 = 443;

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Why a host pattern or requested host was rejected; a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {input:?}: {why}")]
pub struct PatternError {
    input: String,
    why: String,
}

impl PatternError {
    fn new(input: &str, why: impl Into<String>) -> Self {
        Self {
            // Keep the message on one line even for hostile input.
            input: input.chars().take(80).collect(),
            why: why.into(),
        }
    }
}

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Exactly this name.
    Exact(String),
    /// Any name strictly below this suffix (`*.example.com` matches `a.example.com`
    /// and `a.b.example.com`, not `example.com`).
    Suffix(String),
    /// This IP literal; names never match it.
    Ip(IpAddr),
}

/// A policy entry: a host match and, optionally, one port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    pub host: HostMatch,
    /// `None`: for an allow entry port 443 only, for a deny entry every port.
    pub port: Option<u16>,
}

/// The host a client asked for: a name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Target {
    /// Parses the host of a request (URI authority or `Host` header, without port).
    /// IPv6 literals may be bracketed.
    pub fn parse(host: &str) -> Result<Target, PatternError> {
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Target::Ip(ip));
        }
        Ok(Target::Name(normalize_name(host, false)?))
    }
}

impl HostMatch {
    /// Whether a requested host matches.
    pub fn matches(&self, target: &Target) -> bool {
        match (self, target) {
            (HostMatch::Exact(n), Target::Name(t)) => n == t,
            (HostMatch::Suffix(s), Target::Name(t)) => t
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostMatch::Ip(ip), Target::Ip(t)) => ip.to_canonical() == t.to_canonical(),
            _ => false,
        }
    }

    /// Larger is more specific: exact names and literals beat any wildcard, a longer
    /// suffix beats a shorter one.
    pub fn specificity(&self) -> usize {
        match self {
            HostMatch::Exact(_) | HostMatch::Ip(_) => usize::MAX,
            HostMatch::Suffix(s) => s.len(),
        }
    }
}

impl Pattern {
    /// Parses and validates one pattern: `host`, `*.suffix`, `host:port`, `1.2.3.4`,
    /// `1.2.3.4:22`, `fd00::1`, `[fd00::1]:22`.
    pub fn parse(input: &str) -> Result<Pattern, PatternError> {
        let err = |why: &str| PatternError::new(input, why);
        if input.is_empty() {
            return Err(err("empty"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace or control characters"));
        }
        if input.contains("://") || input.contains(['/', '@', '?', '#']) {
            return Err(err(
                "write the host only, without scheme, user or path (e.g. `example.com` or `example.com:8443`)",
            ));
        }
        let (host, port) = split_port(input).map_err(|why| err(&why))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Pattern {
                host: HostMatch::Ip(ip),
                port,
            });
        }
        if host.starts_with('[') {
            return Err(err("not a valid IPv6 literal"));
        }
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            let suffix = normalize_name(suffix, true).map_err(|e| err(&e.why))?;
            if !suffix.contains('.') {
                return Err(err(
                    "a wildcard needs a suffix of two labels or more (`*.example.com`, not `*.com`)",
                ));
            }
            HostMatch::Suffix(suffix)
        } else {
            HostMatch::Exact(normalize_name(host, true).map_err(|e| err(&e.why))?)
        };
        Ok(Pattern { host, port })
    }

    /// Whether this pattern, as an allow entry, covers `target:port`.
    pub fn allows(&self, target: &Target, port: u16) -> bool {
        self.port.unwrap_or(DEFAULT_PORT) == port && self.host.matches(target)
    }

    /// Whether this pattern, as a deny entry, covers `target:port`.
    pub fn denies(&self, target: &Target, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.host.matches(target)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (HostMatch::Exact(n), _) => f.write_str(n)?,
            (HostMatch::Suffix(s), _) => write!(f, "*.{s}")?,
            (HostMatch::Ip(IpAddr::V6(ip)), Some(_)) => write!(f, "[{ip}]")?,
            (HostMatch::Ip(ip), _) => write!(f, "{ip}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Splits `host[:port]`; a bare IPv6 literal (several colons, no brackets) has no port.
fn split_port(input: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = input.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or("unclosed `[` in IPv6 literal")?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not a valid IPv6 literal".to_owned());
        }
        return match after {
            "" => Ok((ip, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((ip, Some(parse_port(p)?))),
                None => Err("unexpected text after `]`".to_owned()),
            },
        };
    }
    if input.matches(':').count() > 1 {
        return Ok((input, None));
    }
    match input.split_once(':') {
        Some((host, p)) => Ok((host, Some(parse_port(p)?))),
        None => Ok((input, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {p:?} is not a number from 1 to 65535")),
        Ok(n) if p.starts_with('+') || p.starts_with('0') => {
            Err(format!("write the port as a plain number ({n})"))
        }
        Ok(n) => Ok(n),
    }
}

/// Lowercases and checks a DNS name; a single trailing dot is dropped.
fn normalize_name(name: &str, pattern: bool) -> Result<String, PatternError> {
    let err = |why: &str| PatternError::new(name, why);
    if !name.is_ascii() {
        return Err(err(
            "non-ASCII name: write it in its `xn--` (punycode) form",
        ));
    }
    let lower = name.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if trimmed.is_empty() {
        return Err(err("empty name"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(err("name longer than 253 characters"));
    }
    if trimmed.contains('*') {
        return Err(err(if pattern {
            "a wildcard is only allowed as a leading `*.`"
        } else {
            "`*` is not allowed in a host name"
        }));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(err("empty label (`..` or a leading dot)"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(err("label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                "only letters, digits, `-`, `_` and dots are allowed in a name",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(err("a label cannot start or end with `-`"));
        }
    }
    let last = trimmed.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        // `127.1` or `0x7f.1` are not names but IP addresses in a form resolvers accept;
        // treating them as names would let them bypass the literal-IP rules.
        return Err(err(
            "looks like an IP address in a non-standard form; write it as a.b.c.d",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn name(s: &str) -> Target {
        Target::Name(s.to_owned())
    }

    #[test]
    fn round_trips_canonical_forms() {
        for (input, canon) in [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("*.Example.com", "*.example.com"),
            ("git.example.com:22", "git.example.com:22"),
            ("10.1.2.3", "10.1.2.3"),
            ("10.1.2.3:8080", "10.1.2.3:8080"),
            ("fd00::1", "fd00::1"),
            ("[fd00::1]", "fd00::1"),
            ("[fd00::1]:22", "[fd00::1]:22"),
            ("_acme.example.com", "_acme.example.com"),
            ("intranet", "intranet"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(p(input).to_string(), canon, "{input}");
            assert_eq!(p(canon).to_string(), canon, "{canon}");
        }
    }

    #[test]
    fn rejects_garbage_with_one_line_messages() {
        for bad in [
            "",
            " example.com",
            "exa mple.com",
            "example.com\nevil.com",
            "example.com\r",
            "https://example.com",
            "example.com/path",
            "user@example.com",
            "*",
            "*.com",
            "a.*.example.com",
            "*example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:https",
            "example.com:+443",
            "example.com:",
            "ex..ample.com",
            ".example.com",
            "-a.example.com",
            "a-.example.com",
            "bücher.example",
            "127.1",
            "0x7f.0.0.1",
            "1.2.3.4.5",
            "[fd00::1",
            "[fd00::1]x",
            "[example.com]",
            "a;b.example",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            let err = Pattern::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains('\n') && !err.contains('\r'), "{err:?}");
        }
    }

    #[test]
    fn wildcard_matches_strict_subdomains_only() {
        let w = p("*.example.com");
        assert!(w.allows(&name("a.example.com"), 443));
        assert!(w.allows(&name("a.b.example.com"), 443));
        assert!(!w.allows(&name("example.com"), 443));
        assert!(!w.allows(&name("badexample.com"), 443));
        assert!(!w.allows(&name("a.example.com.evil.net"), 443));
    }

    #[test]
    fn allow_ports_default_to_443_and_deny_covers_all_ports() {
        let plain = p("example.com");
        assert!(plain.allows(&name("example.com"), 443));
        assert!(!plain.allows(&name("example.com"), 80));
        assert!(!plain.allows(&name("example.com"), 22));
        let http = p("example.com:80");
        assert!(http.allows(&name("example.com"), 80));
        assert!(!http.allows(&name("example.com"), 443));
        assert!(plain.denies(&name("example.com"), 80));
        assert!(plain.denies(&name("example.com"), 22));
        assert!(!http.denies(&name("example.com"), 443));
    }

    #[test]
    fn names_never_match_literals_and_mapped_literals_match_v4() {
        let ip = p("10.0.0.5");
        assert!(ip.allows(&Target::Ip("10.0.0.5".parse().unwrap()), 443));
        assert!(ip.allows(&Target::Ip("::ffff:10.0.0.5".parse().unwrap()), 443));
        assert!(!ip.allows(&name("10-0-0-5.example"), 443));
        assert!(!p("example.com").allows(&Target::Ip("10.0.0.5".parse().unwrap()), 443));
    }

    #[test]
    fn request_hosts_are_validated() {
        assert_eq!(Target::parse("Example.com").unwrap(), name("example.com"));
        assert_eq!(
            Target::parse("[::1]").unwrap(),
            Target::Ip("::1".parse().unwrap())
        );
        assert!(Target::parse("127.1").is_err());
        assert!(Target::parse("*.example.com").is_err());
        assert!(Target::parse("a b").is_err());
    }
}
