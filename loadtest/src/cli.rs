//! The command line: goose's own flags (`--host`, `--users`, `--run-time`, `--increase-rate`,
//! `--throttle-requests`, `--report-file`, `--co-mitigation`, …) plus the sale's.

use std::path::PathBuf;

use clap::{Args, Parser};
use goose::config::GooseConfiguration;

use crate::auth::ClientAuth;

/// Drives simulated buyers through token -> seat -> pay against a ticketing deployment, then
/// audits the sale. Goose's flags work as documented by goose; the sale's flags shape the
/// concert the run creates for itself.
#[derive(Debug, Parser)]
#[command(name = "loadtest")]
pub struct Cli {
    /// The sale.
    #[command(flatten)]
    pub sale: SaleArgs,
    /// Goose's flags.
    #[command(flatten)]
    pub goose: GooseConfiguration,
}

/// The sale's flags.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sale")]
pub struct SaleArgs {
    /// The admin key of the deployment (creates the run's concert, reads its sales).
    #[arg(long, env = "TICKETING_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
    /// Spread users over these servers (comma separated); default: --host only.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub hosts: Vec<String>,
    /// How users prove who they are: `none`, `header` or `jwt-hs256:<secret>` (as the server's
    /// TICKETING_AUTH).
    #[arg(long, default_value = "none", value_parser = clap::value_parser!(ClientAuthArg))]
    pub auth: ClientAuthArg,
    /// Performance dates of the run's concert.
    #[arg(long, default_value_t = 1)]
    pub schedules: u32,
    /// Seats per date.
    #[arg(long, default_value_t = 1_000)]
    pub seats: u32,
    /// Price of every seat, in points.
    #[arg(long, default_value_t = 10_000)]
    pub price: i64,
    /// Queue cap: at most this many active at once.
    #[arg(long, default_value_t = 500)]
    pub max_active: u32,
    /// Queue rate: at most this many admitted per interval.
    #[arg(long, default_value_t = 100)]
    pub admit_batch: u32,
    /// Queue rate: the admission interval.
    #[arg(long, default_value_t = 1_000)]
    pub admit_interval_ms: u64,
    /// A waiting token not polled this long loses its place (browsers walk away to exercise it).
    #[arg(long, default_value_t = 30)]
    pub waiting_idle_secs: u64,
    /// An admitted token lasts this long.
    #[arg(long, default_value_t = 300)]
    pub active_ttl_secs: u64,
    /// Weight of the buyer scenario.
    #[arg(long, default_value_t = 4)]
    pub buyer_weight: usize,
    /// Weight of the browser scenario (joins, polls a little, walks away).
    #[arg(long, default_value_t = 1)]
    pub browser_weight: usize,
    /// Schedule the sale's opening this many seconds after the concert is created: everyone who
    /// joins before waits in a pre-queue, and the audit checks that nobody was admitted before
    /// the opening and that the pre-queue was drawn once, as its seed says. Left out: the sale
    /// opens at once.
    #[arg(long, value_name = "SECS")]
    pub opens_in_secs: Option<u32>,
    /// The share of browsers that leave the line (`DELETE`) rather than walk away silently.
    #[arg(long, default_value_t = 0.5, value_parser = share)]
    pub leave_share: f64,
    /// The most seats one buyer may buy of the run's concert (its `maxSeatsPerBuyer`); the audit
    /// fails a buyer with more. Left out: no cap.
    #[arg(long, value_name = "N")]
    pub max_seats_per_buyer: Option<u32>,
    /// Seats each buyer tries to buy, one after another (joining the line again after each
    /// payment); past the concert's cap a buyer is told `buyer_limit` and stops.
    #[arg(long, default_value_t = 1)]
    pub seats_per_buyer: u32,
    /// The share of buyers who hold two seats (for a friend) and pay them in one payment; the
    /// run's concert then lets a token hold two (`holdsPerToken`). A buyer who finds no second
    /// seat pays the one it holds.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub pair_share: f64,
    /// The share of buyers who cancel their booking after reading it back (the run's concert
    /// then lets buyers cancel until its performance); the audit counts their refunds in the
    /// money and checks the seat is not booked by the refunded payment.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub cancel_share: f64,
    /// Every this many milliseconds, an operator revokes the token of one buyer still at work
    /// (picked at random); the audit checks that nobody paid after their revocation. Left out:
    /// nobody is revoked.
    #[arg(long, value_name = "MS")]
    pub revoke_every_ms: Option<u64>,
    /// How the pre-queue is ordered at the opening: `random` (drawn) or `fifo`.
    #[arg(long, default_value = "random", value_parser = ["random", "fifo"])]
    pub pre_queue: String,
    /// Hold attempts per buyer before giving up on conflicts.
    #[arg(long, default_value_t = 5)]
    pub hold_attempts: u32,
    /// Where the JSON summary (and, unless --report-file says otherwise, goose's HTML report)
    /// are written.
    #[arg(long, default_value = "loadtest-results")]
    pub out_dir: PathBuf,
}

/// `--auth`, parsed.
#[derive(Debug, Clone)]
pub struct ClientAuthArg(pub ClientAuth);

impl std::str::FromStr for ClientAuthArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse().map(Self)
    }
}

/// A share: a number from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_sale_flags_and_goose_flags_live_together() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "loadtest",
            "--host",
            "http://127.0.0.1:8080",
            "--users",
            "2000",
            "--run-time",
            "60s",
            "--admin-key",
            "k",
            "--seats",
            "50",
            "--co-mitigation",
            "average",
            "--hosts",
            "http://a:1,http://b:2",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.goose.host.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!((cli.goose.users, cli.goose.run_time.as_deref()), (Some(2000), Some("60s")));
        assert_eq!((cli.sale.seats, cli.sale.hosts.len()), (50, 2));
        assert!(Cli::try_parse_from(["loadtest", "--admin-key", "k", "--auth", "basic"]).is_err());
    }
}
