//! The `nicompute` command line: argument definitions, one module per command, one output
//! module. Commands write through [`output::Output`] so tests capture what a user sees.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod duration;
pub mod opts;
pub mod output;
pub mod password;
pub mod shared;
pub mod shell;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::cli::Cli;
use crate::output::Output;

/// Exit codes: 0 success, 1 the operation failed, 2 usage error.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Parses `args`, runs the command with real stdout/stderr, returns the exit code.
pub fn main_entry(args: Vec<OsString>) -> ExitCode {
    let json = args.iter().any(|a| a == "--json");
    let cli = match Cli::parse_args(&args) {
        Ok(c) => c,
        Err(e) => return output::usage_error(e, json),
    };
    cmd::start_early(&cli);
    let mut out = Output::stdio(cli.global.json, cli.global.show_secrets);
    let cli = match config::resolve(cli) {
        Ok(c) => c,
        Err(e) => return out.finish(Err(output::UsageError(e.to_string()).into())),
    };
    init_logging(&cli.global);
    let mut runtime = if cmd::one_thread(&cli) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            out.error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if cli.command.is_none() {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            let _ = Cli::command_help();
            return ExitCode::from(EXIT_USAGE);
        }
        let startup: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let r = runtime.block_on(shell::run(startup, &cli.global));
        return out.finish(r);
    }
    let result = runtime.block_on(cmd::dispatch(cli, &mut out));
    out.finish(result)
}

/// Log level from `--log`/`NICOMPUTE_LOG` (a filter), else `-v`/`-q`.
fn init_logging(g: &opts::GlobalOpts) {
    let default = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = g
        .log
        .as_deref()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
