//! A pretend terminal for the local runtime. When a client asks for a PTY its terminal goes raw
//! (no local echo, Enter sends `\r`), but the local runtime runs commands on plain pipes; this
//! line discipline does the kernel's cooked-mode work in between so an interactive `ssh host` is
//! usable: echo, line editing, Enter, ^C/^\ as signals, ^D as end of input, `\n` → `\r\n` out.

use rustix::process::Signal;

/// What the session must do after some terminal input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// A finished line (or a ^D-flushed partial one) for the process's stdin.
    Input(Vec<u8>),
    /// ^D on an empty line: end of input.
    Eof,
    /// Signal the foreground process group.
    Signal(Signal),
}

#[derive(Debug, Default)]
pub(super) struct LineDiscipline {
    line: Vec<u8>,
    escape: Escape,
}

/// Skipping an escape sequence (arrow keys and the like: no history or cursor movement here).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [ …` or `ESC O …`, until a final byte.
    Sequence,
}

impl LineDiscipline {
    /// Processes terminal input: what to echo back, and what to do.
    pub(super) fn feed(&mut self, input: &[u8], echo: &mut Vec<u8>, actions: &mut Vec<Action>) {
        for &b in input {
            match self.escape {
                Escape::Start => {
                    self.escape = if b == b'[' || b == b'O' { Escape::Sequence } else { Escape::None };
                    continue;
                }
                Escape::Sequence => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match b {
                b'\r' | b'\n' => {
                    echo.extend_from_slice(b"\r\n");
                    self.line.push(b'\n');
                    actions.push(Action::Input(std::mem::take(&mut self.line)));
                }
                0x7f | 0x08 => {
                    if self.erase_char() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x15 => {
                    // ^U: erase the line.
                    while self.erase_char() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x17 => {
                    // ^W: erase the last word.
                    while self.line.last().is_some_and(|c| *c == b' ') && self.erase_char() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                    while self.line.last().is_some_and(|c| *c != b' ') && self.erase_char() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x03 => {
                    echo.extend_from_slice(b"^C\r\n");
                    self.line.clear();
                    actions.push(Action::Signal(Signal::INT));
                }
                0x1c => {
                    echo.extend_from_slice(b"^\\\r\n");
                    self.line.clear();
                    actions.push(Action::Signal(Signal::QUIT));
                }
                0x04 => {
                    if self.line.is_empty() {
                        actions.push(Action::Eof);
                    } else {
                        actions.push(Action::Input(std::mem::take(&mut self.line)));
                    }
                }
                0x1b => self.escape = Escape::Start,
                // ^Z: no job control here.
                0x1a => {}
                _ => {
                    self.line.push(b);
                    echo.push(b);
                }
            }
        }
    }

    /// Removes the last character (all bytes of a UTF-8 one); false when the line is empty.
    fn erase_char(&mut self) -> bool {
        let Some(last) = self.line.pop() else { return false };
        if last >= 0x80 {
            // Drop continuation bytes back to the leading byte.
            let mut b = last;
            while b & 0xc0 == 0x80 {
                match self.line.pop() {
                    Some(prev) => b = prev,
                    None => break,
                }
            }
        }
        true
    }
}

/// Output post-processing of a terminal: `\n` → `\r\n`.
pub(super) fn onlcr(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<u8>, Vec<Action>) {
        let mut ld = LineDiscipline::default();
        let (mut echo, mut actions) = (Vec::new(), Vec::new());
        ld.feed(input, &mut echo, &mut actions);
        (echo, actions)
    }

    #[test]
    fn enter_sends_the_line_with_a_newline() {
        let (echo, actions) = run(b"ls\r");
        assert_eq!(echo, b"ls\r\n");
        assert_eq!(actions, vec![Action::Input(b"ls\n".to_vec())]);
    }

    #[test]
    fn backspace_edits_and_ignores_arrows() {
        let (_, actions) = run(b"lx\x7fs\x1b[A\r");
        assert_eq!(actions, vec![Action::Input(b"ls\n".to_vec())]);
        let (_, actions) = run("é\x7fa\r".as_bytes());
        assert_eq!(actions, vec![Action::Input(b"a\n".to_vec())]);
    }

    #[test]
    fn control_keys() {
        assert_eq!(run(b"\x04").1, vec![Action::Eof]);
        assert_eq!(run(b"ab\x04").1, vec![Action::Input(b"ab".to_vec())]);
        assert_eq!(run(b"sleep 9\x03").1, vec![Action::Signal(Signal::INT)]);
        assert_eq!(run(b"echo a b\x17\x17x\r").1, vec![Action::Input(b"echo x\n".to_vec())]);
    }

    #[test]
    fn newline_becomes_crlf() {
        assert_eq!(onlcr(b"a\nb\n"), b"a\r\nb\r\n");
    }
}
