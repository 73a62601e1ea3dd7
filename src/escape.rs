//! Every value written into a Quadlet unit passes through here. Quadlet copies values
//! into the generated service's `ExecStart=`, where systemd expands `%` specifiers and
//! `$` variables, so both are doubled. Values are checked first: anything that could end
//! a line (newline, other control characters) or continue one (a trailing backslash)
//! is refused, because it could inject or alter a key.

use anyhow::{Result, bail};

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
    crate::terminal::sanitize(text.as_bytes()).replace('%', "%%")
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
pub fn raw(what: &str, value: &str) -> Result<String> {
    check_unquoted(what, value)?;
    if value.is_empty() {
        bail!("{what} is empty");
    }
    Ok(double_specials(value))
}

/// One path of a `Volume=` value. Volume values are split on `:`, so a `:` cannot be
/// expressed and is refused; quotes would become part of the path, so they are refused
/// too rather than silently changing the path.
pub fn volume_path(what: &str, path: &str) -> Result<String> {
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
    raw(what, path)
}

/// One word of a key Quadlet splits into words (`Environment=`, `Label=`,
/// `PodmanArgs=`, `Exec=`): C-style quoted, then specials doubled.
pub fn word(what: &str, value: &str) -> Result<String> {
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
    Ok(double_specials(&out))
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
                word("value", value),
                raw("value", value),
                volume_path("value", &format!("/p{value}")),
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
