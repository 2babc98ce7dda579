//! The one place that writes what users see. Results go to stdout (a table or text for people,
//! one JSON document with `--json`); logs, progress and prompts go to stderr. Errors are printed
//! once with their cause chain, as JSON too under `--json`. A closed stdout (`| head`) ends the
//! command quietly with success.

use std::io::{self, Write};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;

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
            serde_json::to_writer_pretty(&mut buf, data).map_err(io::Error::from).and_then(|()| writeln!(buf))
        } else {
            human(&mut buf)
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
            let _ = writeln!(self.err, "{msg}");
        }
    }

    /// Prints an error with its causes.
    pub fn error(&mut self, e: &anyhow::Error) {
        let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
        if self.json {
            let doc = json!({"error": {"message": e.to_string(), "causes": causes}});
            let _ = writeln!(self.out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        } else {
            let mut text = format!("error: {e}");
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
                    let _ = writeln!(self.err, "error: {e}");
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

/// A plain two-column table for human output.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}
