//! `/v1/agent/monitor` against a real agent: real streams, levels and formats, slow readers.
//! The parameter rules and the token check are caravan-http's monitor table.

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Agent;

/// Opens a monitor stream with a raw connection and returns it after the response head.
async fn open(agent: &Agent, query: &str, rcvbuf: Option<u32>) -> (TcpStream, String) {
    open_full(agent, query, rcvbuf, None).await
}

/// [`open`] with a token.
pub(crate) async fn open_full(
    agent: &Agent,
    query: &str,
    rcvbuf: Option<u32>,
    token: Option<&str>,
) -> (TcpStream, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut s = socket.connect(agent.http).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("X-Nomad-Token: {t}\r\n"));
    let req = format!("GET /v1/agent/monitor?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .expect("response head in time")
            .unwrap();
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// Reads whatever arrives within `window`.
async fn read_for(s: &mut TcpStream, window: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    out
}

/// Reads until `done` holds for what arrived (or 20 s pass, as the other waits on events of a
/// loaded machine: elections, reconcile ticks, relays), then returns it all.
pub(crate) async fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !done(&all) {
        all.extend(read_for(s, Duration::from_millis(100)).await);
    }
    all
}

/// The log text inside a chunked JSON frame stream.
pub(crate) fn decode_frames(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    for part in text.split("\"Data\":\"").skip(1) {
        let b64 = part.split('"').next().unwrap_or("");
        if let Ok(bytes) = engine.decode(b64) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

#[tokio::test]
async fn levels_are_per_subscriber_and_formats_decode() {
    // The agent itself logs only errors; streams still get what they ask for.
    let agent = Agent::dev("log_level = \"ERROR\"\n").await;
    let (mut debug, head) = open(&agent, "log_level=debug", None).await;
    assert!(head.contains("content-type: application/json"), "{head}");
    let (mut warn, _) = open(&agent, "log_level=warn", None).await;
    let (mut plain, head) = open(&agent, "log_level=debug&plain=true", None).await;
    assert!(head.contains("content-type: text/plain\r\n"), "{head}");
    let (mut json, _) = open(
        &agent,
        "log_level=debug&log_json=true&log_include_location=true",
        None,
    )
    .await;
    let r = agent
        .get("/v1/agent/host?node_id=%3Cscript%3Ealert(1)%3C/script%3E")
        .await;
    assert_eq!(r.status, 404);
    let debug_text = decode_frames(
        &read_until(&mut debug, |b| {
            decode_frames(b).contains("[DEBUG] http: request complete")
        })
        .await,
    );
    assert!(
        debug_text.contains("[DEBUG] http: request complete"),
        "{debug_text}"
    );
    let warn_text = decode_frames(&read_for(&mut warn, Duration::from_millis(300)).await);
    assert!(!warn_text.contains("[DEBUG]"), "{warn_text}");
    let plain_raw = String::from_utf8_lossy(
        &read_until(&mut plain, |b| {
            String::from_utf8_lossy(b).contains("</script>")
        })
        .await,
    )
    .into_owned();
    assert!(
        plain_raw.contains("<script>alert(1)</script>"),
        "verbatim in plain mode: {plain_raw}"
    );
    let json_text = decode_frames(
        &read_until(&mut json, |b| decode_frames(b).contains("request complete")).await,
    );
    let line = json_text
        .lines()
        .find(|l| l.contains("request complete"))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["@level"], "debug");
    assert_eq!(v["@module"], "http");
    assert!(v["@caller"].as_str().unwrap().contains(".rs:"));
    assert!(v["@timestamp"].is_string());
}

#[tokio::test]
async fn a_reader_that_never_reads_slows_nothing_and_learns_of_drops() {
    let agent = Agent::dev("").await;
    let (mut stalled, _) = open(&agent, "log_level=debug&plain=true", Some(4096)).await;
    // Flood the log with long lines while the stream is not read, far past what socket
    // buffers and the 512-line buffer hold.
    let long = format!("/v1/agent/nope?{}", "x".repeat(4000));
    for _ in 0..3000 {
        let _ = crate::support::get(agent.http, &long).await;
    }
    let started = Instant::now();
    let r = agent.get("/v1/agent/health").await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    eprintln!("/health with a stalled monitor reader answered in {took:?}");
    // A logger blocked on the stalled stream would hold the request for good; 5 s tells that
    // from a loaded machine's stall.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !seen.contains("Monitor dropped") {
        seen.push_str(&String::from_utf8_lossy(
            &read_for(&mut stalled, Duration::from_millis(500)).await,
        ));
        let _ = crate::support::get(agent.http, "/v1/agent/health").await;
    }
    assert!(seen.contains("[WARN] Monitor dropped "), "no drop notice");
}
