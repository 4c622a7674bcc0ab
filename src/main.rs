use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = capliquify::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // The service logs its work; operator commands print results and keep logs for
            // warnings (RUST_LOG overrides both).
            EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                EnvFilter::new(match cli.command {
                    capliquify::cli::Command::Serve(_) => "warn,capliquify=info",
                    _ => "warn",
                })
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(capliquify::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
