//! Property tests over random input ("fuzzing" on the stable toolchain): each target
//! draws many random cases from a seeded generator and checks a property, not just
//! "does not crash".
//!
//! - `fuzz_render_*`: arbitrary settings values rendered into a Quadlet unit, parsed
//!   back the way systemd and Quadlet read it (line splitting, continuation, `%` and
//!   `$`, C-unescape of words): exactly the template's keys, values equal to the input;
//!   refused values are errors on one line, never panics.
//! - `fuzz_policy_*`: policy parse → serialize → parse is stable, and matching agrees
//!   with a small reference matcher.
//! - `fuzz_proxy_*`: arbitrary request heads against the real proxy with an in-memory
//!   resolver: it never resolves a name its policy does not allow and never connects
//!   to an address other than the one its decision line names; no task panics.
//! - `fuzz_tls_*`: real rustls `ClientHello`s and made-up ones, cut into records,
//!   edited, read by the proxy's scan of a tunnel's first bytes and by a real TLS server
//!   (rustls's `Acceptor`): a name the proxy would check is never another name to the
//!   server, and the scan's answer does not depend on how the bytes arrive.
//!
//! `FUZZ_CASES` sets the number of cases per target (default: a short run for
//! `cargo test`), `FUZZ_SECONDS` a time budget per target, `FUZZ_SEED` replays a run;
//! `tests/fuzz.sh` runs a long budget. Every run prints its seed and count.

// Test code may unwrap (ARCHITECTURE.md, Conventions).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandboxctl::proxy::policy::{self, HostMatch, Pattern, Policy, Target};
use sandboxctl::proxy::{Config, Listen, Listener, LogSink, Resolver, serve};
use sandboxctl::render::{Sandbox, render};
use sandboxctl::sandbox::client::ClientName;
use sandboxctl::sandbox::settings::{Agent, ExtraMount, Settings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{layout, this_host};

/// How long a target runs: `FUZZ_CASES` cases (else `default`), ended early when
/// `FUZZ_SECONDS` is set and that time has passed.
struct Budget {
    cases: u64,
    deadline: Option<Instant>,
}

impl Budget {
    fn new(default: u64) -> Self {
        let var = |name: &str| -> Option<u64> {
            let v = std::env::var(name).ok()?;
            Some(
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
            )
        };
        let seconds = var("FUZZ_SECONDS");
        Self {
            // A time budget alone runs until the time is up.
            cases: var("FUZZ_CASES").unwrap_or(if seconds.is_some() { u64::MAX } else { default }),
            deadline: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
        }
    }

    /// Whether case `i` (counted from 0) runs; checks the clock every 64 cases.
    fn more(&self, i: u64) -> bool {
        i < self.cases
            && !(i.is_multiple_of(64) && self.deadline.is_some_and(|d| Instant::now() >= d))
    }
}

fn rng(target: &str) -> fastrand::Rng {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{target}: seed {seed} (replay with FUZZ_SEED={seed})");
    fastrand::Rng::with_seed(seed)
}

/// Characters that matter to unit files, shells, TOML, HTTP and paths, and ordinary ones.
const ALPHABET: &[char] = &[
    'a', 'b', 'Z', '0', '9', '/', '.', '-', '_', ' ', '%', '$', '"', '\'', '\\', ':', '=', '#',
    ';', '[', ']', '{', '}', '*', '@', '&', '|', '`', '!', '~', 'n', 't', 'x', '\n', '\r', '\t',
    '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{3000}', '\u{200b}', '\u{feff}',
    'é', 'ß', '😀',
];

fn string(rng: &mut fastrand::Rng, max: usize) -> String {
    let len = rng.usize(0..=max);
    (0..len)
        .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
        .collect()
}

// ---------------------------------------------------------------------------------
// (a) rendering

/// One `[Section]` `Key=value` of a parsed unit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    section: String,
    key: String,
    value: String,
}

/// Reads a unit file the way systemd's `config_parse` does: whitespace trimmed, `#`
/// and `;` lines are comments, a trailing backslash joins the next line (replaced by a
/// space), `[…]` opens a section, anything else must be `Key=value`.
fn parse_unit(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<String> = None;
    for raw in text.split('\n') {
        // systemd splits on \n only; a \r would stay in the value (and escape refuses it).
        let line = raw.trim_matches(|c| " \t\r".contains(c));
        if pending.is_none() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        let mut line = match pending.take() {
            Some(mut p) => {
                if line.starts_with('#') || line.starts_with(';') {
                    pending = Some(p);
                    continue;
                }
                p.push_str(line);
                p
            }
            None => line.to_owned(),
        };
        if line.ends_with('\\') {
            line.pop();
            line.push(' ');
            pending = Some(line);
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            line.strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or_else(|| format!("bad section line {line:?}"))?
                .clone_into(&mut section);
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line without '=': {line:?}"))?;
        out.push(Entry {
            section: section.clone(),
            key: key.trim().to_owned(),
            // Quadlet trims Unicode whitespace (Go's unicode.IsSpace) from values.
            value: value.trim_matches(char::is_whitespace).to_owned(),
        });
    }
    if pending.is_some() {
        return Err("unit ends in a continuation".into());
    }
    Ok(out)
}

/// systemd's specifier and variable pass: `%%` → `%`, `$$` → `$`. Any other `%X` or
/// `$` would be expanded by systemd, i.e. the value would not reach podman literally.
fn unspecify(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '%' | '$' => {
                if chars.next_if_eq(&c).is_some() {
                    out.push(c);
                } else {
                    return Err(format!("expandable {c} in {value:?}"));
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Splits a value into words like systemd's `extract_first_word` with
/// `EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE` (which Quadlet's splitter mirrors).
fn split_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let n = chars.next().ok_or("trailing backslash")?;
                cur.push(match n {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    's' => ' ',
                    '\\' | '"' | '\'' => n,
                    other => return Err(format!("unknown escape \\{other}")),
                });
                in_word = true;
            }
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            c if quote == Some(c) => quote = None,
            ' ' | '\t' | '\n' | '\r' if quote.is_none() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            _ => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn words_of(entry: &Entry) -> Result<Vec<String>, String> {
    split_words(&entry.value)?
        .iter()
        .map(|w| unspecify(w))
        .collect()
}

/// Random settings values in the places a user controls: project, mount paths,
/// `--podman-arg`, git identity, image.
#[derive(Clone)]
struct Drawn {
    project: String,
    mount_host: String,
    mount_container: String,
    podman_arg: String,
    git_name: String,
    image: String,
}

fn settings_of(d: &Drawn) -> Settings {
    Settings {
        agent: Agent::Shell,
        image: d.image.clone(),
        projects: vec![PathBuf::from(&d.project)],
        mounts: vec![ExtraMount {
            host: PathBuf::from(&d.mount_host),
            container: PathBuf::from(&d.mount_container),
            writable: false,
        }],
        podman_args: vec![d.podman_arg.clone()],
        git_name: Some(d.git_name.clone()),
        // Drawn projects are paths of this host ("/" among them): masks would walk them.
        default_masks: false,
        ..Settings::default()
    }
}

fn render_settings(settings: &Settings) -> anyhow::Result<String> {
    let client = ClientName::parse("fuzz").unwrap();
    let host = this_host();
    render(&Sandbox {
        client: &client,
        settings,
        layout: &layout(),
        host: &host,
    })
}

fn keys(entries: &[Entry]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| (e.section.clone(), e.key.clone()))
        .collect()
}

/// A value escape must accept: nothing that cannot be written on one line.
fn writable(v: &str) -> bool {
    !v.chars().any(char::is_control)
}

/// A path a `Volume=` can carry unchanged.
fn volume_safe(p: &str) -> bool {
    writable(p)
        && p.starts_with('/')
        && !p.contains([':', '"', '\'', '\\'])
        && !p.ends_with(char::is_whitespace)
}

/// Checks one rendered case; `Err` describes the violated property.
fn check_render(d: &Drawn, baseline_keys: &[(String, String)]) -> Result<bool, String> {
    let rendered = match render_settings(&settings_of(d)) {
        Ok(text) => text,
        Err(e) => {
            let msg = format!("{e:#}");
            if std::env::var_os("FUZZ_VERBOSE").is_some() {
                eprintln!("refused: {msg}");
            }
            if msg.contains('\n') {
                return Err(format!("multi-line error: {msg:?}"));
            }
            let must_accept = volume_safe(&d.project)
                && volume_safe(&d.mount_host)
                && volume_safe(&d.mount_container)
                && writable(&d.podman_arg)
                && writable(&d.git_name)
                && d.image
                    .strip_prefix("localhost/img:")
                    .is_some_and(|t| t.chars().all(|c| TAG_ALPHABET.contains(&c)));
            if must_accept {
                return Err(format!("refused a writable value: {msg}"));
            }
            return Ok(false);
        }
    };
    for line in rendered.lines() {
        if line.ends_with('\\') {
            return Err(format!("line continues into the next: {line:?}"));
        }
    }
    let entries = parse_unit(&rendered)?;
    if keys(&entries) != baseline_keys {
        return Err(format!(
            "keys differ from the template's:\n{:?}\n{baseline_keys:?}",
            keys(&entries)
        ));
    }
    let get = |key: &'static str| entries.iter().filter(move |e| e.key == key);
    let image = get("Image").next().ok_or("no Image")?;
    if unspecify(&image.value)? != d.image {
        return Err(format!("Image {:?} != {:?}", image.value, d.image));
    }
    let volumes: Vec<String> = get("Volume")
        .map(|e| unspecify(e.value.trim_start_matches("%t/")))
        .collect::<Result<_, _>>()?;
    for want in [
        format!("{0}:{0}:rw,z", d.project),
        format!("{}:{}:ro", d.mount_host, d.mount_container),
    ] {
        if !volumes.contains(&want) {
            return Err(format!("no Volume={want:?} in {volumes:?}"));
        }
    }
    let workdir = get("WorkingDir").next().ok_or("no WorkingDir")?;
    if unspecify(&workdir.value)? != d.project {
        return Err(format!("WorkingDir {:?}", workdir.value));
    }
    let args: Vec<Vec<String>> = get("PodmanArgs").map(words_of).collect::<Result<_, _>>()?;
    if !args.contains(&vec![d.podman_arg.clone()]) {
        return Err(format!("no PodmanArgs word {:?} in {args:?}", d.podman_arg));
    }
    let env: Vec<Vec<String>> = get("Environment").map(words_of).collect::<Result<_, _>>()?;
    let want = format!("GIT_CONFIG_VALUE_0={}", d.git_name);
    if !env.iter().any(|words| words.contains(&want)) {
        return Err(format!("no Environment word {want:?} in {env:?}"));
    }
    Ok(true)
}

const TAG_ALPHABET: &[char] = &['a', 'z', '0', '9', '.', '_', '-'];

/// Like [`string`], mostly without control characters (which every key refuses), so
/// most cases get as far as the unit.
fn value(rng: &mut fastrand::Rng, max: usize) -> String {
    let s = string(rng, max);
    if rng.u8(..12) == 0 {
        s
    } else {
        s.chars().filter(|c| !c.is_control()).collect()
    }
}

fn draw(rng: &mut fastrand::Rng) -> Drawn {
    // Mostly plausible shapes (absolute paths, `--flag=value`), sometimes anything.
    let path = |rng: &mut fastrand::Rng| {
        if rng.u8(..10) == 0 {
            value(rng, 12)
        } else {
            let p = format!("/{}", value(rng, 24));
            if rng.u8(..4) == 0 {
                p
            } else {
                p.replace([':', '"', '\'', '\\'], "")
                    .trim_end_matches(char::is_whitespace)
                    .to_owned()
            }
        }
    };
    Drawn {
        project: path(rng),
        mount_host: path(rng),
        mount_container: path(rng),
        podman_arg: format!("--env=X={}", value(rng, 24)),
        git_name: value(rng, 24),
        image: if rng.u8(..10) == 0 {
            format!("img{}", string(rng, 12))
        } else {
            let tag: String = (0..rng.usize(1..12))
                .map(|_| TAG_ALPHABET[rng.usize(..TAG_ALPHABET.len())])
                .collect();
            format!("localhost/img:{tag}")
        },
    }
}

#[test]
fn fuzz_render_values_reach_the_unit_unchanged() {
    let budget = Budget::new(3000);
    let mut n = 0u64;
    let mut rng = rng("fuzz_render");
    let plain = Drawn {
        project: "/p".into(),
        mount_host: "/h".into(),
        mount_container: "/c".into(),
        podman_arg: "--env=X=v".into(),
        git_name: "n".into(),
        image: "img".into(),
    };
    // The image decides one key (`AutoUpdate=` only for a local or fully qualified
    // name), so the baseline has the drawn image and plain values for everything else.
    let baseline_keys = |image: &str| {
        let p = Drawn {
            image: image.to_owned(),
            ..plain.clone()
        };
        // A refused image refuses the drawn case too, before keys are compared.
        render_settings(&settings_of(&p))
            .ok()
            .map(|unit| keys(&parse_unit(&unit).unwrap()))
            .unwrap_or_default()
    };
    let mut accepted = 0u64;
    for i in (0u64..).take_while(|&i| budget.more(i)) {
        n += 1;
        let d = draw(&mut rng);
        match check_render(&d, &baseline_keys(&d.image)) {
            Ok(ok) => accepted += u64::from(ok),
            Err(why) => panic!(
                "case {i}: {why}\nproject {:?} mount {:?}:{:?} arg {:?} git {:?} image {:?}",
                d.project, d.mount_host, d.mount_container, d.podman_arg, d.git_name, d.image
            ),
        }
    }
    eprintln!(
        "fuzz_render: {n} cases, {accepted} rendered, {} refused",
        n - accepted
    );
    assert!(accepted > 0 && accepted < n, "both kinds drawn");
}

/// The unit parser of this file itself: it must see what systemd sees.
#[test]
fn fuzz_unit_parser_reads_continuations_comments_and_words() {
    let text = "[A]\nK=a \\\n# c\n b\n; x\nW=\"q \\\" \\\\\" 'p q'\n";
    let e = parse_unit(text).unwrap();
    assert_eq!(e[0].value, "a  b");
    assert_eq!(words_of(&e[1]).unwrap(), ["q \" \\", "p q"]);
    assert!(unspecify("100%").is_err() && unspecify("$HOME").is_err());
    assert_eq!(unspecify("%%$$").unwrap(), "%$");
    assert!(parse_unit("[A]\nInjected\n").is_err());
}

// ---------------------------------------------------------------------------------
// (b) policy

const HOST_ALPHABET: &[char] = &[
    'a', 'b', 'x', 'A', '0', '1', '9', '-', '.', '.', '*', ':', '[', ']', '_', 'é', ' ', '/',
];

fn host_like(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..6) {
        0 => format!("{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(..=3)) + ".1",
        1 => format!("[fd00::{:x}]", rng.u16(..)),
        2 => {
            let labels = ["a", "b", "ex", "example", "com", "x-y", "xn--bcher-kva"];
            let n = rng.usize(1..4);
            let mut parts: Vec<&str> = (0..n).map(|_| labels[rng.usize(..labels.len())]).collect();
            if rng.bool() {
                parts.insert(0, "*");
            }
            parts.join(".")
        }
        _ => {
            let len = rng.usize(1..14);
            (0..len)
                .map(|_| HOST_ALPHABET[rng.usize(..HOST_ALPHABET.len())])
                .collect()
        }
    }
}

fn entry(rng: &mut fastrand::Rng) -> String {
    let host = host_like(rng);
    if rng.u8(..3) == 0 {
        format!(
            "{host}:{}",
            [0u32, 1, 22, 443, 8443, 65535, 70000][rng.usize(..7)]
        )
    } else {
        host
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A policy written back as TOML: what `parse` must read as the same policy.
fn serialize(p: &Policy) -> String {
    let list = |items: Vec<String>| items.join(", ");
    let allow = p
        .allow
        .iter()
        .map(|r| {
            if r.private {
                format!(
                    "{{ host = {}, private = true }}",
                    toml_str(&r.pattern.to_string())
                )
            } else {
                toml_str(&r.pattern.to_string())
            }
        })
        .collect();
    format!(
        "bundles = [{}]\npackages = [{}]\nallow = [{}]\ndeny = [{}]\n",
        list(p.bundles.iter().map(|b| toml_str(b.name())).collect()),
        list(
            p.packages
                .iter()
                .map(|x| toml_str(&x.to_string()))
                .collect()
        ),
        list(allow),
        list(p.deny.iter().map(|x| toml_str(&x.to_string())).collect()),
    )
}

/// The reference: a name matches an exact entry when equal, a wildcard when it has at
/// least one more whole label than the suffix and ends in the suffix's labels.
fn reference_matches(host: &HostMatch, target: &Target) -> bool {
    match (host, target) {
        (HostMatch::Exact(n), Target::Name(t)) => n == t,
        (HostMatch::Suffix(s), Target::Name(t)) => {
            let t: Vec<&str> = t.split('.').collect();
            let s: Vec<&str> = s.split('.').collect();
            t.len() > s.len() && t[t.len() - s.len()..] == s[..]
        }
        (HostMatch::Ip(a), Target::Ip(b)) => a.to_canonical() == b.to_canonical(),
        _ => false,
    }
}

/// Allowed iff no deny entry covers it (any port unless one is given) and some allow
/// entry covers it (port 443 unless one is given).
fn reference_allows(p: &Policy, target: &Target, port: u16) -> bool {
    let denied = p
        .deny
        .iter()
        .any(|d| d.port.is_none_or(|x| x == port) && reference_matches(&d.host, target));
    let allowed = p.effective_allow().iter().any(|r| {
        r.pattern.port.unwrap_or(443) == port && reference_matches(&r.pattern.host, target)
    });
    !denied && allowed
}

fn targets_for(rng: &mut fastrand::Rng, p: &Policy) -> Vec<Target> {
    let mut names: Vec<String> = Vec::new();
    for pat in p.allow.iter().map(|r| &r.pattern).chain(&p.deny) {
        let host = match &pat.host {
            HostMatch::Exact(n) | HostMatch::Suffix(n) => n.clone(),
            HostMatch::Ip(ip) => ip.to_string(),
        };
        names.push(host.clone());
        names.push(format!("a.{host}"));
        names.push(format!("a.b.{host}"));
        names.push(format!("x{host}"));
        if let Some((_, rest)) = host.split_once('.') {
            names.push(rest.to_owned());
        }
    }
    names.push(host_like(rng));
    names.iter().filter_map(|n| Target::parse(n).ok()).collect()
}

#[test]
fn fuzz_policy_round_trips_and_matches_the_reference() {
    let budget = Budget::new(20_000);
    let mut n = 0u64;
    let mut rng = rng("fuzz_policy");
    let (mut parsed, mut checked) = (0u64, 0u64);
    for i in (0u64..).take_while(|&i| budget.more(i)) {
        n += 1;
        // Single patterns: parse → display → parse is the same pattern.
        let e = entry(&mut rng);
        if let Ok(p) = Pattern::parse(&e) {
            let again = Pattern::parse(&p.to_string())
                .unwrap_or_else(|err| panic!("case {i}: {e:?} → {p} does not parse: {err}"));
            assert_eq!(again, p, "case {i}: {e:?}");
        }
        // Whole policies.
        let mut text = String::new();
        for (key, k) in [("allow", rng.usize(0..4)), ("deny", rng.usize(0..3))] {
            let items: Vec<String> = (0..k).map(|_| toml_str(&entry(&mut rng))).collect();
            writeln!(text, "{key} = [{}]", items.join(", ")).unwrap();
        }
        if rng.u8(..8) == 0 {
            let at = text
                .char_indices()
                .map(|(i, _)| i)
                .nth(rng.usize(..text.chars().count().max(1)))
                .unwrap_or(0);
            text.insert(at, ALPHABET[rng.usize(..ALPHABET.len())]);
        }
        let Ok(policy) = policy::parse(&text) else {
            continue;
        };
        parsed += 1;
        let written = serialize(&policy);
        let again = policy::parse(&written)
            .unwrap_or_else(|e| panic!("case {i}: {written:?} does not parse: {e:#}"));
        assert_eq!(again, policy, "case {i}: {text:?} → {written:?}");
        for target in targets_for(&mut rng, &policy) {
            for port in [443, 22, 8443, 80] {
                let got = matches!(policy.decide(&target, port), policy::Decision::Allow { .. });
                assert_eq!(
                    got,
                    reference_allows(&policy, &target, port),
                    "case {i}: {text:?} {target}:{port}"
                );
                checked += 1;
            }
        }
    }
    eprintln!("fuzz_policy: {n} cases, {parsed} policies parsed, {checked} decisions compared");
    assert!(parsed > n / 10, "too few valid policies drawn: {parsed}");
}

// ---------------------------------------------------------------------------------
// (c) the proxy's request head

/// Counts panics on any thread (a panicking connection task would be swallowed by
/// tokio); installed once per process.
const PROXY_TEST: &str = "fuzz_proxy_request_heads_reach_only_the_decided_target";
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Tasks of the current-thread runtime run on the test's own thread.
            if std::thread::current().name() == Some(PROXY_TEST) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Answers only `ok.test` and `*.ok.test` names, records every lookup and connect, and
/// dials a local sink instead of the address.
#[derive(Clone)]
struct Recorder {
    lookups: Arc<Mutex<Vec<String>>>,
    connects: Arc<Mutex<Vec<SocketAddr>>>,
    sink: SocketAddr,
}

const ALLOWED_IP: [u8; 4] = [198, 51, 100, 7];

impl Resolver for Recorder {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.lookups.lock().unwrap().push(host.to_owned());
        Ok(vec![IpAddr::from(ALLOWED_IP)])
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.connects.lock().unwrap().push(addr);
        TcpStream::connect(self.sink).await
    }
}

const FUZZ_POLICY: &str = "allow = [\"ok.test\", \"*.ok.test\", \"ok.test:80\", \"198.51.100.7\"]\ndeny = [\"bad.ok.test\"]\n";

fn request_head(rng: &mut fastrand::Rng) -> Vec<u8> {
    let hosts = [
        "ok.test",
        "a.ok.test",
        "bad.ok.test",
        "evil.test",
        "ok.test.evil.test",
        "OK.TEST",
        "ok.test.",
        "ok.test@evil.test",
        "evil.test#@ok.test",
        "198.51.100.7",
        "127.0.0.1",
        "[::1]",
        "169.254.169.254",
        "0x7f.1",
        "ok.test%00.evil",
    ];
    let host = |rng: &mut fastrand::Rng| {
        if rng.u8(..4) == 0 {
            host_like(rng)
        } else {
            hosts[rng.usize(..hosts.len())].to_owned()
        }
    };
    let port = |rng: &mut fastrand::Rng| {
        [":443", ":80", ":22", "", ":0", ":99999", ":443:80"][rng.usize(..7)]
    };
    let method = ["CONNECT", "GET", "POST", "get", "CONNECT ", "PRI"][rng.usize(..6)];
    let (h1, p1) = (host(rng), port(rng));
    let target = if method.starts_with("CONNECT") || rng.u8(..4) == 0 {
        format!("{h1}{p1}")
    } else {
        format!(
            "http://{h1}{p1}/{}",
            string(rng, 6).replace(['\r', '\n', ' '], "")
        )
    };
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for _ in 0..rng.usize(0..4) {
        match rng.u8(..6) {
            0 | 1 => write!(head, "Host: {}{}\r\n", host(rng), port(rng)).unwrap(),
            2 => head.push_str("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            3 => head.push_str("Proxy-Authorization: x\r\n"),
            4 => write!(head, "X-{}: {}\r\n", string(rng, 4), string(rng, 8)).unwrap(),
            _ => head.push_str("Connection: close\r\n"),
        }
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    for _ in 0..rng.usize(0..3) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.usize(..bytes.len());
        match rng.u8(..3) {
            0 => bytes[at] = rng.u8(..),
            1 => bytes.insert(at, rng.u8(..)),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

/// A line every 1,000 cases, so a long run shows its pace.
fn progress(target: &str, i: u64, started: Instant) {
    if i > 0 && i.is_multiple_of(1000) {
        eprintln!(
            "{target}: {i} cases in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// The proxy's decision lines, each parsed once as it arrives. (Parsing the whole log
/// again in every case made a run quadratic: 10,000 cases took hours and looked hung.)
struct Decisions {
    logs: Arc<Mutex<Vec<String>>>,
    read: usize,
    parsed: Vec<serde_json::Value>,
    /// Lines parsed so far (each must be parsed once).
    parses: usize,
}

impl Decisions {
    fn new(logs: Arc<Mutex<Vec<String>>>) -> Self {
        Self {
            logs,
            read: 0,
            parsed: Vec::new(),
            parses: 0,
        }
    }

    /// Takes in the lines logged since the last call; returns how many decisions there are.
    fn update(&mut self) -> usize {
        let logs = self.logs.lock().unwrap();
        self.parsed.extend(
            logs[self.read..]
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["event"] == "decision"),
        );
        self.parses += logs.len() - self.read;
        self.read = logs.len();
        self.parsed.len()
    }

    /// The decisions from the `from`-th on, having taken in the newest lines.
    fn since(&mut self, from: usize) -> Vec<serde_json::Value> {
        self.update();
        self.parsed[from..].to_vec()
    }

    /// Drops the lines read so far, from here and from the proxy's log, so a long run
    /// holds one case's lines rather than all of them (holding them all, the
    /// million-case run reached 1.4 GB).
    fn forget(&mut self) {
        self.logs.lock().unwrap().drain(..self.read);
        self.read = 0;
        self.parsed.clear();
    }
}

/// The harness's own cost per case must not grow with the run: a log line is parsed
/// once, however often the decisions are looked at.
#[test]
fn fuzz_proxy_harness_parses_each_log_line_once() {
    let line = |id: &str| format!(r#"{{"event":"decision","id":"{id}","decision":"denied"}}"#);
    let logs = Arc::new(Mutex::new(vec![line("1"), "not JSON".to_owned()]));
    let mut d = Decisions::new(logs.clone());
    assert_eq!(d.update(), 1);
    for _ in 0..10 {
        assert_eq!(d.update(), 1);
    }
    logs.lock().unwrap().push(line("2"));
    logs.lock()
        .unwrap()
        .push(r#"{"event":"close","id":"2"}"#.to_owned());
    assert_eq!(d.update(), 2);
    assert_eq!(d.update(), 2);
    assert_eq!(d.parsed[1]["id"], "2");
    assert_eq!(d.parses, 4, "a line was parsed more than once");
    // Forgetting drops what was read, and only that.
    logs.lock().unwrap().push(line("3"));
    d.forget();
    assert_eq!(logs.lock().unwrap().as_slice(), [line("3")]);
    assert_eq!(d.update(), 1);
    assert_eq!(d.parsed[0]["id"], "3");
    assert_eq!(d.parses, 5, "a line was parsed more than once");
}

/// Whether the policy (by the reference matcher) allows a looked-up name at all.
fn name_allowed(name: &str) -> bool {
    let policy = policy::parse(FUZZ_POLICY).unwrap();
    Target::parse(name).is_ok_and(|t| {
        [443, 80]
            .iter()
            .any(|&port| reference_allows(&policy, &t, port))
    })
}

/// Sends one request head to the proxy and reads what comes back until it closes (or
/// 3 s pass: `None`). A case that blocks (a connect the proxy never accepts, a write it
/// never reads) fails here, naming itself, rather than stalling the run.
async fn exchange(addr: SocketAddr, head: &[u8], case: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(head).await;
        // Half-close: the proxy answers what it read and then sees the end, instead
        // of waiting on a kept-alive connection.
        let _ = s.shutdown().await;
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await
    };
    let read = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "case {case}: {:?}: no answer and no close in 10 s",
                String::from_utf8_lossy(head)
            )
        });
    matches!(read, Ok(Ok(_))).then_some(buf)
}

#[test]
fn fuzz_proxy_request_heads_reach_only_the_decided_target() {
    count_panics();
    let budget = Budget::new(400);
    let mut n = 0u64;
    let mut rng = rng("fuzz_proxy");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("network.toml");
        std::fs::write(&policy_path, FUZZ_POLICY).unwrap();
        let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = sink.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = sink.accept().await {
                drop(s);
            }
        });
        let rec = Recorder {
            lookups: Arc::default(),
            connects: Arc::default(),
            sink: sink_addr,
        };
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut cfg = Config::new("fuzz", &policy_path);
        cfg.log = LogSink::Memory(logs.clone());
        cfg.header_read_timeout = Duration::from_millis(50);
        cfg.connect_timeout = Duration::from_millis(500);
        let listener = Listener::open(&Listen::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = listener.local_tcp_addr().unwrap();
        tokio::spawn(serve(listener, cfg, rec.clone(), std::future::pending()));
        let mut answered = 0u64;
        let mut connected = 0u64;
        let mut hosts_seen: HashMap<String, usize> = HashMap::new();
        let mut decisions = Decisions::new(logs.clone());
        let started = Instant::now();
        let mut slowest = (Duration::ZERO, 0);
        for i in (0u64..).take_while(|&i| budget.more(i)) {
            n += 1;
            progress("fuzz_proxy", i, started);
            let case_started = Instant::now();
            let head = request_head(&mut rng);
            let before_logs = decisions.update();
            let before_connects = rec.connects.lock().unwrap().len();
            let shown = String::from_utf8_lossy(&head).into_owned();
            if exchange(addr, &head, i)
                .await
                .is_some_and(|b| b.starts_with(b"HTTP/1.1 "))
            {
                answered += 1;
            }
            let new_connects: Vec<SocketAddr> =
                rec.connects.lock().unwrap()[before_connects..].to_vec();
            // A connected request's lines come out when its task ends; wait a little.
            for _ in 0..50 {
                if new_connects.is_empty() || decisions.update() > before_logs {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let new_lines = decisions.since(before_logs);
            assert!(new_connects.len() <= 1, "case {i}: {shown:?} connected twice");
            if let Some(c) = new_connects.first() {
                connected += 1;
                let allowed: Vec<&serde_json::Value> = new_lines
                    .iter()
                    .filter(|l| l["decision"] == "allowed")
                    .collect();
                assert_eq!(allowed.len(), 1, "case {i}: {shown:?} {new_lines:?}");
                let line = allowed[0];
                assert_eq!(line["addr"], c.to_string(), "case {i}: {shown:?} {line}");
                assert_eq!(line["port"], c.port(), "case {i}: {shown:?} {line}");
                let host = line["host"].as_str().unwrap_or_default();
                let target = Target::parse(host.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or_else(|e| panic!("case {i}: decision host {host:?}: {e}"));
                let policy = policy::parse(FUZZ_POLICY).unwrap();
                assert!(
                    reference_allows(&policy, &target, c.port()),
                    "case {i}: {shown:?} connected to {c} for {target}:{}",
                    c.port()
                );
                assert_eq!(c.ip(), IpAddr::from(ALLOWED_IP), "case {i}: {shown:?}");
                *hosts_seen.entry(host.to_owned()).or_default() += 1;
            }
            slowest = slowest.max((case_started.elapsed(), i));
            decisions.forget();
        }
        let lookups: BTreeSet<String> = rec.lookups.lock().unwrap().iter().cloned().collect();
        for name in &lookups {
            assert!(name_allowed(name), "resolved a name the policy denies: {name:?}");
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a connection task panicked");
        eprintln!(
            "fuzz_proxy: {n} request heads in {:.1} s (slowest: case {}, {} ms), {answered} answered with a status, {connected} connected ({hosts_seen:?}), names resolved: {lookups:?}",
            started.elapsed().as_secs_f64(),
            slowest.1,
            slowest.0.as_millis()
        );
        assert!(connected > 0, "no case was allowed: the generator is too narrow");
    });
}

// ---------------------------------------------------------------------------------
// (d) the `ClientHello` that opens a tunnel

use sandboxctl::proxy::client_hello::{self, MAX_BYTES, Scan};

/// What a real TLS server (rustls's `Acceptor`, standing in for the front end behind
/// the proxy) makes of some bytes.
#[derive(Debug, PartialEq, Eq)]
enum Server {
    /// A whole `ClientHello` it accepts, and the server name it would answer as.
    Accepts(Option<String>),
    Waits,
    Refuses,
}

/// What rustls makes of `bytes`.
fn rustls_view(bytes: &[u8]) -> Server {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Server::Refuses,
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_owned);
                return Server::Accepts(name);
            }
            Ok(None) => {}
            Err(_) => return Server::Refuses,
        }
    }
    Server::Waits
}

/// The handshake messages of real rustls `ClientHello`s: several names and settings.
fn rustls_messages() -> Vec<(Option<String>, Vec<u8>)> {
    let mut out = Vec::new();
    let names = [
        "ok.test",
        "a.b.wild.test",
        "xn--bcher-kva.example",
        "x",
        "intranet",
    ];
    for (i, name) in names.iter().enumerate() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match i % 3 {
            0 => &[&rustls::version::TLS13],
            1 => &[&rustls::version::TLS12],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.enable_sni = i != 3;
        let server = pki_types::ServerName::try_from((*name).to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
        let mut wire = Vec::new();
        conn.write_tls(&mut wire).unwrap();
        assert_eq!(wire[0], 0x16);
        out.push((cfg_sni(i, name), wire[5..].to_vec()));
    }
    out
}

fn cfg_sni(i: usize, name: &str) -> Option<String> {
    (i != 3).then(|| name.to_owned())
}

fn u16_be(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// The data of a `server_name` extension: mostly well-formed, often not.
fn sni_data(rng: &mut fastrand::Rng) -> Vec<u8> {
    let names: [&[u8]; 10] = [
        b"ok.test",
        b"OK.Test.",
        b"other.test",
        b"a.wild.test",
        b"127.0.0.1",
        b"ok.test\0.evil.test",
        b"",
        b"ok..test",
        b"\xc3\xa9.test",
        b"[::1]",
    ];
    let mut name: Vec<u8> = if rng.u8(..4) == 0 {
        host_like(rng).into_bytes()
    } else {
        names[rng.usize(..names.len())].to_vec()
    };
    if rng.u8(..20) == 0 {
        name = vec![b'a'; rng.usize(250..300)];
    }
    let mut entry = vec![if rng.u8(..10) == 0 { rng.u8(1..4) } else { 0 }];
    entry.extend(u16_be(name.len()));
    entry.extend(&name);
    if rng.u8(..8) == 0 {
        // A second entry, of the same or another type.
        let other = b"other.test";
        entry.push(u8::from(rng.bool()));
        entry.extend(u16_be(other.len()));
        entry.extend(other);
    }
    let mut data = u16_be(entry.len()).to_vec();
    data.extend(entry);
    if rng.u8(..10) == 0 {
        let at = rng.usize(..data.len().min(5));
        data[at] = data[at].wrapping_add(if rng.bool() { 1 } else { 255 });
    }
    data
}

/// A `ClientHello` handshake message made up here: random fields and extensions.
fn built_message(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut body = vec![3, if rng.bool() { 3 } else { 1 }];
    body.extend((0..32).map(|_| rng.u8(..)));
    let sid = if rng.u8(..20) == 0 {
        33
    } else {
        rng.usize(0..=32)
    };
    body.push(u8::try_from(sid).unwrap());
    body.extend((0..sid).map(|_| rng.u8(..)));
    let suites: &[u8] = [
        &[0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f][..],
        &[0x13, 0x01],
        &[0x13],
    ][usize::from(rng.u8(..20) == 0) * rng.usize(1..3)];
    body.extend(u16_be(suites.len()));
    body.extend(suites);
    body.extend(if rng.u8(..20) == 0 { &[0][..] } else { &[1, 0] });
    if rng.u8(..20) != 0 {
        let mut exts = Vec::new();
        let mut add = |kind: u16, data: &[u8]| {
            exts.extend(kind.to_be_bytes());
            exts.extend(u16_be(data.len()));
            exts.extend(data);
        };
        // What rustls needs to accept a hello at all, mostly.
        if rng.u8(..10) != 0 {
            add(13, &[0, 4, 0x08, 0x04, 0x04, 0x03]); // signature_algorithms
        }
        if rng.bool() {
            add(43, &[2, 3, 4]); // supported_versions: TLS 1.3
            add(10, &[0, 2, 0, 29]); // supported_groups: x25519
            let mut share = vec![0, 36, 0, 29, 0, 32];
            share.extend((0..32).map(|_| rng.u8(..)));
            add(51, &share); // key_share
        }
        for _ in 0..rng.usize(0..4) {
            match rng.u8(..8) {
                0..=3 => add(0, &sni_data(rng)),
                4 => add([0xfe0d, 0xfe0a, 0xffce][rng.usize(..3)], &[0; 8]),
                5 => add(16, &[0, 3, 2, b'h', b'2']),
                6 => add(rng.u16(..), &[]),
                _ => add(13, &[0, 2, 0x08, 0x04]),
            }
        }
        body.extend(u16_be(exts.len()));
        body.extend(exts);
    }
    let mut msg = vec![1];
    msg.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    msg.extend(body);
    msg
}

/// A handshake message in records: mostly one, often many (a small size, or random
/// cuts), now and then with an odd record in between or an odd header. Also whether
/// the framing is one the proxy must take (nothing odd, at most 64 records).
fn in_records(rng: &mut fastrand::Rng, msg: &[u8]) -> (Vec<u8>, bool) {
    let mut cuts = vec![0];
    match rng.u8(..4) {
        0 | 1 => {}
        2 => cuts.extend((1..msg.len()).filter(|_| rng.u8(..20) == 0)),
        _ => {
            let size = rng.usize(1..40);
            cuts.extend((1..msg.len()).filter(|i| i % size == 0));
        }
    }
    cuts.push(msg.len());
    let mut out = Vec::new();
    let mut clean = cuts.len() - 1 <= client_hello::MAX_RECORDS;
    for w in cuts.windows(2) {
        let chunk = &msg[w[0]..w[1]];
        if rng.u8(..50) == 0 {
            out.extend([[0x15, 0x17, 0x14][rng.usize(..3)], 3, 3, 0, 1, 0]);
            clean = false;
        }
        let odd = rng.u8(..30) == 0;
        clean &= !odd;
        out.extend([0x16, 3, if odd { 9 } else { 1 }]);
        out.extend(u16_be(chunk.len()));
        out.extend(chunk);
    }
    if rng.u8(..10) == 0 {
        // What may follow the hello: a change_cipher_spec, early data.
        out.extend([0x14, 3, 3, 0, 1, 1, 0x17, 3, 3, 0, 2, 9, 9]);
    }
    (out, clean)
}

/// Flips, inserts or removes a few bytes.
fn edit(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..4) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.usize(..bytes.len());
        match rng.u8(..3) {
            0 => bytes[at] = rng.u8(..),
            1 => bytes.insert(at, rng.u8(..)),
            _ => {
                bytes.remove(at);
            }
        }
    }
}

/// Tallies of one run.
#[derive(Default, Debug)]
struct HelloCounts {
    hellos: u64,
    named: u64,
    refused: u64,
    not_tls: u64,
    both_accepted: u64,
    /// Hellos the proxy refuses that rustls would accept.
    stricter: u64,
}

/// Lowercase, one trailing dot dropped: how the proxy compares names.
fn plain_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    lower.strip_suffix('.').map(str::to_owned).unwrap_or(lower)
}

/// Checks one case; `Err` says which property failed.
fn check_hello(
    rng: &mut fastrand::Rng,
    bytes: &[u8],
    pristine: Option<&Option<String>>,
    c: &mut HelloCounts,
) -> Result<(), String> {
    let scanned = client_hello::scan(bytes);
    if scanned == Ok(Scan::Incomplete) && bytes.len() >= MAX_BYTES {
        return Err("waits for more past the limit".into());
    }
    // Liveness: a hello as rustls sends it, in at most 64 records, is read with its name.
    if let Some(name) = pristine {
        let read = match &scanned {
            Ok(Scan::Hello { hello, .. }) => hello.server_name.clone(),
            other => return Err(format!("a rustls hello read as {other:?}")),
        };
        if read.as_deref() != name.as_deref().map(str::as_bytes) {
            return Err(format!(
                "a rustls hello for {name:?} read as naming {read:?}"
            ));
        }
    }
    let (len, hello) = match scanned {
        Ok(Scan::Hello { len, hello }) => (len, hello),
        Ok(Scan::NotTls) => {
            c.not_tls += 1;
            if let Server::Accepts(_) = rustls_view(bytes) {
                return Err("passed unchecked, yet a hello to rustls".into());
            }
            return Ok(());
        }
        Ok(Scan::Incomplete | Scan::Ssl2Hello) | Err(_) => {
            c.refused += 1;
            c.stricter += u64::from(matches!(rustls_view(bytes), Server::Accepts(_)));
            return Ok(());
        }
    };
    c.hellos += 1;
    // However the bytes arrive, the answer is the same.
    for _ in 0..3 {
        let cut = rng.usize(..len);
        if client_hello::scan(&bytes[..cut]) != Ok(Scan::Incomplete) {
            return Err(format!("its prefix of {cut} bytes is not incomplete"));
        }
    }
    let again = client_hello::scan(&bytes[..len]);
    if again
        != Ok(Scan::Hello {
            len,
            hello: hello.clone(),
        })
    {
        return Err(format!("its first {len} bytes read as {again:?}"));
    }
    if hello.encrypted {
        return Ok(()); // refused by the proxy whatever the name
    }
    let ours = match &hello.server_name {
        None => None,
        Some(raw) => match std::str::from_utf8(raw).map(Target::parse) {
            Ok(Ok(Target::Name(n))) => Some(n),
            // Not a host name: the proxy refuses it.
            _ => return Ok(()),
        },
    };
    c.named += u64::from(ours.is_some());
    match rustls_view(&bytes[..len]) {
        Server::Accepts(theirs) => {
            c.both_accepted += 1;
            let theirs = theirs.as_deref().map(plain_name);
            if ours != theirs {
                return Err(format!(
                    "the proxy checks {ours:?}, the server sees {theirs:?}"
                ));
            }
        }
        Server::Waits => return Err("rustls waits for more of a hello the proxy has whole".into()),
        Server::Refuses => {}
    }
    Ok(())
}

/// What the proxy's scan and a real server (rustls) make of the bytes must never
/// differ in a way that lets a name through unchecked: a hello the proxy passes with a
/// name is, to rustls, refused or a hello with that very name (case and one trailing
/// dot aside); one it passes without a name has none to rustls either; bytes it takes
/// for something other than TLS, rustls never accepts as a hello. The scan's answer
/// does not depend on how the bytes arrive (every prefix of a hello waits for more),
/// it never waits past `MAX_BYTES`, and every unedited rustls hello in at most 64
/// records is read with its name.
#[test]
fn fuzz_tls_client_hello_agrees_with_a_tls_server() {
    let budget = Budget::new(3000);
    let mut rng = rng("fuzz_tls");
    let real = rustls_messages();
    let mut c = HelloCounts::default();
    let started = Instant::now();
    let mut n = 0u64;
    for i in (0u64..).take_while(|&i| budget.more(i)) {
        n += 1;
        let (expected, msg) = if rng.bool() {
            let (name, msg) = &real[rng.usize(..real.len())];
            (Some(name.clone()), msg.clone())
        } else {
            (None, built_message(&mut rng))
        };
        let (mut bytes, clean) = in_records(&mut rng, &msg);
        let edited = rng.u8(..3) == 0;
        if edited {
            edit(&mut rng, &mut bytes);
        }
        let pristine = expected.as_ref().filter(|_| clean && !edited);
        if let Err(e) = check_hello(&mut rng, &bytes, pristine, &mut c) {
            panic!("case {i}: {e}: {bytes:02x?}");
        }
    }
    eprintln!(
        "fuzz_tls: {n} cases in {:.1} s: {c:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        c.both_accepted > n / 20,
        "too few hellos both accept: {c:?}"
    );
    assert!(c.named > n / 20, "too few named hellos: {c:?}");
}
