//! A client's git identity and the hosts its git credential helper may answer for.
//!
//! The identity reaches the sandbox as `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
//! `GIT_CONFIG_VALUE_n`: git reads them as configuration above every file, so `git
//! config user.name`, commits (author and committer) and tools that ask git all see
//! it, and nothing is written into the client's home. The credential helper in the
//! image (`image/git-credential-sandbox`) reads the host list from
//! `SANDBOX_GIT_CREDENTIAL_HOSTS` and answers only those with the `GH_TOKEN` secret.

use anyhow::{Result, bail};

use crate::base::escape;
use crate::sandbox::settings::Settings;

/// The hosts the credential helper answers for when the settings name none.
pub const DEFAULT_CREDENTIAL_HOST: &str = "https://github.com";

/// The variable the image's credential helper reads its hosts from.
pub const CREDENTIAL_HOSTS_VAR: &str = "SANDBOX_GIT_CREDENTIAL_HOSTS";

/// The value `--git-credential-host` takes to answer no host at all.
pub const NO_CREDENTIAL_HOSTS: &str = "none";

/// Checks a `user.name`: what git can store and a unit can carry.
pub fn check_name(name: &str) -> Result<()> {
    check_common("git name", name, "--git-name")
}

/// Checks a `user.email`: one address, `local@domain`, no spaces or angle brackets.
pub fn check_email(email: &str) -> Result<()> {
    check_common("git email", email, "--git-email")?;
    let ok = email
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !email.chars().any(char::is_whitespace);
    if !ok {
        bail!(
            "invalid git email {}: use one address like ada@example.com",
            escape::display(email)
        );
    }
    Ok(())
}

fn check_common(what: &str, v: &str, flag: &str) -> Result<()> {
    if v.trim().is_empty() {
        bail!("the {what} is empty: give one, or {flag} '' to remove it");
    }
    if v.len() > 256 || v.chars().any(|c| c.is_control() || c == '<' || c == '>') {
        bail!(
            "invalid {what} {}: at most 256 bytes, no control characters, no '<' or '>'",
            escape::display(v)
        );
    }
    if v.trim() != v {
        bail!(
            "invalid {what} {}: remove the leading or trailing spaces",
            escape::display(v)
        );
    }
    Ok(())
}

/// Parses `HOST[:PORT]`, `https://HOST[:PORT]` or `http://HOST[:PORT]` into
/// `SCHEME://host[:port]`, the form git's credential requests are compared with.
/// Plain HTTP only when asked for by its scheme.
pub fn parse_credential_host(spec: &str) -> Result<String> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "invalid --git-credential-host {}: {why}; use HOST[:PORT] (HTTPS) or http://HOST:PORT",
            escape::display(spec)
        )
    };
    let (scheme, rest) = match spec.split_once("://") {
        Some((s, r)) if s.eq_ignore_ascii_case("https") => ("https", r),
        Some((s, r)) if s.eq_ignore_ascii_case("http") => ("http", r),
        Some(_) => return Err(bad("only https and http")),
        None => ("https", spec),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n| *n > 0 && p.chars().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
            (h, Some(n))
        }
        None => (rest, None),
    };
    let host = host.to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad(
            "not a host name or IPv4 address (no path, user or spaces)",
        ));
    }
    Ok(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The hosts the credential helper answers for.
pub fn credential_hosts(s: &Settings) -> Vec<String> {
    s.git_credential_hosts
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_CREDENTIAL_HOST.to_owned()])
}

/// Checks settings that may have been edited by hand.
pub fn validate(s: &Settings) -> Result<()> {
    if let Some(n) = &s.git_name {
        check_name(n)?;
    }
    if let Some(e) = &s.git_email {
        check_email(e)?;
    }
    for h in s.git_credential_hosts.iter().flatten() {
        if parse_credential_host(h)? != *h {
            bail!(
                "git credential host {} is not in the form SCHEME://host[:port]; set it again with `--git-credential-host`",
                escape::display(h)
            );
        }
    }
    Ok(())
}

/// Warnings for hosts that get the token in clear text.
pub fn warnings(s: &Settings) -> Vec<String> {
    credential_hosts(s)
        .iter()
        .filter(|h| h.starts_with("http://"))
        .map(|h| {
            format!(
                "warning: --git-credential-host {h}: git sends GH_TOKEN to it unencrypted (plain HTTP); use it only for a server on a network you trust"
            )
        })
        .collect()
}

/// Applies the command line's git options to `s`.
pub fn apply(
    s: &mut Settings,
    name: Option<&str>,
    email: Option<&str>,
    hosts: &[String],
) -> Result<()> {
    if let Some(n) = name {
        s.git_name = if n.is_empty() {
            None
        } else {
            check_name(n)?;
            Some(n.to_owned())
        };
    }
    if let Some(e) = email {
        s.git_email = if e.is_empty() {
            None
        } else {
            check_email(e)?;
            Some(e.to_owned())
        };
    }
    if hosts.iter().any(|h| h == NO_CREDENTIAL_HOSTS) {
        if hosts.len() > 1 {
            bail!("--git-credential-host none cannot be combined with hosts; give either");
        }
        s.git_credential_hosts = Some(Vec::new());
    } else if !hosts.is_empty() {
        let mut list = Vec::new();
        for h in hosts {
            let h = parse_credential_host(h)?;
            if !list.contains(&h) {
                list.push(h);
            }
        }
        s.git_credential_hosts = Some(list);
    }
    Ok(())
}

/// The environment the sandbox gets: the credential helper's hosts and, when set, the
/// identity as git configuration.
pub fn environment(s: &Settings) -> Vec<(String, String)> {
    let mut env = vec![(
        CREDENTIAL_HOSTS_VAR.to_owned(),
        credential_hosts(s).join(" "),
    )];
    let config: Vec<(&str, &String)> = [("user.name", &s.git_name), ("user.email", &s.git_email)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
    if !config.is_empty() {
        env.push(("GIT_CONFIG_COUNT".to_owned(), config.len().to_string()));
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k.to_owned()));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_hosts_are_normalised_and_checked() {
        for (spec, want) in [
            ("github.com", "https://github.com"),
            ("GitHub.com", "https://github.com"),
            ("git.corp.example:8443", "https://git.corp.example:8443"),
            ("https://gitlab.example", "https://gitlab.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("HTTP://localhost:80", "http://localhost:80"),
        ] {
            assert_eq!(parse_credential_host(spec).expect(spec), want);
        }
        for bad in [
            "",
            "ftp://github.com",
            "github.com/org",
            "user@github.com",
            "github.com:0",
            "github.com:99999",
            "github.com:+1",
            "-bad.example",
            "a..b",
            "git hub.com",
            "https://",
            "github.com\n",
            "[::1]:80",
        ] {
            let err = parse_credential_host(bad).expect_err(bad).to_string();
            assert!(err.contains("--git-credential-host"), "{err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn identity_is_checked() {
        check_name("Ada Lovelace").expect("name");
        check_name("Zoë \"z\" 100% $HOME").expect("unit-special characters are escaped later");
        for bad in ["", "  ", " Ada", "Ada\nEvil", "Ada <a@b>", &"x".repeat(300)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_email("ada@example.com").expect("email");
        for bad in [
            "ada",
            "@example.com",
            "ada@",
            "a@b@c",
            "ada @example.com",
            "<a@b>",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_set_replace_and_clear() {
        let mut s = Settings::default();
        apply(&mut s, Some("Ada"), Some("ada@example.com"), &[]).expect("apply");
        assert_eq!(s.git_name.as_deref(), Some("Ada"));
        assert_eq!(credential_hosts(&s), [DEFAULT_CREDENTIAL_HOST]);
        let hosts = ["http://127.0.0.1:8080".to_owned(), "github.com".to_owned()];
        apply(&mut s, None, Some(""), &hosts).expect("apply");
        assert_eq!(
            s.git_name.as_deref(),
            Some("Ada"),
            "unchanged when not given"
        );
        assert_eq!(s.git_email, None, "'' removes it");
        assert_eq!(
            credential_hosts(&s),
            ["http://127.0.0.1:8080", "https://github.com"]
        );
        apply(&mut s, None, None, &["none".to_owned()]).expect("none");
        assert!(credential_hosts(&s).is_empty());
        assert!(
            apply(
                &mut s,
                None,
                None,
                &["none".to_owned(), "x.example".to_owned()]
            )
            .is_err()
        );
        let before = s.clone();
        assert!(apply(&mut s, Some("A\nB"), None, &[]).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn environment_carries_identity_as_git_config() {
        let mut s = Settings::default();
        assert_eq!(
            environment(&s),
            [(
                CREDENTIAL_HOSTS_VAR.to_owned(),
                "https://github.com".to_owned()
            )]
        );
        s.git_email = Some("ada@example.com".into());
        s.git_credential_hosts = Some(vec![
            "https://a.example".into(),
            "http://127.0.0.1:8080".into(),
        ]);
        let env = environment(&s);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                (
                    CREDENTIAL_HOSTS_VAR,
                    "https://a.example http://127.0.0.1:8080"
                ),
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "user.email"),
                ("GIT_CONFIG_VALUE_0", "ada@example.com"),
            ]
        );
        let warnings = warnings(&s);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("http://127.0.0.1:8080") && warnings[0].contains("unencrypted"),
            "{warnings:?}"
        );
        s.git_credential_hosts = Some(vec!["http://x.example/".into()]);
        assert!(validate(&s).is_err(), "hand-edited, not normalised");
    }
}
