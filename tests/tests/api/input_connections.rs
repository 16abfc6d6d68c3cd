//! Connections that are slow, huge, too many, or open at shutdown, driven over raw TCP.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasksync_tests::TestStack;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::logged;

fn address(stack: &TestStack) -> String {
    stack
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api")
        .to_string()
}

/// The first bytes the server answers on `stream`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut buffer = vec![0u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// Everything the server sends until it closes the connection, within `patience`.
async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(patience, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the connection was still open after {patience:?}; received {:?}",
            String::from_utf8_lossy(&received)
        )
    });
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_after_the_header_timeout() {
    let stack = TestStack::start_with(|s| s.http_header_timeout = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(address(&stack)).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let started = Instant::now();
    let request = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ".repeat(20);
    let trickle = async {
        for byte in request {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let closed = async {
        let mut buffer = [0u8; 64];
        matches!(reader.read(&mut buffer).await, Ok(0) | Err(_))
    };
    let closed = tokio::select! {
        closed = closed => closed,
        () = trickle => false,
    };
    assert!(closed, "the server closed the connection");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "not before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408_with_the_error_body() {
    let stack =
        TestStack::start_with(|s| s.http_request_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(address(&stack)).await.unwrap();
    stream
        .write_all(
            b"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n{\"title\": ",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let response = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive within 500 ms"),
        "{body}"
    );
    assert_eq!(body["path"], "/api/tasks");
    assert_eq!(logged(&stack).await, 0);
}

#[tokio::test]
async fn an_answer_not_ready_by_the_request_deadline_is_a_503_with_the_error_body() {
    // Misconfigured on purpose: the write waits longer for the worker than the deadline allows.
    let mut stack = TestStack::start_with(|s| {
        s.http_request_timeout = Duration::from_millis(400);
        s.write_wait = Duration::from_secs(20);
    })
    .await;
    stack.stop_worker().await;
    let started = Instant::now();
    let reply = stack.create_task(json!({"title": "waits"})).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    let message = reply.error_message("/api/tasks");
    assert!(message.contains("not answered within 400 ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_a_413_at_once_without_100_continue() {
    let stack = TestStack::start().await;
    let mut stream = TcpStream::connect(address(&stack)).await.unwrap();
    stream
        .write_all(
            b"PUT /api/tasks/6f1c2b0e-4a57-4c8e-9a57-0c7f3f0c2b11 HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 9223372036854775808\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let response = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(!response.contains("100 Continue"), "{response}");
    assert!(response.contains("9223372036854775808"), "{response}");
    assert!(response.contains("\"path\":\"/api/tasks/"), "{response}");
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_by_hyper_with_431() {
    let stack = TestStack::start().await;
    let mut stream = TcpStream::connect(address(&stack)).await.unwrap();
    let head = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let response = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    // hyper's own answer, without our error body (documented in the api's `server` module).
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let mut stack = TestStack::start_with(|s| s.http_max_connections = 1).await;
    // Let go of the client's pooled connection, so that the one slot is free.
    stack.http = reqwest::Client::new();
    let request = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut holder = TcpStream::connect(address(&stack)).await.unwrap();
    holder.write_all(request).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), read_head(&mut holder))
        .await
        .expect("the first connection is served");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // The holder keeps its connection open (keep-alive): the next one waits for the slot.
    let mut waiting = TcpStream::connect(address(&stack)).await.unwrap();
    waiting.write_all(request).await.unwrap();
    let mut buffer = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buffer)).await;
    assert!(early.is_err(), "over the cap, no answer yet: {early:?}");

    drop(holder);
    let second = tokio::time::timeout(Duration::from_secs(10), read_head(&mut waiting))
        .await
        .expect("served once the slot is free");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

#[tokio::test]
async fn a_silent_connection_does_not_hold_up_shutdown_past_the_header_timeout() {
    let stack = TestStack::start().await;
    let mut settings = stack.settings.clone();
    settings.http_header_timeout = Duration::from_millis(500);
    let extra = stack.spawn_api(settings).await;
    let silent = TcpStream::connect(
        extra
            .base
            .trim_start_matches("http://")
            .trim_end_matches("/api"),
    )
    .await
    .unwrap();
    // Connections are accepted in order: once a later one is answered, the silent one is in.
    assert_eq!(extra.api.health().await.status, 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), extra.stop())
        .await
        .expect("the api stops although a connection never sent its request");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn a_stopping_api_finishes_the_request_in_flight() {
    let mut stack = TestStack::start_with(|s| s.write_wait = Duration::from_millis(1_500)).await;
    stack.stop_worker().await;
    let extra = stack.spawn_api(stack.settings.clone()).await;
    stack
        .eventually("the second api is ready", || extra.api.is_ready())
        .await;
    let api = extra.api.clone();
    let in_flight =
        tokio::spawn(async move { api.create_task(json!({"title": "in flight"})).await });
    stack
        .eventually("the write is published", || async {
            stack.queue_depth(&stack.topology().work_queue()).await == 1
        })
        .await;
    tokio::time::timeout(Duration::from_secs(10), extra.stop())
        .await
        .expect("the api stops once its request is answered");
    let answer = in_flight.await.expect("answered, not cut");
    assert_eq!(answer.status, 202, "{answer:?}");
}
