//! The load test of a ticketing deployment, over HTTP only, like a real client.
//!
//! A run creates its own concert through the admin API (so runs against a shared deployment
//! never collide), lets [goose](https://book.goose.rs) drive thousands of simulated people
//! through it (buyers: join the line, wait for admission honouring `Retry-After`, browse, hold a
//! seat, top up, pay with an `Idempotency-Key`, read the reservation back; browsers: join and walk
//! away), then audits the sale against what the server lists ([`audit`]) and writes a JSON
//! summary ([`summary`]) next to goose's HTML report.
//!
//! ```text
//! cargo run --release -p loadtest -- --host http://127.0.0.1:8080 --users 2000 --run-time 60s
//! ```

pub mod admin;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod record;
pub mod scenario;
pub mod stats;
pub mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use goose::client::GooseClientBuilder;
use goose::config::{GooseDefault, GooseDefaultType};
use goose::metrics::GooseCoordinatedOmissionMitigation;
use goose::prelude::*;

use crate::admin::{Admin, AdminError};
use crate::api::{NewConcert, NewSchedule, QueueSettings};
use crate::audit::Evidence;
use crate::cli::Cli;
use crate::scenario::Run;
use crate::summary::{Inputs, Summary};

/// Users goose starts per second unless `--increase-rate` or `--increase-time` says otherwise:
/// sale day is everyone arriving at once.
pub const DEFAULT_INCREASE_RATE: f64 = 1_000.0;
/// Longest a request may take before the client gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a run could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// Setting up or reading the sale failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// goose failed.
    #[error("goose: {0}")]
    Goose(#[from] GooseError),
    /// Writing the results failed.
    #[error("writing {path}: {source}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the whole thing: set-up, attack, audit, summary. Prints the audit and the summary and
/// returns the summary (its `verdict` says PASS or FAIL).
///
/// # Errors
/// When the run could not be set up, run or audited.
pub async fn run(cli: Cli) -> Result<Summary, RunError> {
    let Cli { sale, mut goose } = cli;
    let host = goose.host.clone().ok_or_else(|| {
        RunError::Usage("--host is required (the server that sets up and audits the run)".into())
    })?;
    let hosts = if sale.hosts.is_empty() { vec![host.clone()] } else { sale.hosts.clone() };
    if sale.schedules == 0 || sale.seats == 0 || sale.price <= 0 {
        return Err(RunError::Usage("--schedules, --seats and --price must be positive".into()));
    }
    std::fs::create_dir_all(&sale.out_dir)
        .map_err(|source| RunError::Write { path: sale.out_dir.clone(), source })?;

    let admin = Admin::new(&host, &sale.admin_key);
    let starts = Utc::now() + chrono::Duration::days(30);
    let concert = admin
        .create_concert(&NewConcert {
            title: format!("loadtest {}", Utc::now().format("%Y-%m-%d %H:%M:%S")),
            schedules: (0..sale.schedules)
                .map(|day| NewSchedule {
                    starts_at: starts + chrono::Duration::days(i64::from(day)),
                    seat_count: sale.seats,
                    price: sale.price,
                })
                .collect(),
            queue: QueueSettings {
                max_active: sale.max_active,
                admit_batch: sale.admit_batch,
                admit_interval_ms: sale.admit_interval_ms,
                waiting_idle_secs: sale.waiting_idle_secs,
                active_ttl_secs: sale.active_ttl_secs,
            },
            sales_open_at: sale
                .opens_in_secs
                .map(|secs| Utc::now() + chrono::Duration::seconds(i64::from(secs))),
            pre_queue: sale.opens_in_secs.map(|_| sale.pre_queue.clone()),
            max_seats_per_buyer: sale.max_seats_per_buyer,
            holds_per_token: (sale.pair_share > 0.0).then_some(2),
            cancel_until_secs_before_start: (sale.cancel_share > 0.0).then_some(0),
        })
        .await?;
    println!(
        "loadtest: concert {} with {} × {} seats on {}",
        concert.concert_id,
        sale.schedules,
        sale.seats,
        hosts.join(", ")
    );

    if goose.report_file.is_empty() {
        goose.report_file.push(sale.out_dir.join("report.html").display().to_string());
    }
    let deadline = deadline(&goose);
    let mut run =
        Run::new(concert, sale.price, sale.auth.0.clone(), hosts.clone(), sale.hold_attempts.max(1));
    let started_at = Utc::now();
    run.deadline = deadline.map(|after| run.started + after);
    run.seats_per_buyer = sale.seats_per_buyer;
    run.leave_share = sale.leave_share;
    run.pair_share = sale.pair_share;
    run.cancel_share = sale.cancel_share;
    let run = Arc::new(run);

    let mut attack = GooseAttack::initialize_with_config(goose.clone())?.set_client_builder_without_cookies(
        GooseClientBuilder::new().without_cookies().timeout(REQUEST_TIMEOUT),
    )?;
    for scenario in scenario::scenarios(&run, sale.buyer_weight, sale.browser_weight)? {
        attack = attack.register_scenario(scenario);
    }
    if goose.increase_rate.is_none() && goose.increase_time.is_none() {
        attack =
            *attack.set_default(GooseDefault::IncreaseRate, DEFAULT_INCREASE_RATE.to_string().as_str())?;
    }
    // The sale happens while users arrive: goose's default of forgetting the ramp-up would drop it.
    if !goose.no_reset_metrics {
        attack = *attack.set_default(GooseDefault::NoResetMetrics, true)?;
    }
    if goose.co_mitigation.is_none() {
        attack = *attack.set_default(
            GooseDefault::CoordinatedOmissionMitigation,
            GooseCoordinatedOmissionMitigation::Average,
        )?;
    }
    // Stopped when the attack ends, however it ends.
    let operator =
        sale.revoke_every_ms.map(|every| AbortOnDrop(revoking(admin.clone(), Arc::clone(&run), every)));
    let metrics = attack.execute().await?;
    drop(operator);

    let sales = admin.sales(run.concert.concert_id).await?;
    let listed = admin.concert(run.concert.concert_id).await?;
    let clients = run.obs.snapshot();
    let accounts = admin.accounts(&audit::users_to_check(&clients, &sales)).await?;
    let audit = audit::audit(Evidence {
        clients: &clients,
        sales: &sales,
        accounts: &accounts,
        price: sale.price,
        contract_violations: run.obs.contract_violations(),
        opening: listed.sales_open_at.map(|opens_at| audit::Scheduled {
            opens_at,
            drawn: listed.pre_queue.as_deref() != Some("fifo"),
            opened: listed.opened,
        }),
        max_seats_per_buyer: listed.max_seats_per_buyer,
    });
    let summary = Summary::new(Inputs {
        metrics: &metrics,
        clients: &clients,
        sales: &sales,
        audit: &audit,
        hosts: &hosts,
        price: sale.price,
        started_at,
        contract_violations: run.obs.contract_violations(),
        server_errors: run.obs.server_errors(),
        shed: run.obs.sheds(),
        failed_over: run.obs.failovers(),
    });
    let path = sale.out_dir.join("summary.json");
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(&path, json).map_err(|source| RunError::Write { path: path.clone(), source })?;
    println!("{}", summary.render());
    println!("summary: {}  report: {}", path.display(), goose.report_file.join(", "));
    println!("{}", audit.render());
    Ok(summary)
}

/// A task stopped when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The run's operator: every `every_ms`, revokes the token of one buyer still at work, picked at
/// random, and notes when the server says it did.
fn revoking(admin: Admin, run: Arc<Run>, every_ms: u64) -> tokio::task::JoinHandle<()> {
    use rand::Rng;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(every_ms.max(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let at_work: Vec<String> = run
                .obs
                .snapshot()
                .into_iter()
                // Buyers who have not paid yet: a buyer's newest token is then the one at work
                // (after a payment, the revocation could name the paid token while the buyer
                // comes back with a new one).
                .filter(|c| {
                    c.role == record::Role::Buyer
                        && c.outcome == record::Outcome::InProgress
                        && c.revoked_at.is_none()
                        && c.payments.is_empty()
                })
                .map(|c| c.user_id)
                .collect();
            if at_work.is_empty() {
                continue;
            }
            let user = &at_work[rand::rng().random_range(0..at_work.len())];
            match admin.revoke(run.concert.concert_id, user).await {
                Ok(Some(at)) => run.obs.update(user, |r| r.revoked_at = Some(at)),
                Ok(None) => {}
                Err(error) => eprintln!("loadtest: {error}"),
            }
        }
    })
}

/// How long after the start people should stop waiting in line: the ramp-up plus the run time
/// (goose waits for every started story to end, so stories must know when the run is over).
/// `None` without `--run-time` (the run ends when stopped).
fn deadline(goose: &goose::config::GooseConfiguration) -> Option<Duration> {
    let run_time = goose::util::parse_timespan(goose.run_time.as_deref()?)?;
    let users = goose.users.unwrap_or(1) as f64;
    let ramp_secs = match (&goose.increase_time, &goose.increase_rate) {
        (Some(time), _) => goose::util::parse_timespan(time).unwrap_or(0) as f64,
        (None, Some(rate)) => users / rate.parse::<f64>().ok().filter(|r| *r > 0.0).unwrap_or(1.0),
        (None, None) => users / DEFAULT_INCREASE_RATE,
    };
    Some(Duration::from_secs_f64(ramp_secs) + Duration::from_secs(run_time as u64))
}
