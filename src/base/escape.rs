//! Every value written into a Quadlet unit passes through here. Quadlet copies values
//! into the generated service's `ExecStart=`, where systemd expands `%` specifiers and
//! `$` variables, so both are doubled. Values are checked first: anything that could end
//! a line (newline, other control characters) or continue one (a trailing backslash)
//! is refused, because it could inject or alter a key.
//!
//! Renderers hand templates only `Raw` and `Word` values, which only this module builds,
//! so an unescaped value cannot reach a unit file.

use std::fmt;
use std::ops::Deref;

use anyhow::{Result, bail};
use serde::Serialize;

/// A value escaped for a key systemd or Quadlet reads raw (`Image=`, `WorkingDir=`,
/// `Volume=`, `StandardOutput=`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Raw(String);

/// One quoted word of a key split into words (`Environment=`, `Label=`, `PodmanArgs=`,
/// `ExecStart=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Word(String);

macro_rules! escaped_str {
    ($t:ty) => {
        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }
    };
}
escaped_str!(Raw);
escaped_str!(Word);

/// How a value is shown in an error message: quoted, with control characters escaped,
/// so the message stays on one line whatever the value holds.
pub fn display(value: &str) -> String {
    format!("{value:?}")
}

/// Refuses values that cannot be written on one line of a unit file in any form.
pub fn check(what: &str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        let kind = match c {
            '\n' | '\r' => "a line break",
            '\0' => "a NUL byte",
            _ => "a control character",
        };
        bail!(
            "{what} {} contains {kind}, which cannot be written into a unit file; remove it",
            display(value)
        );
    }
    Ok(())
}

/// Like `check`, for values written unquoted, where a trailing backslash would join
/// the next line to this one, and whitespace at either end (Unicode whitespace such as
/// U+00A0 or U+3000 included) would be stripped by Quadlet, changing the value.
fn check_unquoted(what: &str, value: &str) -> Result<()> {
    check(what, value)?;
    if value.ends_with('\\') {
        bail!(
            "{what} {} ends with a backslash, which would continue the line in a unit file; remove it",
            display(value)
        );
    }
    let edge = match (value.chars().next(), value.chars().last()) {
        (Some(c), _) if c.is_whitespace() => Some(("starts", c)),
        (_, Some(c)) if c.is_whitespace() => Some(("ends", c)),
        _ => None,
    };
    if let Some((side, c)) = edge {
        bail!(
            "{what} {} {side} with whitespace (U+{:04X}), which Quadlet or systemd may strip from the unit file, changing the value; rename it (or use a symlink without it)",
            display(value),
            u32::from(c)
        );
    }
    Ok(())
}

/// Text for a `#` comment in a unit (the host summary, which holds paths from the
/// environment): kept on one line with every control character rendered visibly
/// (`terminal::sanitize`: a newline becomes `^J`), and `%` doubled like everywhere else,
/// so no value can start a line of its own.
pub fn comment(text: &str) -> String {
    crate::base::terminal::sanitize(text.as_bytes()).replace('%', "%%")
}

/// Doubles `%` and `$` so systemd reads them literally.
fn double_specials(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

/// A value for a key Quadlet reads raw (`Image=`, `WorkingDir=`, `Tmpfs=`, …).
pub fn raw(what: &str, value: &str) -> Result<Raw> {
    check_unquoted(what, value)?;
    if value.is_empty() {
        bail!("{what} is empty");
    }
    Ok(Raw(double_specials(value)))
}

/// A path under the user's runtime directory, written with the `%t` specifier that
/// systemd expands (the rest of the path is escaped as usual).
pub fn runtime_path(what: &str, relative: &str) -> Result<Raw> {
    if relative.starts_with('/') {
        bail!(
            "{what} {} must be relative to the runtime directory",
            display(relative)
        );
    }
    Ok(Raw(format!("%t/{}", raw(what, relative)?.0)))
}

/// Where a bind mount comes from: a host path, or a path under the runtime directory.
#[derive(Debug, Clone, Copy)]
pub enum VolumeSource<'a> {
    Path(&'a str),
    Runtime(&'a str),
}

/// Checks one `Volume=` / `-v` value `SOURCE:TARGET[:OPTIONS]` and returns it unescaped,
/// with the source's runtime specifier (`%t/…`) in place.
fn volume_spec(
    what: &str,
    source: VolumeSource<'_>,
    target: &str,
    options: &str,
) -> Result<(String, bool)> {
    if let Some(c) = options
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ",=".contains(*c)))
    {
        bail!(
            "{what} options {} contain {c:?}; use letters, digits, ',' and '='",
            display(options)
        );
    }
    let (source, runtime) = match source {
        VolumeSource::Path(p) => (check_volume_path(what, p)?.to_owned(), false),
        VolumeSource::Runtime(rel) => {
            if rel.starts_with('/') {
                bail!(
                    "{what} {} must be relative to the runtime directory",
                    display(rel)
                );
            }
            check_volume_path(what, &format!("/{rel}"))?;
            (rel.to_owned(), true)
        }
    };
    check_volume_path(what, target)?;
    let mut spec = format!("{source}:{target}");
    if !options.is_empty() {
        spec.push(':');
        spec.push_str(options);
    }
    Ok((spec, runtime))
}

/// A `Volume=` value (read raw by Quadlet).
pub fn volume(what: &str, source: VolumeSource<'_>, target: &str, options: &str) -> Result<Raw> {
    let (spec, runtime) = volume_spec(what, source, target, options)?;
    let escaped = double_specials(&spec);
    Ok(Raw(if runtime {
        format!("%t/{escaped}")
    } else {
        escaped
    }))
}

/// A volume as one word of a command line (`-v` argument in `ExecStart=`).
pub fn volume_word(
    what: &str,
    source: VolumeSource<'_>,
    target: &str,
    options: &str,
) -> Result<Word> {
    let (spec, runtime) = volume_spec(what, source, target, options)?;
    let w = word(what, &spec)?;
    Ok(Word(if runtime {
        format!("\"%t/{}", &w.0[1..])
    } else {
        w.0
    }))
}

/// One path of a `Volume=` value. Volume values are split on `:`, so a `:` cannot be
/// expressed and is refused; quotes would become part of the path, so they are refused
/// too rather than silently changing the path.
pub fn volume_path(what: &str, path: &str) -> Result<Raw> {
    raw(what, check_volume_path(what, path)?)
}

fn check_volume_path<'a>(what: &str, path: &'a str) -> Result<&'a str> {
    if path.contains(':') {
        bail!(
            "{what} {} contains ':', which Podman volume syntax cannot express; use a path without ':' (e.g. a symlink to it)",
            display(path)
        );
    }
    if path.contains('"') || path.contains('\'') || path.contains('\\') {
        bail!(
            "{what} {} contains a quote or backslash, which Quadlet would not pass on unchanged; use a path without them (e.g. a symlink to it)",
            display(path)
        );
    }
    if !path.starts_with('/') {
        bail!("{what} {} is not an absolute path", display(path));
    }
    check_unquoted(what, path)?;
    Ok(path)
}

/// One word of a key Quadlet splits into words (`Environment=`, `Label=`,
/// `PodmanArgs=`, `Exec=`): C-style quoted, then specials doubled.
pub fn word(what: &str, value: &str) -> Result<Word> {
    check(what, value)?;
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out.push('"');
    Ok(Word(double_specials(&out)))
}

/// A fixed word of sandboxctl's own that uses systemd specifiers on purpose
/// (`--cidfile=%t/%N.cid`); only compile-time text, never a setting's value.
pub fn specifier_word(value: &'static str) -> Word {
    debug_assert!(
        !value
            .chars()
            .any(|c| c.is_control() || " \"\\$".contains(c)),
        "{value}"
    );
    Word(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_quoting_table() {
        let table = [
            ("plain", r#""plain""#),
            ("with space", r#""with space""#),
            ("", r#""""#),
            ("100%", r#""100%%""#),
            ("$HOME", r#""$$HOME""#),
            ("${X}", r#""$${X}""#),
            (r#"say "hi""#, r#""say \"hi\"""#),
            (r"a\b", r#""a\\b""#),
            ("'single'", r#""'single'""#),
            ("%h/$USER", r#""%%h/$$USER""#),
        ];
        for (input, want) in table {
            assert_eq!(word("value", input).expect(input), want, "input {input:?}");
        }
    }

    #[test]
    fn raw_table() {
        let table = [
            ("/srv/a b", "/srv/a b"),
            ("/srv/100%", "/srv/100%%"),
            ("/srv/$x", "/srv/$$x"),
            ("img:tag", "img:tag"),
        ];
        for (input, want) in table {
            assert_eq!(raw("value", input).expect(input), want, "input {input:?}");
        }
    }

    #[test]
    fn refuses_line_breaking_values_everywhere() {
        let bad = ["a\nb", "a\rb", "a\0b", "a\tb", "a\u{1b}b", "\n", "x\u{7f}"];
        for value in bad {
            for result in [
                word("value", value).map(|w| w.to_string()),
                raw("value", value).map(|r| r.to_string()),
                volume_path("value", &format!("/p{value}")).map(|r| r.to_string()),
            ] {
                let err = result.expect_err(value).to_string();
                assert!(!err.contains('\n'), "one-line error for {value:?}: {err}");
            }
        }
    }

    /// Quadlet trims Unicode whitespace (Go's `unicode.IsSpace`) from both ends of a
    /// value: unquoted values with it there are refused, quoted words keep it.
    #[test]
    fn whitespace_at_the_ends_is_refused_raw_and_kept_in_words() {
        let edges = [
            "\u{a0}", "\u{1680}", "\u{2000}", "\u{2005}", "\u{200a}", "\u{2028}", "\u{2029}",
            "\u{202f}", "\u{205f}", "\u{3000}", " ",
        ];
        for ws in edges {
            for value in [format!("/p{ws}"), format!("{ws}/p")] {
                let err = raw("value", &value).expect_err(&value).to_string();
                assert!(err.contains("whitespace (U+"), "{err}");
                assert!(err.contains("may strip"), "{err}");
                assert!(volume_path("path", &value).is_err(), "{value:?}");
                let quoted = word("value", &value).expect("a word keeps it");
                assert_eq!(quoted, format!("\"{value}\""));
            }
            // Inside a value it survives.
            let inner = format!("/a{ws}b");
            assert_eq!(raw("value", &inner).expect("inner"), inner);
        }
        // Not whitespace: zero-width space and BOM stay allowed.
        assert!(raw("value", "/p\u{200b}").is_ok());
        assert!(raw("value", "\u{feff}/p").is_ok());
    }

    #[test]
    fn comment_table() {
        let table = [
            (
                "podman 4.3.1; Quadlet 5.4.2 (/usr/libexec/podman/quadlet)",
                "podman 4.3.1; Quadlet 5.4.2 (/usr/libexec/podman/quadlet)",
            ),
            (
                "/opt/q\nExecStartPre=/bin/sh\n[Service]",
                "/opt/q^JExecStartPre=/bin/sh^J[Service]",
            ),
            ("a\r\nb", "a^M^Jb"),
            ("100% sure", "100%% sure"),
            ("\u{1b}]0;t\u{7}\u{9b}", "^[]0;t^G<U+009B>"),
            ("tab\tkept", "tab\tkept"),
        ];
        for (input, want) in table {
            let got = comment(input);
            assert_eq!(got, want, "input {input:?}");
            assert!(!got.contains('\n') && !got.contains('\r'), "{got:?}");
        }
    }

    #[test]
    fn trailing_backslash_is_quoted_in_words_and_refused_raw() {
        assert_eq!(word("value", "ends\\").expect("quoted"), r#""ends\\""#);
        assert!(raw("value", "ends\\").is_err());
        assert!(volume_path("value", "/ends\\").is_err());
    }

    #[test]
    fn volume_paths() {
        assert_eq!(volume_path("path", "/a b/c").expect("ok"), "/a b/c");
        assert_eq!(volume_path("path", "/a%b").expect("ok"), "/a%%b");
        for bad in ["/a:b", "relative", "/a\"b", "/a'b", "/a\\b", ""] {
            let err = volume_path("path", bad).expect_err(bad).to_string();
            assert!(err.starts_with("path "), "{err}");
        }
    }

    #[test]
    fn volumes_keep_the_runtime_specifier_and_escape_the_rest() {
        let table = [
            (
                VolumeSource::Path("/a%b"),
                "/c",
                "ro",
                "/a%%b:/c:ro",
                r#""/a%%b:/c:ro""#,
            ),
            (
                VolumeSource::Path("/a b"),
                "/x$y",
                "rw,z",
                "/a b:/x$$y:rw,z",
                r#""/a b:/x$$y:rw,z""#,
            ),
            (
                VolumeSource::Runtime("p/100%"),
                "/run/s",
                "ro,Z",
                "%t/p/100%%:/run/s:ro,Z",
                r#""%t/p/100%%:/run/s:ro,Z""#,
            ),
            (VolumeSource::Path("/a"), "/b", "", "/a:/b", r#""/a:/b""#),
        ];
        for (source, target, options, want_raw, want_word) in table {
            assert_eq!(
                volume("volume", source, target, options).expect("raw"),
                want_raw
            );
            assert_eq!(
                volume_word("volume", source, target, options).expect("word"),
                want_word
            );
        }
        for (source, target, options) in [
            (VolumeSource::Path("/a:b"), "/c", "ro"),
            (VolumeSource::Path("/a"), "/c:rw", "ro"),
            (VolumeSource::Path("/a"), "/c", "ro:x"),
            (VolumeSource::Runtime("/abs"), "/c", "ro"),
            (VolumeSource::Runtime("a\nb"), "/c", "ro"),
        ] {
            assert!(volume("volume", source, target, options).is_err());
            assert!(volume_word("volume", source, target, options).is_err());
        }
        assert_eq!(runtime_path("log", "a%.log").expect("ok"), "%t/a%%.log");
        assert!(runtime_path("log", "/a.log").is_err());
    }

    #[test]
    fn error_names_value_on_one_line() {
        let err = check("project directory", "/x\ny")
            .expect_err("bad")
            .to_string();
        assert_eq!(
            err,
            "project directory \"/x\\ny\" contains a line break, which cannot be written into a unit file; remove it"
        );
    }
}
