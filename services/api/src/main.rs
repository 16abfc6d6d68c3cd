use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::Write;

use tasksync_shared::{
    Settings,
    config::{JwtKey, help},
    shutdown::shutdown_signal_with_deadline,
    startup::{self, run_checked},
    telemetry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Task Sync HTTP api. Configured by environment variables (listed below, and in
/// .env.example).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the api (the default).
    Serve,
    /// Exit 0 when the api on $PORT answers its health check (for container health checks).
    Healthcheck,
    /// Print an HS256 token signed with JWT_SECRET (with JWT_ISSUER / JWT_AUDIENCE when set),
    /// for trying the api locally.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

fn main() -> ExitCode {
    startup::exit_code(run())
}

/// The command line, with `--help` ending in the environment variables it reads.
fn cli() -> Cli {
    let matches = Cli::command()
        .after_help(help::environment_help())
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let cli = cli();
    let settings = Settings::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let telemetry = telemetry::init(&settings, "tasksync-api")?;
            let (host, port) = (settings.host.clone(), settings.port);
            // Listening for signals from here on, before anything slow.
            let shutdown = shutdown_signal_with_deadline(settings.shutdown_timeout);
            let serve = async {
                api::Application::build(settings.clone())
                    .await
                    .with_context(|| format!("cannot start the api on HOST={host} PORT={port}"))?
                    .run_until_stopped(shutdown)
                    .await
            };
            let served = run_checked(&settings, "tasksync-api-login-check", serve).await;
            // The last spans leave now (bounded): the exporter's own thread does the sending.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            served
        }
        Command::Healthcheck => healthcheck(settings.port).await,
        Command::Token { sub, ttl } => print_token(&settings, &sub, ttl),
    }
}

fn print_token(settings: &Settings, sub: &str, ttl: u64) -> anyhow::Result<()> {
    let Some(JwtKey::Secret(secret)) = &settings.jwt.key else {
        anyhow::bail!(
            "`api token` signs with JWT_SECRET, which is not set; with JWT_PUBLIC_KEY_FILE or \
             JWT_JWKS_URL, tokens come from your identity provider"
        );
    };
    api::auth::verify::check_subject(Some(sub.to_string()))
        .map_err(|refusal| anyhow::anyhow!("--sub: {refusal}"))?;
    let jwt = &settings.jwt;
    let token = api::auth::mint::hs256_token(
        secret.expose(),
        sub,
        ttl,
        jwt.issuer.as_deref(),
        jwt.audience.as_deref(),
    )?;
    let _ = writeln!(std::io::stdout(), "{token}");
    Ok(())
}

/// A plain HTTP/1.0 GET of /api/health on the loopback, so the runtime image needs no curl.
async fn healthcheck(port: u16) -> anyhow::Result<()> {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /api/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::ensure!(
            response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200"),
            "unhealthy: {}",
            String::from_utf8_lossy(&response)
                .lines()
                .next()
                .unwrap_or_default()
        );
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), check).await?
}
