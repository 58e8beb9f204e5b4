//! The JSON summary of a run: the figures goose's HTML report does not know (purchases, conflicts,
//! time to sell-out, queue waits, FIFO) next to goose's per-step latencies, and the audit.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData};
use serde::Serialize;

use crate::api::{Sales, SeatStatus};
use crate::audit::Audit;
use crate::record::{Outcome, Role, UserRecord};
use crate::stats::Distribution;

/// The whole summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `PASS` or `FAIL`, as the audit says.
    pub verdict: crate::audit::Verdict,
    /// What ran.
    pub run: RunInfo,
    /// Seats paid in this run (the server's count).
    pub purchases: usize,
    /// Payments that paid several seats at once (buyers of `--pair-share`).
    pub paid_together: u64,
    /// Purchases per second over the selling time (until sell-out, or the whole run).
    pub purchases_per_second: f64,
    /// Seconds from the start of the attack to the last seat's payment, when every seat sold.
    pub time_to_sell_out_secs: Option<f64>,
    /// Seconds from joining the line to seeing ACTIVE, for people admitted.
    pub queue_wait_secs: Option<Distribution>,
    /// Hold attempts and conflicts.
    pub conflicts: Conflicts,
    /// How people's stories ended, by role.
    pub outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Pairs admitted out of line order.
    pub fifo_inversions: u64,
    /// Latency per step (`METHOD name`), from goose's metrics.
    pub steps: BTreeMap<String, Step>,
    /// Errors: goose's (per request), and the clients' own counts.
    pub errors: Errors,
    /// The audit in full.
    pub audit: Audit,
}

/// What ran.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    /// The servers.
    pub hosts: Vec<String>,
    /// Concurrent goose users at most.
    pub users: usize,
    /// People simulated (each goose iteration is a new person).
    pub people: usize,
    /// Goose's measured duration, seconds.
    pub duration_secs: usize,
    /// The run's concert.
    pub concert_id: uuid::Uuid,
    /// Seats for sale.
    pub seats: usize,
    /// The price of each.
    pub price: i64,
    /// When the attack started.
    pub started_at: DateTime<Utc>,
    /// People per server.
    pub people_per_host: BTreeMap<String, usize>,
}

/// Holds tried and lost.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflicts {
    /// Holds tried.
    pub hold_attempts: u64,
    /// Holds answered `409 seat_unavailable`.
    pub hold_conflicts: u64,
    /// Conflicts per attempt.
    pub hold_conflict_rate: f64,
    /// Payments refused because the hold lapsed (`410`).
    pub holds_lapsed: usize,
}

/// One step's latency in milliseconds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Requests.
    pub count: usize,
    /// Answers goose counted as failures (after handled outcomes were marked successes).
    pub failures: usize,
    /// Raw response times.
    pub raw_ms: Percentiles,
    /// Response times with goose's coordinated-omission mitigation (`--co-mitigation`), when on.
    pub co_mitigated_ms: Option<Percentiles>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    fn of(data: &GooseRequestMetricTimingData) -> Self {
        let ms = |us: u64| us as f64 / 1_000.0;
        Self {
            p50: ms(data.percentile_us(0.50)),
            p95: ms(data.percentile_us(0.95)),
            p99: ms(data.percentile_us(0.99)),
            max: ms(data.maximum_time_us),
        }
    }
}

/// Errors of the run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Errors {
    /// Responses that broke the contract.
    pub contract_violations: u64,
    /// 5xx answers and requests with no answer.
    pub server_errors: u64,
    /// Requests the server shed (503 `overloaded`) or rate limited (429 `rate_limited`), each
    /// retried after its Retry-After (not server errors: the answer a careful client retries).
    pub shed: u64,
    /// Requests sent again to another server because theirs did not answer (not server errors
    /// unless no server answered).
    pub failed_over: u64,
    /// goose's error table: error → occurrences.
    pub goose: BTreeMap<String, usize>,
}

/// What [`Summary::new`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// goose's metrics.
    pub metrics: &'a GooseMetrics,
    /// The clients' records.
    pub clients: &'a [UserRecord],
    /// The server's listing.
    pub sales: &'a Sales,
    /// The audit.
    pub audit: &'a Audit,
    /// The servers.
    pub hosts: &'a [String],
    /// The price.
    pub price: i64,
    /// When the attack started.
    pub started_at: DateTime<Utc>,
    /// Contract violations counted by clients.
    pub contract_violations: u64,
    /// Server errors counted by clients.
    pub server_errors: u64,
    /// Requests the server shed, counted by clients.
    pub shed: u64,
    /// Requests sent again to another server, counted by clients.
    pub failed_over: u64,
}

impl Summary {
    /// Puts the summary together.
    #[must_use]
    pub fn new(inputs: Inputs<'_>) -> Self {
        let Inputs {
            metrics,
            clients,
            sales,
            audit,
            hosts,
            price,
            started_at,
            contract_violations,
            server_errors,
            shed,
            failed_over,
        } = inputs;
        let seats: Vec<_> = sales.schedules.iter().flat_map(|s| &s.seats).collect();
        let booked: Vec<_> = seats.iter().filter(|s| s.status == SeatStatus::Booked).collect();
        let secs_since_start =
            |at: DateTime<Utc>| (at - started_at).num_milliseconds().max(0) as f64 / 1_000.0;
        let time_to_sell_out_secs = (!seats.is_empty() && booked.len() == seats.len())
            .then(|| booked.iter().filter_map(|s| s.paid_at).max().map(secs_since_start))
            .flatten();
        let selling_secs = time_to_sell_out_secs.unwrap_or(metrics.duration as f64).max(0.001);

        let waits = clients
            .iter()
            .filter_map(|c| Some(c.active_seen_ms?.saturating_sub(c.joined_ms) as f64 / 1_000.0))
            .collect();
        let hold_attempts: u64 = clients.iter().map(|c| u64::from(c.hold_attempts)).sum();
        let hold_conflicts: u64 = clients.iter().map(|c| u64::from(c.hold_conflicts)).sum();
        let mut outcomes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let mut people_per_host: BTreeMap<String, usize> = BTreeMap::new();
        for client in clients {
            let role = match client.role {
                Role::Buyer => "buyer",
                Role::Browser => "browser",
            };
            *outcomes.entry(role.to_owned()).or_default().entry(name_of(client.outcome)).or_default() += 1;
            *people_per_host.entry(client.host.clone()).or_default() += 1;
        }
        let steps = metrics
            .requests
            .iter()
            .map(|(name, aggregate)| {
                let step = Step {
                    count: aggregate.success_count + aggregate.fail_count,
                    failures: aggregate.fail_count,
                    raw_ms: Percentiles::of(&aggregate.raw_data),
                    co_mitigated_ms: aggregate.coordinated_omission_data.as_ref().map(Percentiles::of),
                    statuses: aggregate.status_code_counts.iter().map(|(k, v)| (*k, *v)).collect(),
                };
                (name.clone(), step)
            })
            .collect();
        let goose_errors = metrics
            .errors
            .values()
            .map(|e| (format!("{} {}: {}", e.method, e.name, e.error), e.occurrences))
            .collect();
        Self {
            verdict: audit.verdict,
            run: RunInfo {
                hosts: hosts.to_vec(),
                users: metrics.maximum_users,
                people: clients.len(),
                duration_secs: metrics.duration,
                concert_id: sales.concert_id,
                seats: seats.len(),
                price,
                started_at,
                people_per_host,
            },
            purchases: booked.len(),
            paid_together: clients.iter().map(|c| u64::from(c.paid_together)).sum(),
            purchases_per_second: booked.len() as f64 / selling_secs,
            time_to_sell_out_secs,
            queue_wait_secs: Distribution::of(waits),
            conflicts: Conflicts {
                hold_attempts,
                hold_conflicts,
                hold_conflict_rate: if hold_attempts == 0 {
                    0.0
                } else {
                    hold_conflicts as f64 / hold_attempts as f64
                },
                holds_lapsed: clients.iter().filter(|c| c.outcome == Outcome::HoldLapsed).count(),
            },
            outcomes,
            fifo_inversions: audit.fifo_inversions,
            steps,
            errors: Errors { contract_violations, server_errors, shed, failed_over, goose: goose_errors },
            audit: audit.clone(),
        }
    }

    /// A few lines for the console.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = format!(
            "sale: {} people on {} users, {} seats, {} purchases ({:.1}/s), sold out {}\n",
            self.run.people,
            self.run.users,
            self.run.seats,
            self.purchases,
            self.purchases_per_second,
            self.time_to_sell_out_secs.map_or_else(|| "no".to_owned(), |s| format!("after {s:.1} s")),
        );
        if let Some(wait) = self.queue_wait_secs {
            out.push_str(&format!(
                "queue wait (s): p50 {:.1} p95 {:.1} p99 {:.1} max {:.1} over {} admitted\n",
                wait.p50, wait.p95, wait.p99, wait.max, wait.count
            ));
        }
        out.push_str(&format!(
            "holds: {} tried, {} conflicts ({:.1}%), {} lapsed before payment\n",
            self.conflicts.hold_attempts,
            self.conflicts.hold_conflicts,
            self.conflicts.hold_conflict_rate * 100.0,
            self.conflicts.holds_lapsed
        ));
        out.push_str("step                  count   fail   p50 ms   p95 ms   p99 ms\n");
        for (name, step) in &self.steps {
            out.push_str(&format!(
                "{name:<20} {:>6} {:>6} {:>8.1} {:>8.1} {:>8.1}\n",
                step.count, step.failures, step.raw_ms.p50, step.raw_ms.p95, step.raw_ms.p99
            ));
        }
        out.push_str(&format!(
            "errors: {} contract violations, {} server errors ({} requests shed or rate limited and retried, {} sent \
             again to another server)\n",
            self.errors.contract_violations,
            self.errors.server_errors,
            self.errors.shed,
            self.errors.failed_over
        ));
        out
    }
}

fn name_of(outcome: Outcome) -> String {
    serde_json::to_value(outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}
