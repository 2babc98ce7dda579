//! The `nicompute` binary: parse, run, map the outcome to an exit code. Everything else is in
//! the library so tests drive the same code.

fn main() -> std::process::ExitCode {
    nicompute::main_entry(std::env::args_os().collect())
}
