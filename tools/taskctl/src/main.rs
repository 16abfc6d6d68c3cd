use std::{io, process::ExitCode};

use clap::Parser;
use taskctl::{Cli, CtlError, Io};
use tasksync_shared::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
