use std::{io, process::ExitCode};

use clap::{CommandFactory, FromArgMatches};
use taskctl::{Cli, CtlError, Io};
use tasksync_shared::{Settings, config::help};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("taskctl: {error}");
            return ExitCode::from(CtlError::USAGE);
        }
    };
    let io = Io {
        out: &mut io::stdout().lock(),
        err: &mut io::stderr(),
        input: &mut io::stdin().lock(),
    };
    match taskctl::run(cli, &settings, io).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("taskctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// The command line, with `--help` ending in the environment variables it reads.
fn cli() -> Cli {
    let matches = Cli::command()
        .after_help(help::environment_help())
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}
