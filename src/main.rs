//! The `parley` binary: parses the command line and runs it; errors end here, as messages and an exit code.

use std::process::ExitCode;

use clap::Parser;
use parley::cli::{self, Cli, Command};
use parley::config::Secrets;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    parley::telemetry::init_logging();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("parley: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli::load_config(&cli)?;
    let secrets = Secrets::from_env();
    match cli.command {
        Command::Check => {
            Ok(if cli::check(&config, &secrets).await == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Serve => {
            cli::serve(config, secrets).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
