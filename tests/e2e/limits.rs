//! What a slow or sloppy client cannot do: hold a connection (or shutdown)
//! with half a request, or get an error that is not the documented JSON.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::start;

/// Open a raw connection to the server behind `url` (`http://host:port`).
fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Everything the server sends until it closes the connection (or the
/// read timeout passes), and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn status_and_json(answer: &str) -> (u16, Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn half_sent_requests_are_cut_off() {
    let s = start(&["--header-timeout-ms", "500", "--body-timeout-ms", "500"]);
    // Half a head: the connection is closed once the header timeout passes.
    let mut head = connect(&s.url);
    head.write_all(b"POST /topics HTTP/1.1\r\nHost: weir\r\n")
        .unwrap();
    let (_, waited) = read_until_closed(&mut head);
    assert!(
        waited < Duration::from_secs(5),
        "held for {waited:?} on half a head"
    );
    // A whole head and half a body: 408 in JSON once the body timeout passes.
    let mut body = connect(&s.url);
    body.write_all(
        b"POST /topics HTTP/1.1\r\nHost: weir\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"name\":",
    )
    .unwrap();
    let (answer, waited) = read_until_closed(&mut body);
    assert!(waited < Duration::from_secs(5), "held for {waited:?}");
    let (status, json) = status_and_json(&answer);
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (408, Some("request_timeout")),
        "{answer}"
    );
    // The server still answers, and nothing was created.
    assert_eq!(s.get("/topics").json["topics"], serde_json::json!([]));
}

#[test]
fn shutdown_does_not_wait_for_a_slow_client() {
    let mut s = start(&["--shutdown-timeout-ms", "1000"]);
    let mut slow = connect(&s.url);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: weir\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = s.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for half a request",
        started.elapsed()
    );
}

#[test]
fn errors_before_routing_are_json() {
    let s = start(&[]);
    let long_uri = format!("/topics/{}", "x".repeat(10_000));
    let mut conn = connect(&s.url);
    write!(
        conn,
        "GET {long_uri} HTTP/1.1\r\nHost: weir\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let (answer, _) = read_until_closed(&mut conn);
    let (status, json) = status_and_json(&answer);
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (414, Some("uri_too_long")),
        "{answer}"
    );

    let mut conn = connect(&s.url);
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: weir\r\nconnection: close\r\n");
    for i in 0..150 {
        head.push_str(&format!("x-filler-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let (answer, _) = read_until_closed(&mut conn);
    let (status, json) = status_and_json(&answer);
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (431, Some("headers_too_large")),
        "{answer}"
    );

    // A JSON route refuses a body that says it is something else.
    let r = s.post_bytes("/topics", "text/plain", b"{\"name\": \"t\"}");
    assert_eq!((r.status, r.code()), (415, "unsupported_media_type"));
    assert_eq!(s.get("/topics").json["topics"], serde_json::json!([]));
}
