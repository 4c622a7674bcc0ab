use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = capliquify::cli::Cli::parse();
    init_logging(&cli.command);
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

/// The service logs its work (as JSON lines with `--log-format json`); operator commands
/// print results and log only warnings. `RUST_LOG` overrides the filter.
fn init_logging(command: &capliquify::cli::Command) {
    let (default_filter, json) = match command {
        capliquify::cli::Command::Serve(args) => (
            "warn,capliquify=info,tower_http=info",
            args.log_format == "json",
        ),
        _ => ("warn", false),
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
