use std::process::ExitCode;

use clap::FromArgMatches as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let matches = capliquify::cli::command().get_matches();
    let cli = capliquify::cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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

/// `capliquify openapi | head`: when the reader goes away, `println!` panics with "failed
/// printing to stdout: Broken pipe" (Rust ignores SIGPIPE, so the write fails instead of
/// killing the process). Exit quietly instead, with the status a shell reports for a tool
/// that SIGPIPE stopped (128 + 13), as `yes | head` does.
///
/// Why a panic hook rather than restoring SIGPIPE's default: that needs `unsafe` and would
/// also apply to database sockets, turning a server that hangs up into a silent death
/// instead of an error message.
fn quiet_on_closed_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let closed_pipe = (message.starts_with("failed printing to stdout")
            || message.starts_with("failed printing to stderr"))
            && message.contains("Broken pipe");
        if closed_pipe {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}
