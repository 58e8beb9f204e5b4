//! Fresh, isolated backends on real servers, for tests (feature `testing`).
//!
//! - PostgreSQL: every call to [`fresh_postgres`] creates a new database from a template that
//!   was migrated once per process, and drops it when the returned guard is dropped (also when
//!   the test panics). URL from `TICKETING_TEST_POSTGRES_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`.
//! - MySQL / MariaDB: every call to `fresh_mysql` creates and migrates a new database and
//!   drops it with its guard. URL from `TICKETING_TEST_MYSQL_URL`, default
//!   `mysql://root@127.0.0.1:3306/test`.
//! - Redis: every call to [`fresh_redis_prefix`] returns a new key prefix. URL from
//!   `TICKETING_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
//!
//! A server that cannot be reached makes the test panic with the command that starts it: a
//! backend under test never passes by being absent.

#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_ENV: &str = "TICKETING_TEST_POSTGRES_URL";
/// The environment variable naming the MySQL / MariaDB server for tests.
pub const MYSQL_URL_ENV: &str = "TICKETING_TEST_MYSQL_URL";
/// The environment variable naming the Redis server for tests.
pub const REDIS_URL_ENV: &str = "TICKETING_TEST_REDIS_URL";

const POSTGRES_START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
const MYSQL_START: &str = "install -d -o mysql -g mysql /run/mysqld && start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql  (or scripts/test.sh, which also installs it)";
const REDIS_START: &str = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log";

#[cfg(any(feature = "postgres", feature = "mysql"))]
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL server URL for tests.
#[must_use]
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_ENV)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis server URL for tests.
#[must_use]
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_ENV).unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A new key prefix, unique in this process and across processes.
#[must_use]
pub fn fresh_redis_prefix() -> String {
    format!("tkt-test:{}:{}:", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// A Redis connection for tests.
///
/// # Panics
/// When Redis cannot be reached, saying how to start it.
#[cfg(feature = "redis")]
pub async fn redis_connection() -> ::redis::aio::ConnectionManager {
    let url = redis_url();
    match crate::store::redis::connect(&url).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "Redis at {url} is unreachable ({error}). Start it with: {REDIS_START}  (or set {REDIS_URL_ENV})"
        ),
    }
}

/// A database that is dropped with this guard.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct FreshDatabase {
    /// Its URL.
    pub url: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_to_completion(async move {
            if let Ok(mut admin) = admin().await {
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::Executor::execute(&mut admin, drop.as_str()).await;
            }
        });
    }
}

/// Runs a future to completion from synchronous code that may itself be inside a runtime (a
/// `Drop`): on a thread of its own, with a runtime of its own.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn run_to_completion(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(work);
        }
    })
    .join();
}

#[cfg(feature = "postgres")]
async fn admin() -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&postgres_url()).await
}

#[cfg(feature = "postgres")]
fn url_for(database: &str) -> String {
    let base = postgres_url();
    match base.rfind('/') {
        Some(i) if base[..i].contains("://") && i > base.find("://").map_or(0, |j| j + 2) => {
            let (head, tail) = base.split_at(i);
            let query = tail.find('?').map_or("", |q| &tail[q..]);
            format!("{head}/{database}{query}")
        }
        _ => format!("{base}/{database}"),
    }
}

/// Whether the test database `name` (`tkt_<pid>_…`) was left by a test process that is no
/// longer running, so it may be dropped. Databases of this process and of live concurrent runs
/// are kept (MySQL drops a database in use, and a PostgreSQL template is idle between clones).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn left_by_a_finished_run(name: &str) -> bool {
    let Some(pid) = name.strip_prefix("tkt_").and_then(|rest| rest.split('_').next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The migrated template, created once per process.
#[cfg(feature = "postgres")]
async fn template() -> &'static str {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            use sqlx::{Connection, Executor};
            let url = postgres_url();
            let mut admin = match admin().await {
                Ok(conn) => conn,
                Err(error) => panic!(
                    "PostgreSQL at {url} is unreachable ({error}). Start it with: {POSTGRES_START}  (or set {POSTGRES_URL_ENV})"
                ),
            };
            let pid = std::process::id();
            // Databases left by earlier runs that died before dropping them. A concurrent run's
            // are left alone: its template is idle between clones and would drop.
            let stale: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tkt\\_%'")
                .fetch_all(&mut admin)
                .await
                .expect("list databases");
            for name in stale.iter().filter(|n| left_by_a_finished_run(n)) {
                let _ = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\"").as_str()).await;
            }
            let name = format!("tkt_{pid}_template");
            admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await.expect("drop template");
            admin.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.expect("create template");
            let mut conn = sqlx::PgConnection::connect(&url_for(&name)).await.expect("connect template");
            migrations::POSTGRES.run(&mut conn).await.expect("migrate template");
            conn.close().await.expect("close template");
            name
        })
        .await
}

/// A new, migrated, empty database.
///
/// # Panics
/// When PostgreSQL cannot be reached, saying how to start it.
#[cfg(feature = "postgres")]
pub async fn fresh_postgres() -> FreshDatabase {
    use sqlx::Executor;
    let template = template().await;
    let name = format!("tkt_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut admin = admin().await.expect("connect to PostgreSQL");
    admin
        .execute(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"").as_str())
        .await
        .expect("create a fresh database");
    FreshDatabase { url: url_for(&name), name }
}

/// A [`crate::store::postgres::PgStore`] over a fresh database, with its guard.
///
/// # Panics
/// When PostgreSQL cannot be reached.
#[cfg(feature = "postgres")]
pub async fn fresh_pg_store(
    strategy: crate::store::postgres::ClaimStrategy,
) -> (crate::store::postgres::PgStore, FreshDatabase) {
    let database = fresh_postgres().await;
    // Tests race a thousand tasks on two cores while other tests run: waiting for a connection
    // is part of the test, so the pool waits longer than a server's would before giving up.
    let options = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(std::time::Duration::from_secs(60));
    let store = crate::store::postgres::PgStore::connect_with(&database.url, options, strategy)
        .await
        .expect("connect to the fresh database");
    (store, database)
}

/// The MySQL / MariaDB server URL for tests.
#[must_use]
pub fn mysql_url() -> String {
    std::env::var(MYSQL_URL_ENV).unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// A MySQL database that is dropped with this guard.
#[cfg(feature = "mysql")]
#[derive(Debug)]
pub struct FreshMysql {
    /// Its URL.
    pub url: String,
    name: String,
}

#[cfg(feature = "mysql")]
async fn mysql_admin() -> Result<sqlx::MySqlConnection, sqlx::Error> {
    use sqlx::Connection;
    sqlx::MySqlConnection::connect(&mysql_url()).await
}

#[cfg(feature = "mysql")]
impl Drop for FreshMysql {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_to_completion(async move {
            if let Ok(mut admin) = mysql_admin().await {
                let _ =
                    sqlx::Executor::execute(&mut admin, format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                        .await;
            }
        });
    }
}

/// A new, migrated, empty MySQL / MariaDB database.
///
/// # Panics
/// When the server cannot be reached, saying how to start it.
#[cfg(feature = "mysql")]
pub async fn fresh_mysql() -> FreshMysql {
    use sqlx::{Connection, Executor};
    let url = mysql_url();
    let mut admin = match mysql_admin().await {
        Ok(conn) => conn,
        Err(error) => {
            panic!(
                "MySQL/MariaDB at {url} is unreachable ({error}). Start it with: {MYSQL_START}  (or set {MYSQL_URL_ENV})"
            )
        }
    };
    static CLEANED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let pid = std::process::id();
    if !CLEANED.swap(true, Ordering::Relaxed) {
        // Databases left by earlier runs that died before dropping them.
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'tkt\\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .expect("list databases");
        for name in names.iter().filter(|n| left_by_a_finished_run(n)) {
            let _ = admin.execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str()).await;
        }
    }
    let name = format!("tkt_{pid}_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    // Not the server's default collation, on purpose: the schema and the step procedures must
    // not depend on the database's defaults (a procedure's string parameters take them unless
    // they say otherwise, and then compare with the tables' columns as an illegal mix).
    admin
        .execute(
            format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci").as_str(),
        )
        .await
        .expect("create a fresh database");
    let database_url = match url.rfind('/') {
        Some(i) if i > url.find("://").map_or(0, |j| j + 2) => format!("{}/{name}", &url[..i]),
        _ => format!("{url}/{name}"),
    };
    let mut conn =
        sqlx::MySqlConnection::connect(&database_url).await.expect("connect to the fresh database");
    migrations::MYSQL.run(&mut conn).await.expect("migrate the fresh database");
    conn.close().await.expect("close");
    FreshMysql { url: database_url, name }
}

/// A [`crate::store::mysql::MyStore`] over a fresh database, with its guard.
///
/// # Panics
/// When the server cannot be reached.
#[cfg(feature = "mysql")]
pub async fn fresh_my_store(
    strategy: crate::store::mysql::ClaimStrategy,
) -> (crate::store::mysql::MyStore, FreshMysql) {
    let database = fresh_mysql().await;
    // As for PostgreSQL: in tests, waiting for a connection is part of the race.
    let options = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(std::time::Duration::from_secs(60));
    let store = crate::store::mysql::MyStore::connect_with(&database.url, options, strategy)
        .await
        .expect("connect to the fresh database");
    (store, database)
}

/// A TCP proxy for tests, in front of a real server: it counts its clients' turns (each time a
/// client sends after the server answered is one round trip) and can take the server away
/// (`set_up(false)` cuts every open connection and closes new ones at once) and bring it back,
/// or make it hang (`set_stalled(true)`: nothing is forwarded either way until it is lifted).
#[derive(Debug)]
pub struct TcpProxy {
    /// Where clients connect.
    pub address: std::net::SocketAddr,
    turns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    up: tokio::sync::watch::Sender<bool>,
    stalled: tokio::sync::watch::Sender<bool>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` on a free loopback port, up.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let address = listener.local_addr().expect("the proxy's address");
        let turns = Arc::new(AtomicU64::new(0));
        let (up, _) = tokio::sync::watch::channel(true);
        let (stalled, _) = tokio::sync::watch::channel(false);
        let (counted, watch, stall) = (Arc::clone(&turns), up.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut live = watch.subscribe();
                if !*live.borrow_and_update() {
                    continue; // down: the client is closed at once
                }
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let client_talking = Arc::new(AtomicBool::new(false));
                let (talking, turns) = (Arc::clone(&client_talking), Arc::clone(&counted));
                let (mut stall_up, mut stall_down) = (stall.subscribe(), stall.subscribe());
                let upstream_half = async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        if stall_up.wait_for(|stalled| !*stalled).await.is_err() {
                            break;
                        }
                        if !talking.swap(true, Ordering::SeqCst) {
                            turns.fetch_add(1, Ordering::SeqCst);
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let downstream_half = async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        if stall_down.wait_for(|stalled| !*stalled).await.is_err() {
                            break;
                        }
                        client_talking.store(false, Ordering::SeqCst);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::spawn(async move {
                    // Either half ending, or the proxy going down, drops both sockets.
                    tokio::select! {
                        () = upstream_half => {}
                        () = downstream_half => {}
                        _ = live.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { address, turns, up, stalled }
    }

    /// The turns counted so far, over every connection.
    #[must_use]
    pub fn turns(&self) -> u64 {
        self.turns.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the server away (`false`: open connections are cut, new ones closed at once) or
    /// brings it back.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// Makes the server hang (`true`: bytes are held, either way, until `false`).
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

/// The first address `host:port` resolves to.
///
/// # Panics
/// When it does not resolve.
pub async fn resolve(host: &str, port: u16) -> std::net::SocketAddr {
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .unwrap_or_else(|| panic!("{host}:{port} does not resolve"))
}
