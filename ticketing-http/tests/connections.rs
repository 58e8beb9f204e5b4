//! Connections cannot be hoarded: a client that sends its headers a byte at a time, or opens a
//! connection and says nothing, is cut off after the header-read timeout; at most
//! `max_connections` are open at once, and the server keeps answering everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use ticketing_core::store::memory::MemoryStore;
use ticketing_core::{Config, ManualClock, Ticketing};
use ticketing_http::auth::AuthMode;
use ticketing_http::{AppState, ConnectionLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for something that must happen before it calls it a failure (a bound
/// on liveness, far above what it takes).
const LIVENESS: Duration = Duration::from_secs(30);

/// A cut-off under test must come well before this: hyper's own header-read timeout (30 s,
/// once a timer is set) must not be what cuts the client.
const BEFORE_HYPERS_DEFAULT: Duration = Duration::from_secs(10);

/// Starts a server with these limits and returns its address.
async fn server(limits: ConnectionLimits) -> String {
    server_with(limits, ticketing_http::shed::IN_FLIGHT_MAX_DEFAULT).await
}

/// [`server`] with a bound on requests in flight.
async fn server_with(limits: ConnectionLimits, max_in_flight: usize) -> String {
    let store = MemoryStore::new();
    let service =
        Ticketing::new(store.clone(), store, ManualClock::at_epoch_secs(1_900_000_000), Config::default());
    let state = AppState::new(service, AuthMode::None, None, Duration::from_secs(10))
        .with_connection_limits(limits)
        .with_max_in_flight(max_in_flight);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(ticketing_http::serve(listener, Arc::new(state), std::future::pending()));
    address
}

/// Waits until the server closes `stream` (a read returns end of file or an error), well before
/// hyper's default would.
async fn closed_by_the_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0_u8; 1024];
    tokio::time::timeout(BEFORE_HYPERS_DEFAULT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn healthz(client: &reqwest::Client, address: &str) -> reqwest::Result<reqwest::StatusCode> {
    client.get(format!("http://{address}/healthz")).send().await.map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_silent_client_is_cut_off_and_the_server_keeps_answering() {
    let address =
        server(ConnectionLimits { header_read_timeout: Duration::from_millis(500), max_connections: 100 })
            .await;

    // One client sends a request head a byte at a time, for far longer than the timeout.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.split();
    let dribble = async {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ".iter().chain(std::iter::repeat(&b'a'))
        {
            if slow_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let cut_off = async {
        let mut buf = [0_u8; 1024];
        loop {
            match slow_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    // Another opens a connection and says nothing.
    let mut silent = TcpStream::connect(&address).await.unwrap();
    // Meanwhile everyone else is answered.
    let client = reqwest::Client::new();
    assert_eq!(healthz(&client, &address).await.unwrap(), 200);

    let slow_cut = tokio::time::timeout(BEFORE_HYPERS_DEFAULT, async {
        tokio::select! {
            () = cut_off => true,
            () = dribble => false,
        }
    })
    .await;
    assert_eq!(slow_cut, Ok(true), "the client sending its head a byte at a time was cut off");
    assert!(closed_by_the_server(&mut silent).await, "the silent connection was closed");
    // A keep-alive connection answered once and then left idle is closed too.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0_u8; 1024];
    let n = tokio::time::timeout(LIVENESS, idle.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(closed_by_the_server(&mut idle).await, "the idle keep-alive connection was closed");
    assert_eq!(healthz(&reqwest::Client::new(), &address).await.unwrap(), 200, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_connections_are_open_and_a_closed_one_makes_room() {
    let address =
        server(ConnectionLimits { header_read_timeout: Duration::from_secs(120), max_connections: 2 }).await;
    let mut hoarders =
        vec![TcpStream::connect(&address).await.unwrap(), TcpStream::connect(&address).await.unwrap()];
    // Both hoarders are accepted (a request on one of them is answered) …
    hoarders[0].write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0_u8; 1024];
    let n = tokio::time::timeout(LIVENESS, hoarders[0].read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));

    // … so a third connection waits: its request is not answered while both stay open …
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let waiting = tokio::spawn({
        let (client, address) = (client.clone(), address.clone());
        async move { healthz(&client, &address).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "a third connection was served past the cap of two");

    // … and is answered once one of them closes.
    drop(hoarders.pop());
    let answered = tokio::time::timeout(LIVENESS, waiting).await.expect("answered once a connection closed");
    assert_eq!(answered.unwrap().unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slowly_holds_its_connection_but_no_place_others_need() {
    // Four places, one kept for payments: three requests in flight would fill the rest.
    let address = server_with(ConnectionLimits::default(), 4).await;
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(
                b"POST /api/v1/queue/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"",
            )
            .await
            .unwrap();
        stalled.push(stream);
    }
    // Give the server every chance to have taken them in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let answer = client.get(format!("http://{address}/api/v1/concerts")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "requests whose bodies have not arrived take no place");
    }
}
