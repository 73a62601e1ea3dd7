//! Showing bytes a sandbox controls (its logs, its error output) on the user's terminal.
//! A terminal acts on control characters: an agent that can print `ESC ] 52` writes the
//! user's clipboard, others set the window title or clear the screen; the bidirectional
//! controls (U+202E, RIGHT-TO-LEFT OVERRIDE, and its kin) reorder what is shown, so that
//! a line reads otherwise than it is. Everything that prints container output outside
//! tmux passes it through `sanitize`, which renders C0 and C1 controls, DEL and the
//! bidirectional controls as visible text, so they are seen and never obeyed.

use std::fmt::Write as _;
use std::io::{BufRead, Write};

/// One line of untrusted output made safe to print: tab is kept; other C0 controls and
/// DEL become caret notation (`ESC` → `^[`, `DEL` → `^?`); C1 controls in UTF-8 form
/// (U+0080–U+009F) and the bidirectional controls (U+061C, U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069) become `<U+009B>`; bytes that are not UTF-8 become
/// `\xNN`. A line break inside `line` is rendered too (`^J`): callers split lines
/// themselves.
pub fn sanitize(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn push_char(out: &mut String, c: char) {
    match u32::from(c) {
        0x09 => out.push('\t'),
        n @ 0x00..=0x1f => {
            out.push('^');
            out.push(char::from(u8::try_from(n + 0x40).unwrap_or(b'?')));
        }
        0x7f => out.push_str("^?"),
        n @ (0x80..=0x9f | 0x061c | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069) => {
            let _ = write!(out, "<U+{n:04X}>");
        }
        _ => out.push(c),
    }
}

/// Untrusted text made safe, line by line: each line sanitised, joined by `\n`.
/// A carriage return before a line break (a container with a tty writes `\r\n`) is
/// dropped rather than shown as `^M`.
pub fn sanitize_lines(text: &[u8]) -> Vec<String> {
    text.split(|b| *b == b'\n')
        .map(|l| sanitize(l.strip_suffix(b"\r").unwrap_or(l)))
        .collect()
}

/// Untrusted output on one line, for an error message: lines joined by a space,
/// surrounding whitespace trimmed.
pub fn one_line(text: &[u8]) -> String {
    sanitize_lines(text)
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Copies `from` to `to` line by line through `sanitize`, flushing after each line so
/// a followed log shows up as it is written. Returns at the end of `from`.
pub fn copy_sanitized(from: impl std::io::Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut reader = std::io::BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        writeln!(to, "{}", sanitize(body))?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let table: &[(&[u8], &str)] = &[
            (b"plain text", "plain text"),
            (b"tab\tkept", "tab\tkept"),
            (b"\x1b]52;c;ZXZpbA==\x07", "^[]52;c;ZXZpbA==^G"),
            (b"\x1b]0;title\x1b\\", "^[]0;title^[\\"),
            (b"\x1b[2J\x1b[H", "^[[2J^[[H"),
            (b"nul\x00", "nul^@"),
            (b"cr\rover", "cr^Mover"),
            (b"in\nline", "in^Jline"),
            (b"del\x7f", "del^?"),
            (b"bell\x07", "bell^G"),
            // C1 CSI and OSC in UTF-8 form.
            ("\u{9b}2J".as_bytes(), "<U+009B>2J"),
            ("\u{9d}52;c;x\u{9c}".as_bytes(), "<U+009D>52;c;x<U+009C>"),
            ("\u{80}\u{9f}".as_bytes(), "<U+0080><U+009F>"),
            // Raw C1 bytes are not UTF-8.
            (b"\x9b2J", "\\x9b2J"),
            (b"bad \xff\xfe end", "bad \\xff\\xfe end"),
            (b"cut \xe2\x82", "cut \\xe2\\x82"),
            (
                "ünïcødé €, 日本, \u{a0}".as_bytes(),
                "ünïcødé €, 日本, \u{a0}",
            ),
            (b"", ""),
        ];
        for (input, want) in table {
            let got = sanitize(input);
            assert_eq!(&got, want, "input {input:?}");
            assert!(!got.chars().any(|c| c.is_control() && c != '\t'), "{got:?}");
        }
    }

    /// Every bidirectional control: the embeddings and overrides, the isolates, and the
    /// marks.
    const BIDI: [char; 12] = [
        '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{061c}',
    ];

    #[test]
    fn bidirectional_controls_are_shown_not_obeyed() {
        let table: &[(&str, &str)] = &[
            // "Trojan Source": the override makes `txt.exe` read as `exe.txt`.
            ("file\u{202e}txt.exe", "file<U+202E>txt.exe"),
            ("\u{202a}lre\u{202c}", "<U+202A>lre<U+202C>"),
            ("\u{202b}rle\u{202c}", "<U+202B>rle<U+202C>"),
            ("\u{202d}lro\u{202c}", "<U+202D>lro<U+202C>"),
            ("\u{2066}lri\u{2069}", "<U+2066>lri<U+2069>"),
            ("\u{2067}rli\u{2069}", "<U+2067>rli<U+2069>"),
            ("\u{2068}fsi\u{2069}", "<U+2068>fsi<U+2069>"),
            ("mark\u{200e}\u{200f}", "mark<U+200E><U+200F>"),
            ("arabic\u{061c}mark", "arabic<U+061C>mark"),
            // Their neighbours are text: zero-width joiner, word joiner, an Arabic
            // letter, superscript zero.
            (
                "\u{200d}\u{2060}\u{0627}\u{2070}",
                "\u{200d}\u{2060}\u{0627}\u{2070}",
            ),
        ];
        for (input, want) in table {
            let got = sanitize(input.as_bytes());
            assert_eq!(&got, want, "input {input:?}");
            assert!(!got.contains(BIDI), "{got:?}");
        }
        for c in BIDI {
            let got = sanitize(c.to_string().as_bytes());
            assert_eq!(got, format!("<U+{:04X}>", u32::from(c)));
        }
    }

    #[test]
    fn lines_drop_the_cr_of_crlf_only() {
        assert_eq!(
            sanitize_lines(b"a\r\nb\rc\n\x1b[31mred"),
            ["a", "b^Mc", "^[[31mred"]
        );
        assert_eq!(
            one_line(b"  Error: \x1b[1mno\x1b[0m\n\nmore\n"),
            "Error: ^[[1mno^[[0m more"
        );
    }

    #[test]
    fn copy_streams_each_line_sanitised() {
        let input: &[u8] = b"one\x1b]52;c;x\x07\r\ntwo\x9b\nlast without newline\x1b";
        let mut out = Vec::new();
        copy_sanitized(input, &mut out).expect("copy");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "one^[]52;c;x^G\ntwo\\x9b\nlast without newline^[\n"
        );
    }
}
