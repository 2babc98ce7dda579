//! The one place that writes what users see. Results go to stdout (a table or text for people,
//! one JSON document with `--json`); logs, progress and prompts go to stderr. Errors are printed
//! once with their cause chain, as JSON too under `--json`. A closed stdout (`| head`) ends the
//! command quietly with success.
//!
//! Much of what is shown comes from the network — a miner's GPU name, its refusal reasons, its
//! usernames — and a miner can put terminal escapes in any of it (`ESC]0;…BEL` retitles the
//! window, `ESC[2J` clears the screen, `\r` overwrites a line, U+202E reverses text). So every
//! string leaves through [`clean`]: control characters (C0 but line feed and tab, DEL, C1) and
//! Unicode's bidirectional overrides are dropped, in tables, text, notes, errors and the strings
//! of JSON documents alike; no command can forget it. Only [`Output::passthrough`] — the remote
//! command's own output that `ssh` was asked to run — passes bytes as they are, as OpenSSH does.

use std::borrow::Cow;
use std::io::{self, Write};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::{json, Value};

/// Whether `c` may reach a terminal: no control character but line feed and tab, no
/// bidirectional override or isolate.
fn printable(c: char) -> bool {
    let control = c.is_control() && c != '\n' && c != '\t';
    let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    !control && !bidi
}

/// Whether UTF-8 `b` holds something [`printable`] refuses. A byte scan (the common answer is
/// no, over hundreds of kilobytes of a table): C0 controls but `\n` and `\t`, DEL, C1
/// (`C2 80`–`C2 9F`), and the bidirectional controls (`E2 80 AA`–`AE`, `E2 81 A6`–`A9`).
fn needs_cleaning(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' | b'\t' => {}
            0..=0x1f | 0x7f => return true,
            0xc2 if matches!(b.get(i + 1), Some(0x80..=0x9f)) => return true,
            0xe2 => match (b.get(i + 1), b.get(i + 2)) {
                (Some(0x80), Some(0xaa..=0xae)) | (Some(0x81), Some(0xa6..=0xa9)) => return true,
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    false
}

/// `s` without what must not reach a terminal (see the module docs).
pub fn clean(s: &str) -> Cow<'_, str> {
    if needs_cleaning(s.as_bytes()) {
        Cow::Owned(s.chars().filter(|c| printable(*c)).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// [`clean`] for an owned string: no copy when it is clean already.
fn clean_owned(s: String) -> String {
    if needs_cleaning(s.as_bytes()) {
        s.chars().filter(|c| printable(*c)).collect()
    } else {
        s
    }
}

/// Whether serde_json's compact or pretty output `b` carries a string with something [`clean`]
/// drops: raw (DEL, C1, bidirectional controls) or escaped (`\u0000`–`\u001f`, `\b`, `\f`,
/// `\r`; serde_json writes `\n` and `\t` as such, which are allowed).
fn json_needs_cleaning(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                match b.get(i + 1) {
                    Some(b'b' | b'f' | b'r') => return true,
                    Some(b'u') => {
                        let hex = b.get(i + 2..i + 6).and_then(|h| std::str::from_utf8(h).ok());
                        let code = hex.and_then(|h| u32::from_str_radix(h, 16).ok());
                        if code.is_none_or(|c| (c < 0x20 && c != 0x0a && c != 0x09) || (0x7f..=0x9f).contains(&c)) {
                            return true;
                        }
                    }
                    _ => {}
                }
                i += 2;
                continue;
            }
            0x7f => return true,
            0xc2 if matches!(b.get(i + 1), Some(0x80..=0x9f)) => return true,
            0xe2 => match (b.get(i + 1), b.get(i + 2)) {
                (Some(0x80), Some(0xaa..=0xae)) | (Some(0x81), Some(0xa6..=0xa9)) => return true,
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    false
}

/// [`clean`] on every string (and object key) of a JSON document.
pub fn clean_json(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(c) = clean(s) {
                *s = c;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(clean_json),
        Value::Object(map) => {
            if map.keys().any(|k| matches!(clean(k), Cow::Owned(_))) {
                let taken = std::mem::take(map);
                *map = taken.into_iter().map(|(k, v)| (clean(&k).into_owned(), v)).collect();
            }
            map.values_mut().for_each(clean_json);
        }
        _ => {}
    }
}

use crate::{EXIT_FAILED, EXIT_USAGE};

/// The stdout of an [`Output::capture`].
#[derive(Debug, Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A command's failure: an operation that failed (exit 1) or bad usage (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A failure whose details the command already printed as its result: exit 1, print nothing more.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

pub struct Output {
    pub json: bool,
    pub show_secrets: bool,
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    broken_pipe: bool,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("json", &self.json).finish()
    }
}

impl Output {
    pub fn stdio(json: bool, show_secrets: bool) -> Self {
        Self::new(json, show_secrets, Box::new(io::stdout()), Box::new(io::stderr()))
    }

    pub fn new(json: bool, show_secrets: bool, out: Box<dyn Write + Send>, err: Box<dyn Write + Send>) -> Self {
        Self { json, show_secrets, out, err, broken_pipe: false }
    }

    /// An output whose stdout is kept in memory (stderr is discarded): to run a command inside
    /// another and read its result.
    pub fn capture(json: bool) -> (Self, Captured) {
        let buf = Captured::default();
        (Self::new(json, false, Box::new(buf.clone()), Box::new(io::sink())), buf)
    }

    /// Prints a command's result: `data` as JSON, or `human` for people.
    pub fn result<T: Serialize>(&mut self, data: &T, human: impl FnOnce(&mut dyn Write) -> io::Result<()>) {
        // Rendered into memory, then written at once: stdout is line-buffered, and a table of a
        // thousand rows would otherwise cost a system call per line.
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let r = if self.json {
            // Written straight from `data`; only a document with something to drop (rare: a
            // hostile miner's string) goes through a `Value` to be cleaned.
            serde_json::to_writer_pretty(&mut buf, data)
                .and_then(|()| {
                    if json_needs_cleaning(&buf) {
                        let mut v = serde_json::to_value(data)?;
                        clean_json(&mut v);
                        buf.clear();
                        serde_json::to_writer_pretty(&mut buf, &v)?;
                    }
                    Ok(())
                })
                .map_err(io::Error::from)
                .and_then(|()| writeln!(buf))
        } else {
            human(&mut buf).map(|()| {
                if needs_cleaning(&buf) {
                    buf = clean(&String::from_utf8_lossy(&buf)).into_owned().into_bytes();
                }
            })
        };
        let r = r.and_then(|()| self.out.write_all(&buf)).and_then(|()| self.out.flush());
        if let Err(e) = r {
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.broken_pipe = true;
            }
        }
    }

    /// Another program's output passed through as it is (a remote command's stdout and stderr).
    pub fn passthrough(&mut self, stdout: &[u8], stderr: &[u8]) {
        if let Err(e) = self.out.write_all(stdout).and_then(|()| self.out.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.broken_pipe = true;
            }
        }
        let _ = self.err.write_all(stderr);
    }

    /// A note for people on stderr (not shown under `--json`).
    pub fn note(&mut self, msg: &str) {
        if !self.json {
            let _ = writeln!(self.err, "{}", clean(msg));
        }
    }

    /// Prints an error with its causes.
    pub fn error(&mut self, e: &anyhow::Error) {
        let causes: Vec<String> = e.chain().skip(1).map(|c| clean(&c.to_string()).into_owned()).collect();
        let message = clean(&e.to_string()).into_owned();
        if self.json {
            let doc = json!({"error": {"message": message, "causes": causes}});
            let _ = writeln!(self.out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        } else {
            let mut text = format!("error: {message}");
            for c in &causes {
                text.push_str(&format!("\n  caused by: {c}"));
            }
            let _ = writeln!(self.err, "{text}");
        }
    }

    /// Maps a command's result to the exit code, printing the error if any.
    pub fn finish(&mut self, result: anyhow::Result<()>) -> ExitCode {
        let _ = self.out.flush();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) if self.broken_pipe => ExitCode::SUCCESS,
            Err(e) if e.downcast_ref::<Reported>().is_some() => {
                if !self.json {
                    let _ = writeln!(self.err, "error: {}", clean(&e.to_string()));
                }
                ExitCode::from(EXIT_FAILED)
            }
            Err(e) => {
                self.error(&e);
                if e.downcast_ref::<UsageError>().is_some() {
                    ExitCode::from(EXIT_USAGE)
                } else {
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }

    /// Redacts a secret unless `--show-secrets`.
    pub fn secret<'a>(&self, s: &'a str) -> &'a str {
        if self.show_secrets {
            s
        } else {
            "********"
        }
    }
}

/// Prints a clap error (help and version go to stdout with success).
pub fn usage_error(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        };
    }
    if json {
        let doc = json!({"error": {"message": e.kind().to_string(), "usage": e.render().to_string()}});
        let _ = writeln!(io::stdout(), "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        let _ = e.print();
    }
    ExitCode::from(EXIT_USAGE)
}

/// A plain table for human output, in comfy-table's `UTF8_FULL_CONDENSED` layout.
///
/// Cells of one line (the list commands' rows) are laid out here directly: comfy-table copies
/// and re-pads every cell several times, which was a third of a cold `list_a` over 1,000 rows.
/// Cells with a line feed or tab go through comfy-table itself; the two agree byte for byte
/// (tested below).
pub fn table<S: AsRef<str>>(header: &[&str], rows: Vec<Vec<S>>) -> String {
    let simple = |c: &str| !c.contains(['\n', '\t']);
    if header.iter().all(|c| simple(c)) && rows.iter().all(|r| r.len() == header.len()) {
        // Each cell cleaned once, and laid out directly when every cell is one line.
        let cleaned: Vec<Vec<Cow<'_, str>>> =
            rows.iter().map(|r| r.iter().map(|c| clean(c.as_ref())).collect()).collect();
        if cleaned.iter().all(|r| r.iter().all(|c| simple(c))) {
            return table_lines(header, &cleaned);
        }
    }
    comfy(header, rows.into_iter().map(|r| r.into_iter().map(|c| c.as_ref().to_owned()).collect()).collect())
}

/// Columns a cell takes: its length for ASCII (cleaned cells hold no control character), else
/// its Unicode width.
fn cell_width(s: &str) -> usize {
    use unicode_width::UnicodeWidthStr;
    if s.is_ascii() {
        s.len()
    } else {
        s.width()
    }
}

/// [`table`] for cleaned cells of one line each.
fn table_lines(header: &[&str], cleaned: &[Vec<Cow<'_, str>>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| cell_width(h)).collect();
    for r in cleaned {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell_width(c));
        }
    }
    let line_len: usize = widths.iter().map(|w| w + 3).sum::<usize>() + 1;
    let mut out = String::with_capacity((cleaned.len() + 4) * (line_len + 8) * 2);
    let rule = |out: &mut String, left: char, fill: char, mid: char, right: char| {
        out.push(left);
        for (i, w) in widths.iter().enumerate() {
            if i > 0 {
                out.push(mid);
            }
            out.extend(std::iter::repeat_n(fill, w + 2));
        }
        out.push(right);
        out.push('\n');
    };
    let row = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        out.push('│');
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push('┆');
            }
            out.push(' ');
            out.push_str(c);
            pad(out, w - cell_width(c) + 1);
        }
        out.push_str("│\n");
    };
    rule(&mut out, '┌', '─', '┬', '┐');
    row(&mut out, &mut header.iter().copied());
    rule(&mut out, '╞', '═', '╪', '╡');
    for r in cleaned {
        row(&mut out, &mut r.iter().map(|c| c.as_ref()));
    }
    rule(&mut out, '└', '─', '┴', '┘');
    out.pop();
    out
}

/// `n` spaces, a slice at a time (a thousand-row table pads every cell).
fn pad(out: &mut String, mut n: usize) {
    const SPACES: &str = "                                                                ";
    while n > 0 {
        let k = n.min(SPACES.len());
        out.push_str(&SPACES[..k]);
        n -= k;
    }
}

fn comfy(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r.into_iter().map(clean_owned).collect::<Vec<_>>());
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_one_line_cells_are_comfy_tables_byte_for_byte() {
        let s = |v: &[&str]| v.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        let cases: Vec<(Vec<&str>, Vec<Vec<String>>)> = vec![
            (vec!["ID", "Hotkey"], vec![]),
            (vec!["A", ""], vec![s(&["", ""]), s(&["x", "yy"])]),
            (
                vec!["GPU", "Ports", "Note"],
                vec![s(&["H100", "22→40022, 8888→40023", "-"]), s(&["", "", "longer note"])],
            ),
            (vec!["Wide"], vec![s(&["日本語のGPU"]), s(&["e\u{301}"]), s(&["🚀 rocket"])]),
            (vec!["Hostile"], vec![s(&["NVIDIA \u{1b}]0;pwned\u{7}\u{1b}[2JH100\r\u{9b}31m\u{202e}gnp.exe"])]),
            (vec!["Spaces"], vec![s(&["  lead", "trail  "][..1]), s(&["trail  "])]),
        ];
        for (header, rows) in cases {
            assert_eq!(table(&header, rows.clone()), comfy(&header, rows.clone()), "{header:?} {rows:?}");
        }
        // Cells of several lines take comfy-table's own path.
        let multi = vec![s(&["one\ntwo", "x"])];
        assert_eq!(table(&["A", "B"], multi.clone()), comfy(&["A", "B"], multi));
    }

    /// What a hostile miner put in its GPU name (the review's reproduction).
    const HOSTILE: &str = "NVIDIA \u{1b}]0;pwned\u{7}\u{1b}[2JH100\r\u{9b}31m\u{202e}gnp.exe";

    #[test]
    fn escapes_never_reach_the_terminal() {
        let cleaned = clean(HOSTILE);
        assert!(!cleaned.chars().any(|c| c.is_control() || c == '\u{202e}'), "{cleaned:?}");
        assert_eq!(cleaned, "NVIDIA ]0;pwned[2JH10031mgnp.exe");
        assert!(matches!(clean("plain\ttext\nlines"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_byte_scans_agree_with_printable_for_every_character() {
        for c in (0..0x3000u32).chain(0xfeff..0x10000).filter_map(char::from_u32) {
            let s = format!("a{c}b");
            assert_eq!(needs_cleaning(s.as_bytes()), !printable(c), "{:#x}", c as u32);
            let json = serde_json::to_vec_pretty(&json!({ "k": s })).expect("json");
            assert_eq!(json_needs_cleaning(&json), !printable(c), "json {:#x}", c as u32);
        }
        assert!(!json_needs_cleaning(br#"{"k": "a\\u001b"}"#), "an escaped backslash is text");
    }

    #[test]
    fn results_are_cleaned_in_text_tables_and_json() {
        for json in [false, true] {
            let (mut out, buf) = Output::capture(json);
            let doc = json!({"gpu_name": HOSTILE, "rows": [{"x": HOSTILE}], HOSTILE: 1});
            out.result(&doc, |o| {
                writeln!(o, "GPU: {HOSTILE}")?;
                writeln!(o, "{}", table(&["GPU"], vec![vec![HOSTILE.to_owned()]]))
            });
            let printed = String::from_utf8(buf.take()).expect("utf8");
            assert!(
                !printed.contains('\u{1b}') && !printed.contains('\u{7}') && !printed.contains('\r'),
                "{printed:?}"
            );
            assert!(!printed.contains('\u{9b}') && !printed.contains('\u{202e}'), "{printed:?}");
            if json {
                // JSON escapes are no loophole either: a consumer that prints the value is safe.
                assert!(!printed.contains("\\u001b"), "{printed}");
                let v: Value = serde_json::from_str(&printed).expect("still JSON");
                assert_eq!(v["gpu_name"], "NVIDIA ]0;pwned[2JH10031mgnp.exe");
            }
        }
    }
}
