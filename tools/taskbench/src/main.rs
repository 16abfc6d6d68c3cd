//! `taskbench`: drives a Task Sync api (or the raw broker + database) and prints what it measured.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = taskbench::cli::Cli::parse();
    let json = cli.common.json;
    match taskbench::run(cli).await {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("taskbench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("taskbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
