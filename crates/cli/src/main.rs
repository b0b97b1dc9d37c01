//! `shippy`: thin entry point; see the library for the commands.
//!
//! Exit status: 0 on success; 1 when the command failed (one sentence on stderr); 2 for a command
//! line clap refuses; 141 (128 + SIGPIPE, what a shell shows for `cat` in the same place) when the
//! reader of standard output went away early, as in `shippy consignment list | head -1`, with
//! nothing printed, since the reader asked for no more.

use std::{io::Write, process::ExitCode};

use clap::Parser;
use shippy_cli::{error::CliError, output};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = shippy_cli::args::Cli::parse();
    match shippy_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BrokenPipe) => ExitCode::from(CliError::BROKEN_PIPE_STATUS),
        Err(error) => {
            // Service messages are text from elsewhere: escape their control characters too. A
            // closed stderr leaves nowhere to report to, so its write error is dropped.
            let text = error.to_string();
            let _ = writeln!(std::io::stderr(), "error: {}", output::visible(&text));
            ExitCode::FAILURE
        }
    }
}
