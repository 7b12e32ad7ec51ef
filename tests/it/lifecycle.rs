//! Start, shutdown, connection protection.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Agent;

#[tokio::test]
async fn sigterm_with_open_connections_exits_within_5s() {
    let mut agent = Agent::dev("").await;
    // An idle keep-alive connection and a half-sent request stay open during shutdown.
    let _idle = TcpStream::connect(agent.http).await.unwrap();
    let mut half = TcpStream::connect(agent.http).await.unwrap();
    half.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // And an open log stream.
    let mut stream = TcpStream::connect(agent.http).await.unwrap();
    stream
        .write_all(b"GET /v1/agent/monitor?log_level=debug HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let pid = agent.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(8);
    let exit = loop {
        if let Some(exit) = agent.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "agent still running 8 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_limit_per_client_ip() {
    let agent = Agent::dev("limits {\n  http_max_conns_per_client = 3\n}\n").await;
    // Hold three connections, each proven admitted by a served request (connections from the
    // readiness probe may still be counted for a moment, so retry until three are in).
    let mut held = Vec::new();
    for _ in 0..200 {
        if held.len() == 3 {
            break;
        }
        let mut conn = TcpStream::connect(agent.http).await.unwrap();
        conn.write_all(b"GET /v1/agent/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        let got = tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head)).await;
        if matches!(got, Ok(Ok(_))) && &head == b"HTTP/1.1 200" {
            held.push(conn);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(held.len(), 3, "could not hold three connections");
    let mut extra = TcpStream::connect(agent.http).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "over-limit connection was not closed");
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 429 Too Many Requests"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(held);
    // Slots free up once connections close.
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = crate::support::get(agent.http, "/v1/agent/health").await
            && r.status == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ok,
        "agent did not accept connections after the held ones closed"
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let agent = Agent::dev("limits {\n  https_handshake_timeout = \"300ms\"\n}\n").await;
    let mut slow = TcpStream::connect(agent.http).await.unwrap();
    slow.write_all(b"GET /v1/agent/self HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a connection that never finishes its headers stayed open"
    );
    // The agent still serves others.
    assert_eq!(agent.get("/v1/agent/health").await.status, 200);
}

#[tokio::test]
async fn port_in_use_is_a_clear_error() {
    let agent = Agent::dev("").await;
    let s = crate::support::Scratch::new();
    let f = s.write(
        "a.hcl",
        &format!(
            "ports {{\n  http = {}\n  rpc = {}\n}}\n",
            agent.http.port(),
            crate::support::free_port()
        ),
    );
    let out = crate::support::run_caravan(&["agent", "-dev", &format!("-config={f}")], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to bind the HTTP listener"),
        "{stderr}"
    );
}

/// Under a service manager (`NOTIFY_SOCKET`), the agent says `READY=1` once its health check
/// passes and `STOPPING=1` when a signal stops it.
#[tokio::test]
async fn tells_the_service_manager_ready_and_stopping() {
    let scratch = crate::support::Scratch::new();
    let path = scratch.0.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let socket = std::sync::Arc::new(socket);
    let receive = |socket: std::sync::Arc<std::os::unix::net::UnixDatagram>| {
        tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 256];
            let n = socket.recv(&mut buf).expect("a notification within 30 s");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
    };
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap())];
    let mut agent = Agent::start_env(crate::support::Ports::free(), &["-dev"], "", &env).await;
    let ready = receive(socket.clone()).await.unwrap();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert_eq!(agent.get("/v1/agent/health").await.status, 200);
    let pid = agent.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopping = receive(socket).await.unwrap();
    assert_eq!(stopping, "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(8);
    while agent.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "agent still running 8 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `PUT /v1/agent/reload` and SIGHUP re-read the configuration file: the log level changes on
/// the running agent; a broken file is `500` naming it and changes nothing; `GET` is `405`.
#[tokio::test]
async fn reload_changes_the_log_level_and_refuses_a_broken_file() {
    use std::io::BufRead;
    let scratch = crate::support::Scratch::new();
    let ports = crate::support::Ports::free();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], ports.http));
    let write = |level: &str| {
        scratch.write(
            "agent.hcl",
            &format!("{}log_level = \"{level}\"\n", ports.hcl()),
        )
    };
    let config = write("WARN");
    let mut child = std::process::Command::new(crate::support::caravan_bin())
        .args(["agent", "-dev", &format!("-config={config}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    let debug_lines = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("[DEBUG]"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::support::get(http, "/v1/agent/health")
        .await
        .map(|r| r.status)
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "agent not healthy within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call = async |method: &str| {
        crate::support::call(http, method, "/v1/agent/reload", &[], Default::default())
            .await
            .unwrap()
    };
    // Every request is logged at DEBUG: none at WARN.
    let _ = crate::support::get(http, "/v1/agent/self").await;
    assert_eq!(debug_lines(), 0);

    // SIGHUP with DEBUG in the file: requests now show.
    write("DEBUG");
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while debug_lines() == 0 {
        assert!(
            Instant::now() < deadline,
            "no DEBUG line within 10 s of SIGHUP"
        );
        let _ = crate::support::get(http, "/v1/agent/self").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file: 500 naming the file and line, and the agent runs on at DEBUG.
    let broken = write("LOUD");
    let r = call("PUT").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains(&format!("{broken}:6: log_level")),
        "{}",
        r.text()
    );
    assert_eq!(
        crate::support::get(http, "/v1/agent/health")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(call("GET").await.status, 405);

    // PUT with WARN in the file: 200, empty, and requests stop showing.
    write("WARN");
    let r = call("PUT").await;
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = debug_lines();
    for _ in 0..5 {
        let _ = crate::support::get(http, "/v1/agent/self").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        debug_lines(),
        before,
        "DEBUG lines after going back to WARN"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A reload applies `http_api_response_headers` and `enable_debug` to the running agent (and
/// `/v1/agent/self` shows them); a file with a header that cannot be sent is `500` and changes
/// nothing.
#[tokio::test]
async fn reload_applies_response_headers_and_enable_debug() {
    let scratch = crate::support::Scratch::new();
    let write = |debug: bool, headers: &str| {
        scratch.write(
            "live.hcl",
            &format!("enable_debug = {debug}\nhttp_api_response_headers {{\n{headers}}}\n"),
        )
    };
    let file = write(false, "  \"X-Caravan-A\" = \"one\"\n");
    let agent = crate::support::Agent::start(&["-dev", &format!("-config={file}")], "").await;
    agent.wait_leader().await;
    let r = agent.get("/v1/agent/host").await;
    assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
    assert_eq!(r.header("x-caravan-a").as_deref(), Some("one"));

    write(
        true,
        "  \"X-Caravan-A\" = \"two\"\n  \"X-Caravan-B\" = \"three\"\n",
    );
    let r = agent.call("PUT", "/v1/agent/reload", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    let r = agent.get("/v1/agent/host").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-caravan-a").as_deref(), Some("two"));
    assert_eq!(r.header("x-caravan-b").as_deref(), Some("three"));
    let c = agent.get("/v1/agent/self").await.json()["config"].clone();
    assert_eq!(c["EnableDebug"], true);
    assert_eq!(
        c["HTTPAPIResponseHeaders"],
        serde_json::json!({"X-Caravan-A": "two", "X-Caravan-B": "three"})
    );

    // A header name with a space: refused, and nothing changes (debug stays on).
    write(false, "  \"Bad Header\" = \"x\"\n");
    let r = agent.call("PUT", "/v1/agent/reload", &[]).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("Bad Header"), "{}", r.text());
    let r = agent.get("/v1/agent/host").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-caravan-a").as_deref(), Some("two"));
    assert_eq!(
        agent.get("/v1/agent/self").await.json()["config"]["EnableDebug"],
        true
    );
}
