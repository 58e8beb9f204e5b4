//! The ticketing server. `--help` lists every setting and its environment variable.

use tracing_subscriber::EnvFilter;

/// The server allocates and frees small buffers on every request (JSON, headers, rows); glibc's
/// allocator spent about a sixth of the server's CPU doing it during a sale (`perf`, see the
/// README's "What a purchase costs") and fragments a long-running process's memory. The library
/// leaves the choice of allocator to whoever embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    // An unknown flag or a value out of range exits here (status 2), naming the variable.
    let config =
        ticketing_http::config::Config::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match ticketing_http::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
