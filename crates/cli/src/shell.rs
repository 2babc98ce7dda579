//! The interactive shell: `nicompute` with no arguments on a terminal. Each line is parsed by
//! the same clap definition as one-shot mode (so the two cannot drift), with the start-up flags
//! (wallet, chain, database) applied first and the line's own flags overriding them.
//! History is kept in the data directory; Tab completes command names.

use std::borrow::Cow;

use clap::CommandFactory;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::cli::Cli;
use crate::opts::GlobalOpts;
use crate::output::Output;

/// The commands the shell lists first, as SN27's register.py named them.
pub const SEED_COMMANDS: [&str; 9] =
    ["a", "a_hotkey", "d", "list_a", "list_ah", "list_r", "p_hotkey", "dp_hotkey", "list_p"];

struct Names(Vec<String>);

impl Completer for Names {
    type Candidate = Pair;
    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let hits = self
            .0
            .iter()
            .filter(|n| n.starts_with(head))
            .map(|n| Pair { display: n.clone(), replacement: format!("{n} ") })
            .collect();
        Ok((0, hits))
    }
}

impl Hinter for Names {
    type Hint = String;
}
impl Highlighter for Names {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}
impl Validator for Names {}
impl Helper for Names {}

fn command_names() -> Vec<String> {
    let mut names: Vec<String> = Cli::command().get_subcommands().map(|c| c.get_name().to_owned()).collect();
    names.extend(["help".to_owned(), "exit".to_owned()]);
    names.sort();
    names.dedup();
    names
}

fn help_text() -> String {
    let mut s = String::from("Commands (each also takes the flags of `nicompute <command> --help`):\n");
    for c in Cli::command().get_subcommands() {
        let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
        s.push_str(&format!("  {:<10} {about}\n", c.get_name()));
    }
    s.push_str("  help       this list; `<command> --help` for its flags\n  exit       leave the shell\n");
    s
}

/// Runs the shell until `exit` or end of input. `startup` are the global flags it was started
/// with, `g` what they came to; each line is parsed with them in front, so a line's own flags
/// win and the precedence is the one-shot command's.
pub async fn run(startup: Vec<String>, g: &GlobalOpts) -> anyhow::Result<()> {
    let (json, show_secrets) = (g.json, g.show_secrets);
    let mut editor: Editor<Names, rustyline::history::DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(Names(command_names())));
    let history = g.dirs.data_dir_or_here().join("shell_history");
    let _ = editor.load_history(&history);
    let mut stderr = std::io::stderr();
    use std::io::Write;
    let _ = writeln!(stderr, "nicompute {} — type `help` for commands, `exit` to leave.", env!("CARGO_PKG_VERSION"));
    // One allocation key kept ready in memory for the next `a`, the next one started after each.
    compute::crypto::KeyReserve::global().keep_ready(true);
    loop {
        let line = match editor.readline("nicompute> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match line {
            "exit" | "quit" => break,
            "help" | "?" => {
                let _ = write!(stderr, "{}", help_text());
                continue;
            }
            _ => {}
        }
        let words = match shell_words::split(line) {
            Ok(w) => w,
            Err(e) => {
                let _ = writeln!(stderr, "error: {e}");
                continue;
            }
        };
        let mut args = vec!["nicompute".to_owned()];
        args.extend(startup.iter().cloned());
        args.extend(words);
        let cli = match Cli::parse_args(&args) {
            Ok(c) => c,
            Err(e) => {
                let _ = e.print();
                continue;
            }
        };
        let mut out = Output::stdio(json || cli.global.json, show_secrets || cli.global.show_secrets);
        let result = crate::cmd::dispatch(cli, &mut out).await;
        // Errors are printed; the shell goes on.
        let _ = out.finish(result);
    }
    if let Some(dir) = history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = editor.save_history(&history);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_command_is_a_command() {
        let names = command_names();
        for c in SEED_COMMANDS {
            assert!(names.iter().any(|n| n == c), "missing command {c}");
        }
    }
}
