//! The `parley` binary: parses the command line and runs it; errors end here, as messages and an exit code.

use std::process::ExitCode;

use clap::Parser;
use parley::cli::{self, Cli, Command};
use parley::config::Secrets;

fn main() -> ExitCode {
    // Before any thread exists: the allocator's arena cap applies to the threads to come.
    parley::edge::limit_allocator_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("parley: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("parley: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = match cli::load_config(&cli) {
        Ok(mut config) => {
            match cli.command {
                // The demo and the evaluator print their own results; routine logs would bury them.
                Command::Demo(_) | Command::Eval(_) => config.telemetry.log = "warn".into(),
                // The check's report is the whole answer; its findings are not repeated as log lines.
                Command::Check => config.telemetry.log = "error".into(),
                _ => {}
            }
            config
        }
        Err(err) => {
            parley::telemetry::init_logging();
            return Err(err.into());
        }
    };
    // Logs, plus the OTLP exporters when `[telemetry]` asks for them.
    let (telemetry, telemetry_problem) = parley::assembly::telemetry(&config.telemetry);
    let secrets = Secrets::from_env();
    let result = run_command(cli, config, secrets, telemetry_problem).await;
    // Exporting the last spans blocks; keep it off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run_command(
    cli: Cli,
    config: parley::config::Config,
    secrets: Secrets,
    telemetry_problem: Option<String>,
) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check => {
            let errors = cli::check(&config, &secrets, telemetry_problem).await;
            Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Serve => {
            cli::serve(config, secrets).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Archive { command: parley::archive::cli::ArchiveCommand::Serve { listen } } => {
            cli::serve_viewer(&config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Archive { command } => {
            parley::archive::cli::run(&config.archive, &command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            cli::demo::run(config, secrets, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => match parley::eval::run(config, secrets, &args, &cli::CliAssembly).await {
            Ok(report) => {
                print!("{}", report.table());
                println!("report and waterfalls in {}", args.out.display());
                Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Err(err) => {
                // Distinct from a missed threshold (1): the evaluation itself could not run.
                eprintln!("parley eval: {err}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Export(args) => {
            for scenario in parley::eval::replay::run(&config, &args)? {
                println!("{}", scenario.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Transcribe(args) => {
            let failed = parley::transcribe::cli::run(&config, &args).await?;
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
