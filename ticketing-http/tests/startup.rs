//! What the real binary refuses at start, and what it reports: settings out of range, demo
//! identity (`TICKETING_AUTH=none`) where it is unsafe, and demo-concert settings that a durable
//! store's existing catalog makes it ignore.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ticketing_core::limits::{ADMIT_BATCH_LIMIT, ADMIT_INTERVAL_MS_MIN, DURATION_SECS_MAX, MAX_ACTIVE_LIMIT};
use ticketing_http::config::{
    DB_POOL_MAX, HOLDS_PER_TOKEN_MAX, REQUEST_TIMEOUT_MS_MAX, REQUEST_TIMEOUT_MS_MIN, SWEEP_MS_MAX,
    TICK_MS_MAX,
};

/// How long a refused start may take before the test decides the server started instead.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// The server binary with only `envs` of ours set, quiet logs without colour.
fn command(envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ticketing-http"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("TICKETING_")) {
        command.env_remove(name);
    }
    command.env("TICKETING_LISTEN", "127.0.0.1:0").env("RUST_LOG", "warn").env("NO_COLOR", "1");
    command.envs(envs.iter().copied());
    command
}

/// Starts the binary with `envs`, expects it to exit non-zero within the deadline, and returns
/// what it wrote to stderr.
fn refused(envs: &[(&str, &str)]) -> String {
    let mut child = command(envs).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if started.elapsed() > EXIT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with {envs:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("read stderr");
    assert!(!status.success(), "{envs:?} exited 0: {stderr}");
    stderr
}

/// A running server whose stdout and stderr lines arrive on one channel; killed when dropped.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(envs: &[(&str, &str)]) -> Self {
        let mut child = command(envs).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take().expect("piped"), tx.clone());
        forward(child.stderr.take().expect("piped"), tx);
        Self { child, lines }
    }

    /// Every line up to the "listening" one, and the address it names.
    fn until_listening(&self) -> (Vec<String>, String) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("never listened: {seen:#?}"));
            if let Some(address) = line.strip_prefix("ticketing listening on http://") {
                return (seen, address.to_owned());
            }
            seen.push(line);
        }
    }
}

/// Sends each line `from` writes to `to`, on a thread of its own, until either side closes.
fn forward(from: impl Read + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to.send(line).is_err() {
                return;
            }
        }
    });
}

#[test]
fn every_numeric_setting_out_of_range_stops_the_server_naming_its_variable_and_range() {
    let ranges: [(&str, u64, u64); 11] = [
        ("TICKETING_HOLD_TTL_SECS", 1, DURATION_SECS_MAX),
        ("TICKETING_HOLDS_PER_TOKEN", 1, HOLDS_PER_TOKEN_MAX.into()),
        ("TICKETING_MAX_ACTIVE", 1, MAX_ACTIVE_LIMIT.into()),
        ("TICKETING_ADMIT_BATCH", 1, ADMIT_BATCH_LIMIT.into()),
        ("TICKETING_ADMIT_INTERVAL_MS", ADMIT_INTERVAL_MS_MIN, DURATION_SECS_MAX * 1_000),
        ("TICKETING_WAITING_IDLE_SECS", 1, DURATION_SECS_MAX),
        ("TICKETING_ACTIVE_TTL_SECS", 1, DURATION_SECS_MAX),
        ("TICKETING_TICK_MS", 1, TICK_MS_MAX),
        ("TICKETING_SWEEP_MS", 1, SWEEP_MS_MAX),
        ("TICKETING_REQUEST_TIMEOUT_MS", REQUEST_TIMEOUT_MS_MIN, REQUEST_TIMEOUT_MS_MAX),
        ("TICKETING_DB_POOL", 1, DB_POOL_MAX.into()),
    ];
    for (variable, min, max) in ranges {
        for bad in [0, max + 1] {
            let stderr = refused(&[(variable, &bad.to_string())]);
            assert!(stderr.contains(variable), "{variable}={bad}: {stderr}");
            assert!(stderr.contains(&format!("{min} to {max}")), "{variable}={bad}: {stderr}");
        }
    }
}

#[test]
fn demo_identity_is_refused_on_a_durable_store() {
    // Refused before any connection is made, so the database need not exist.
    let stderr = refused(&[("TICKETING_STORE", "postgres://postgres@127.0.0.1:5432/postgres")]);
    assert!(stderr.contains("TICKETING_INSECURE_DEMO_AUTH"), "{stderr}");
    assert!(stderr.contains("live queue token") && stderr.contains("durable store"), "says why: {stderr}");
}

#[test]
fn demo_identity_is_refused_on_a_non_loopback_address() {
    let stderr = refused(&[("TICKETING_LISTEN", "0.0.0.0:0")]);
    assert!(stderr.contains("TICKETING_INSECURE_DEMO_AUTH"), "{stderr}");
    assert!(stderr.contains("live queue token") && stderr.contains("not a loopback address"), "{stderr}");
}

#[tokio::test]
async fn demo_identity_starts_on_a_non_loopback_address_when_insisted_on() {
    let server =
        Server::start(&[("TICKETING_LISTEN", "0.0.0.0:0"), ("TICKETING_INSECURE_DEMO_AUTH", "true")]);
    let (_, address) = server.until_listening();
    let port = address.rsplit(':').next().expect("a port");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn demo_settings_a_durable_catalog_ignores_after_a_restart_are_reported() {
    let database = ticketing_core::testing::fresh_postgres().await;
    let durable = [("TICKETING_STORE", database.url.as_str()), ("TICKETING_INSECURE_DEMO_AUTH", "true")];
    let (first, _) = Server::start(&durable).until_listening();
    assert!(!first.iter().any(|line| line.contains("ignored")), "seeded as asked: {first:#?}");

    let restarted =
        [&durable[..], &[("TICKETING_MAX_ACTIVE", "7"), ("TICKETING_ADMIT_BATCH", "10")]].concat();
    let (lines, _) = Server::start(&restarted).until_listening();
    let warning = lines
        .iter()
        .find(|line| line.contains("demo concert settings ignored"))
        .unwrap_or_else(|| panic!("no warning: {lines:#?}"));
    assert!(warning.contains("TICKETING_MAX_ACTIVE=7 (the stored concert has 100)"), "{warning}");
    assert!(!warning.contains("TICKETING_ADMIT_BATCH"), "the stored value, so not ignored: {warning}");
    assert!(warning.contains("PATCH /api/v1/admin/concerts/"), "{warning}");
}
