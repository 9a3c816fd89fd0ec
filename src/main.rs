//! The `stolid` binary: parse the command line, set up logs, run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Real environment variables win over `.env` (dotenvy never overrides).
    let _ = dotenvy::dotenv();
    let cli = stolid::app::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let result = runtime.block_on(stolid::app::cli::run(cli));
    // Dropping the runtime would wait for blocking threads (a long extraction
    // cannot be cancelled). What a shutdown owes (responses, usage rows,
    // released messages) is done when `run` returns, inside the stop timeout:
    // exit now, without a grace second that would overrun it.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stolid: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
