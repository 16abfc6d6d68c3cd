use std::{io, process::ExitCode};

use clap::Parser;
use taskctl::{Cli, CtlError};
use tasksync_shared::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("taskctl: {error}");
            return ExitCode::from(CtlError::FAILED);
        }
    };
    let mut out = io::stdout().lock();
    let mut input = io::stdin().lock();
    match taskctl::run(cli, &settings, &mut out, &mut input).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("taskctl: {error:#}");
            ExitCode::from(error.exit_code())
        }
    }
}
