//! The `stolid` binary: parse the command line, set up logs, run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Real environment variables win over `.env` (dotenvy never overrides).
    let _ = dotenvy::dotenv();
    let cli = stolid::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(stolid::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stolid: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
