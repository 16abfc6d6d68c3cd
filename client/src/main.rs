//! `tasks`: the offline Task Sync command line.

fn main() -> std::process::ExitCode {
    tasksync_client::cli::run()
}
