//! Changing a policy file for `sandboxctl allow|deny`: edits keep the user's comments
//! and layout (`toml_edit`), are validated before they are written, and are written
//! atomically ([`crate::base::atomic`]) so the proxy never reads a half-written policy.

use std::path::Path;

use anyhow::{Context as _, bail};
use toml_edit::{Array, DocumentMut, Item, Value};

use super::{Bundle, HostMatch, Pattern, broad_warning, parse};

/// What an edit did, for the CLI to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditReport {
    /// Entries added (canonical form; bundles as `@name`).
    pub added: Vec<String>,
    /// Entries that were already there.
    pub unchanged: Vec<String>,
    /// Entries removed from the opposite list (`allow` → `deny` and back) or, for
    /// `deny @bundle`, bundles switched off.
    pub removed: Vec<String>,
    /// Warnings about what was allowed (broad hosts).
    pub warnings: Vec<String>,
}

/// One item of an `allow`/`deny` command line: a host pattern or `@bundle`.
enum Entry {
    Host(Pattern),
    Bundle(Bundle),
}

fn parse_items(items: &[impl AsRef<str>]) -> anyhow::Result<Vec<Entry>> {
    if items.is_empty() {
        bail!("no hosts given");
    }
    items
        .iter()
        .map(|s| {
            let s = s.as_ref();
            Ok(match s.strip_prefix('@') {
                Some(b) => Entry::Bundle(b.parse()?),
                None => Entry::Host(Pattern::parse(s)?),
            })
        })
        .collect()
}

/// Adds allow entries (`host`, `*.suffix`, `host:port`, IP literal) or switches on
/// bundles (`@github`). The same pattern is removed from `deny`, since a deny entry
/// would otherwise override it. All items are validated before anything is written.
/// A missing policy file is created.
pub fn add_allow(path: &Path, items: &[impl AsRef<str>]) -> anyhow::Result<EditReport> {
    edit(path, items, Direction::Allow { private: false })
}

/// Like [`add_allow`], with `private = true` on the new entries: their names may
/// resolve to private-network addresses (an internal git server); an IP literal
/// entry may also be a loopback, link-local or metadata address.
pub fn add_allow_private(path: &Path, items: &[impl AsRef<str>]) -> anyhow::Result<EditReport> {
    edit(path, items, Direction::Allow { private: true })
}

/// Adds deny entries or switches off bundles (`@github`). The same pattern is removed
/// from `allow`.
pub fn add_deny(path: &Path, items: &[impl AsRef<str>]) -> anyhow::Result<EditReport> {
    edit(path, items, Direction::Deny)
}

/// Replaces the `packages` list (the hosts of the `packages` bundle).
pub fn set_packages(path: &Path, hosts: &[impl AsRef<str>]) -> anyhow::Result<()> {
    let patterns = hosts
        .iter()
        .map(|h| Pattern::parse(h.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut doc = read_doc(path)?;
    let arr = array_mut(&mut doc, "packages")?;
    arr.clear();
    for p in patterns {
        push(arr, Value::from(p.to_string()));
    }
    write_validated(path, &doc)
}

#[derive(Clone, Copy)]
enum Direction {
    Allow { private: bool },
    Deny,
}

fn edit(path: &Path, items: &[impl AsRef<str>], dir: Direction) -> anyhow::Result<EditReport> {
    let items = parse_items(items)?;
    let mut doc = read_doc(path)?;
    let mut report = EditReport::default();
    for item in items {
        match item {
            Entry::Bundle(b) => {
                let arr = array_mut(&mut doc, "bundles")?;
                let present = arr.iter().any(|v| v.as_str() == Some(b.name()));
                let label = format!("@{b}");
                match (dir, present) {
                    (Direction::Allow { .. }, false) => {
                        push(arr, Value::from(b.name()));
                        report.added.push(label);
                    }
                    (Direction::Deny, true) => {
                        arr.retain(|v| v.as_str() != Some(b.name()));
                        report.removed.push(label);
                    }
                    _ => report.unchanged.push(label),
                }
            }
            Entry::Host(p) => {
                let canon = p.to_string();
                let (this, other) = match dir {
                    Direction::Allow { .. } => ("allow", "deny"),
                    Direction::Deny => ("deny", "allow"),
                };
                let other_arr = array_mut(&mut doc, other)?;
                let before = other_arr.len();
                other_arr.retain(|v| entry_pattern(v).as_ref() != Some(&p));
                if other_arr.len() != before {
                    report.removed.push(format!("{canon} (from {other})"));
                }
                let arr = array_mut(&mut doc, this)?;
                if arr.iter().any(|v| entry_pattern(v).as_ref() == Some(&p)) {
                    report.unchanged.push(canon);
                    continue;
                }
                let value = match dir {
                    Direction::Allow { private: true } => {
                        let mut t = toml_edit::InlineTable::new();
                        t.insert("host", Value::from(canon.as_str()));
                        t.insert("private", Value::from(true));
                        Value::InlineTable(t)
                    }
                    _ => Value::from(canon.as_str()),
                };
                push(arr, value);
                if matches!(dir, Direction::Allow { .. }) {
                    report.warnings.extend(broad_warning(&p));
                }
                if matches!(dir, Direction::Allow { private: true }) {
                    report.warnings.extend(loopback_name_warning(&p));
                }
                report.added.push(canon);
            }
        }
    }
    write_validated(path, &doc)?;
    Ok(report)
}

/// A warning for a private rule on a name that means the host itself (`localhost`,
/// `*.localhost`, RFC 6761): the proxy never lets a name reach loopback, only a rule
/// naming the IP literal.
fn loopback_name_warning(p: &Pattern) -> Option<String> {
    let name = match &p.host {
        HostMatch::Exact(n) | HostMatch::Suffix(n) => n,
        HostMatch::Ip(_) => return None,
    };
    if name != "localhost" && !name.ends_with(".localhost") {
        return None;
    }
    let port = p.port.unwrap_or(super::DEFAULT_PORT);
    Some(format!(
        "`{p}` resolves to loopback, which no name reaches through the proxy; allow the \
         address instead, e.g. `--private 127.0.0.1:{port}`"
    ))
}

/// The pattern of an `allow`/`deny` array element (string or `{ host = … }`).
fn entry_pattern(v: &Value) -> Option<Pattern> {
    let host = match v {
        Value::String(s) => s.value().as_str(),
        Value::InlineTable(t) => t.get("host")?.as_str()?,
        _ => return None,
    };
    Pattern::parse(host).ok()
}

fn read_doc(path: &Path) -> anyhow::Result<DocumentMut> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read network policy {}", path.display()));
        }
    };
    // Refuse to edit a file that is already broken: the user must see and fix it.
    parse(&text).with_context(|| {
        format!(
            "invalid network policy {}; fix it by hand first",
            path.display()
        )
    })?;
    text.parse::<DocumentMut>()
        .with_context(|| format!("cannot parse network policy {}", path.display()))
}

fn array_mut<'d>(doc: &'d mut DocumentMut, key: &str) -> anyhow::Result<&'d mut Array> {
    let item = doc
        .entry(key)
        .or_insert_with(|| Item::Value(Value::Array(Array::new())));
    item.as_array_mut()
        .with_context(|| format!("`{key}` in the network policy is not a list"))
}

/// Appends, on its own line when the list is already laid out one entry per line.
fn push(arr: &mut Array, mut value: Value) {
    let multiline = arr
        .iter()
        .next()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .is_some_and(|p| p.contains('\n'));
    if multiline {
        // A comment after the last entry is the array's trailing text: keep it on that
        // entry's line, not after the new one.
        let trailing = arr
            .trailing()
            .as_str()
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        value.decor_mut().set_prefix(format!("{trailing}\n  "));
        arr.push_formatted(value);
        arr.set_trailing("\n");
        arr.set_trailing_comma(true);
    } else {
        arr.push(value);
    }
}

fn write_validated(path: &Path, doc: &DocumentMut) -> anyhow::Result<()> {
    let text = doc.to_string();
    parse(&text).context("the edited policy would be invalid; nothing was written")?;
    write_atomic(path, text.as_bytes(), true)
}

/// The policy a new allowlist client starts with: its agent's own bundle.
pub fn default_for(agent: crate::sandbox::agent::Agent) -> anyhow::Result<String> {
    let bundles: Vec<Bundle> = Bundle::of_agent(agent).into_iter().collect();
    render_default(&bundles, &[] as &[&str])
}

/// Renders the policy of a new client: the given bundles and package hosts, empty
/// allow and deny lists, with comments explaining the format.
pub fn render_default(bundles: &[Bundle], packages: &[impl AsRef<str>]) -> anyhow::Result<String> {
    let quote = |s: &str| Value::from(s).to_string().trim().to_owned();
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "[]".to_owned()
        } else {
            format!("[{}]", items.join(", "))
        }
    };
    let bundles = list(bundles.iter().map(|b| quote(b.name())).collect());
    let packages = list(
        packages
            .iter()
            .map(|h| Pattern::parse(h.as_ref()).map(|p| quote(&p.to_string())))
            .collect::<Result<_, _>>()?,
    );
    let text = format!(
        r#"# Network policy of this sandbox: the only way out is the proxy, and it lets a
# connection through only when this file allows it. Changes apply to the next
# connection; no restart needed. `sandboxctl allow|deny CLIENT HOST` edit this file.
#
# Bundles: claude, codex, github, packages.
bundles = {bundles}

# Hosts of the `packages` bundle: the registries npm and pip in the image use.
packages = {packages}

# "host" (port 443 only), "*.suffix" (names below suffix), "host:port" (port 80 for
# plain HTTP must be listed), IP literals ("203.0.113.7:22"). Names on a private
# network (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) need
# {{ host = "...", private = true }}; loopback, link-local and metadata addresses
# are reachable only as an IP literal with private = true ("127.0.0.1:8080").
allow = []

# Deny wins over allow; an entry without a port covers every port.
deny = []
"#
    );
    parse(&text).context("rendering the default network policy")?;
    Ok(text)
}

/// Writes a new policy file; never replaces an existing one.
pub fn create(path: &Path, text: &str) -> anyhow::Result<()> {
    parse(text).context("refusing to write an invalid network policy")?;
    write_atomic(path, text.as_bytes(), false)
}

/// Writes through [`crate::base::atomic`], keeping the mode of an existing file.
fn write_atomic(path: &Path, bytes: &[u8], replace: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = match std::fs::metadata(path) {
        Ok(_) if !replace => bail!("{} already exists; not replacing it", path.display()),
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => 0o600,
    };
    crate::base::atomic::write(path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::super::{Target, load};
    use super::*;

    fn policy_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn allow_keeps_comments_and_layout() {
        let (_d, path) = policy_file(
            "# my notes\nbundles = [\"claude\"]\nallow = [\n  \"a.example.com\", # why\n]\n",
        );
        let r = add_allow(&path, &["B.example.com", "a.example.com"]).unwrap();
        assert_eq!(r.added, ["b.example.com"]);
        assert_eq!(r.unchanged, ["a.example.com"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# my notes\nbundles = [\"claude\"]\nallow = [\n  \"a.example.com\", # why\n  \"b.example.com\",\n]\ndeny = []\n"
        );
    }

    #[test]
    fn allow_removes_the_same_deny_and_deny_removes_the_same_allow() {
        let (_d, path) = policy_file("allow = [\"a.example.com\"]\ndeny = [\"b.example.com\"]\n");
        let r = add_allow(&path, &["b.example.com"]).unwrap();
        assert_eq!(r.removed, ["b.example.com (from deny)"]);
        let r = add_deny(&path, &["a.example.com"]).unwrap();
        assert_eq!(r.removed, ["a.example.com (from allow)"]);
        let p = load(&path).unwrap();
        assert_eq!(p.allow.len(), 1);
        assert_eq!(p.allow[0].pattern.to_string(), "b.example.com");
        assert_eq!(p.deny, [Pattern::parse("a.example.com").unwrap()]);
    }

    #[test]
    fn bundles_switch_on_and_off() {
        let (_d, path) = policy_file("bundles = [\"claude\"]\n");
        add_allow(&path, &["@github"]).unwrap();
        assert_eq!(
            load(&path).unwrap().bundles,
            [Bundle::Claude, Bundle::Github]
        );
        let r = add_deny(&path, &["@claude"]).unwrap();
        assert_eq!(r.removed, ["@claude"]);
        assert_eq!(load(&path).unwrap().bundles, [Bundle::Github]);
        assert!(add_allow(&path, &["@npm"]).is_err());
    }

    #[test]
    fn invalid_input_writes_nothing() {
        let original = "allow = [\"a.example.com\"]\n";
        let (_d, path) = policy_file(original);
        for bad in ["ok.example.com\nevil", "https://x.example", "*", ""] {
            assert!(
                add_allow(&path, &["ok.example.com", bad]).is_err(),
                "{bad:?}"
            );
        }
        assert!(add_allow(&path, &[] as &[&str]).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    }

    #[test]
    fn broken_file_is_not_edited() {
        let (_d, path) = policy_file("allow = [\"https://a.example\"]\n");
        let err = add_allow(&path, &["b.example.com"]).unwrap_err();
        assert!(format!("{err:#}").contains("fix it by hand"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "allow = [\"https://a.example\"]\n"
        );
    }

    #[test]
    fn private_allow_and_broad_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.toml");
        add_allow_private(&path, &["git.corp.example:22"]).unwrap();
        let r = add_allow(&path, &["objects.githubusercontent.com"]).unwrap();
        assert_eq!(r.warnings.len(), 1);
        let r = add_allow_private(&path, &["localhost:8080", "*.app.localhost"]).unwrap();
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("127.0.0.1:8080"), "{:?}", r.warnings);
        let r = add_allow_private(&path, &["127.0.0.1:8080", "localhost.example.com"]).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let p = load(&path).unwrap();
        assert!(p.allow[0].private);
        assert!(!p.allow[1].private);
    }

    #[test]
    fn default_policy_and_create_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network.toml");
        let text =
            render_default(&[Bundle::Claude, Bundle::Packages], &["npm.example.org"]).unwrap();
        create(&path, &text).unwrap();
        let p = load(&path).unwrap();
        assert_eq!(p.bundles, [Bundle::Claude, Bundle::Packages]);
        assert!(matches!(
            p.decide(&Target::parse("npm.example.org").unwrap(), 443),
            super::super::Decision::Allow { .. }
        ));
        assert!(create(&path, "").is_err());
        set_packages(&path, &["pypi.example.org"]).unwrap();
        let p = load(&path).unwrap();
        assert_eq!(p.packages, [Pattern::parse("pypi.example.org").unwrap()]);
        // The comments of the default file survive edits.
        add_allow(&path, &["a.example.com"]).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("# Deny wins over allow")
        );
    }
}
