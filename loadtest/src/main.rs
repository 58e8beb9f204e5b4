//! `loadtest`: see the crate docs and the README.

use std::process::ExitCode;

use clap::Parser;
use loadtest::audit::Verdict;
use loadtest::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match loadtest::run(cli).await {
        Ok(summary) if summary.verdict == Verdict::Pass => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("loadtest: {error}");
            ExitCode::from(2)
        }
    }
}
