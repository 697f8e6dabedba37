//! The `trackfs` binary: flags in, plain config structs out, one subcommand run.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
