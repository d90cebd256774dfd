//! The fault proxy of the network-fault tests works: through a Toxiproxy
//! proxy to a small TCP echo server, data goes round, a `latency` toxic
//! slows it, `clear` undoes that, a disabled proxy is down (its
//! connections closed, new ones refused) and comes back when enabled, and
//! a `reset_peer` toxic resets connections.

use std::io;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::toxiproxy::Toxiproxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server on a free port of 127.0.0.1: its address.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the echo server");
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// One message sent on `conn` and read back; errors with `TimedOut`
/// after 5 s.
async fn echo(conn: &mut TcpStream) -> io::Result<()> {
    let round = async {
        conn.write_all(b"ping\n").await?;
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping\n", "the echo");
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), round)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// A round trip on a new connection to `addr`: how long it took.
async fn round_trip(addr: &str) -> io::Result<Duration> {
    let started = Instant::now();
    let mut conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
    echo(&mut conn).await?;
    Ok(started.elapsed())
}

/// Asserts that `result` failed at once (refused, reset or closed), not
/// after a timeout.
fn assert_failed_fast(result: io::Result<Duration>, what: &str) {
    match result {
        Ok(took) => panic!("{what}: the round trip worked ({took:?})"),
        Err(e) => {
            assert_ne!(e.kind(), io::ErrorKind::TimedOut, "{what}: it hung instead of failing");
            eprintln!("{what}: {e} ({:?})", e.kind());
        }
    }
}

#[tokio::test]
async fn faults_through_the_proxy() {
    let toxiproxy = Toxiproxy::start().await;
    let upstream = echo_server().await;
    let proxy = toxiproxy.proxy("echo", &upstream).await;
    assert_ne!(proxy.listen, upstream);

    let took = round_trip(&proxy.listen).await.expect("a round trip through the proxy");
    eprintln!("plain: {took:?}");

    proxy
        .toxic("slow", "latency", "downstream", 1.0, json!({ "latency": 300 }))
        .await;
    let took = round_trip(&proxy.listen).await.expect("a round trip with latency");
    eprintln!("latency 300 ms: {took:?}");
    assert!(took >= Duration::from_millis(250), "latency 300 ms, yet {took:?}");

    proxy.clear().await;
    let took = round_trip(&proxy.listen).await.expect("a round trip after clear");
    eprintln!("cleared: {took:?}");

    // Down: an open connection is closed, a new one refused.
    let mut open = TcpStream::connect(&proxy.listen).await.expect("connect");
    echo(&mut open).await.expect("a round trip before the outage");
    proxy.set_enabled(false).await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
        .await
        .expect("the open connection is closed at once, not left hanging");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the open connection still delivers data: {read:?}"
    );
    assert_failed_fast(round_trip(&proxy.listen).await, "disabled");

    proxy.set_enabled(true).await;
    let took = round_trip(&proxy.listen)
        .await
        .expect("a round trip after enabling again");
    eprintln!("enabled again: {took:?}");

    proxy
        .toxic("reset", "reset_peer", "upstream", 1.0, json!({ "timeout": 0 }))
        .await;
    assert_failed_fast(round_trip(&proxy.listen).await, "reset_peer");

    proxy.remove_toxic("reset").await;
    round_trip(&proxy.listen)
        .await
        .expect("a round trip after removing the reset");
}
