//! `log_file` and `/v1/agent/monitor/export` against a real agent: the file the agent writes
//! (its modes, its rotation) and what the export and `caravan monitor export` read back. The
//! parameter rules are caravan-http's export table.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::{Agent, Scratch, cli};

/// The decoded `Data` of an export's frames, with each frame's `Offset`.
fn frames(raw: &[u8]) -> (Vec<u8>, Vec<i64>) {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for frame in serde_json::Deserializer::from_slice(raw).into_iter::<serde_json::Value>() {
        let frame = frame.expect("a JSON frame");
        if let Some(d) = frame["Data"].as_str() {
            data.extend(engine.decode(d).expect("base64"));
            offsets.push(frame["Offset"].as_i64().expect("an offset"));
        }
    }
    (data, offsets)
}

/// Reads the log file until it contains `needle` (bounded).
fn wait_for_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {}: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn export_reads_back_the_log_file() {
    let scratch = Scratch::new();
    let dir = scratch.0.join("logs");
    let agent = Agent::dev(&format!("log_file = \"{}/\"\n", dir.display())).await;
    let path = dir.join("nomad.log");
    // A marker request, logged at DEBUG (the dev agent's level) by the HTTP layer.
    agent.get("/v1/agent/self?export-marker").await;
    let written = wait_for_line(&path, "export-marker");
    assert!(written.contains("agent started"), "{written}");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Plain: the file's bytes as they were when the export read them (the agent logs on).
    let plain = agent
        .get("/v1/agent/monitor/export?on_disk=true&plain=true")
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("content-type").as_deref(), Some("text/plain"));
    let now = std::fs::read(&path).unwrap();
    assert!(
        plain.body.len() >= written.len(),
        "the export holds what was written"
    );
    assert_eq!(
        plain.body[..],
        now[..plain.body.len()],
        "the export is the file's start"
    );

    // Framed: the same bytes, with cumulative offsets ending at the byte count.
    let framed = agent.get("/v1/agent/monitor/export?on_disk=true").await;
    assert_eq!(framed.status, 200, "{}", framed.text());
    assert_eq!(
        framed.header("content-type").as_deref(),
        Some("application/json")
    );
    let (data, offsets) = frames(&framed.body);
    assert!(
        data.starts_with(&plain.body),
        "framed and plain exports agree"
    );
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert_eq!(offsets.last().copied(), Some(data.len() as i64));
    assert!(
        offsets[..offsets.len() - 1]
            .iter()
            .enumerate()
            .all(|(i, o)| *o == 1024 * (i as i64 + 1))
    );

    // This server, named.
    let name = agent.get("/v1/agent/self").await.json()["member"]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    let named = agent
        .get(&format!(
            "/v1/agent/monitor/export?on_disk=true&plain=true&server_id={name}"
        ))
        .await;
    assert_eq!(named.status, 200, "{}", named.text());
    assert!(String::from_utf8_lossy(&named.body).contains("export-marker"));

    // The CLI prints the decoded file.
    let out = cli(agent.http, &["monitor", "export", "-on-disk=true"], &[]).await;
    let printed = crate::support::stdout_ok(&out);
    assert!(
        printed.contains("export-marker") && printed.contains("agent started"),
        "{printed}"
    );
    let out = cli(agent.http, &["monitor", "export"], &[]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Either -service-name or -on-disk must be set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn without_a_log_file_the_export_says_so() {
    let agent = Agent::dev("").await;
    let r = agent.get("/v1/agent/monitor/export?on_disk=true").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "No nomad log file defined")
    );
    let out = cli(agent.http, &["monitor", "export", "-on-disk"], &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No nomad log file defined"));
}

#[tokio::test]
async fn the_log_file_rotates_and_keeps_max_files() {
    let scratch = Scratch::new();
    let dir = scratch.0.join("logs");
    let agent = Agent::dev(&format!(
        "log_file = \"{}/agent.log\"\nlog_rotate_bytes = 2000\nlog_rotate_max_files = 2\n",
        dir.display()
    ))
    .await;
    for i in 0..60 {
        agent.get(&format!("/v1/agent/self?rotation-{i}")).await;
    }
    // The agent's own lines (DEBUG in dev mode) go on arriving: the last request's line may be
    // rotated away already, and a rotation renames before it prunes, so both are waited for.
    let list = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let names = loop {
        let names = list();
        let logged = names
            .iter()
            .any(|n| std::fs::read_to_string(dir.join(n)).is_ok_and(|t| t.contains("rotation-59")));
        let rotated = names.iter().filter(|n| n.starts_with("agent-")).count();
        if logged && rotated == 2 {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "the last request logged ({logged}) and two rotated files kept: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rotated: Vec<&String> = names.iter().filter(|n| n.starts_with("agent-")).collect();
    assert!(rotated.iter().all(|n| n.ends_with(".log")), "{names:?}");
    for name in &names {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    // The export reads the active file only, as Nomad's.
    let r = agent
        .get("/v1/agent/monitor/export?on_disk=true&plain=true")
        .await;
    assert!(!r.text().contains("rotation-0 "), "{}", r.text());
    assert!(r.body.len() < 4000, "{}", r.body.len());
}

/// Journald mode runs `journalctl` with Nomad's arguments; here a stand-in on the agent's
/// `PATH` echoes them, and with `-f` waits until the export's reader goes away, which must end
/// it.
#[tokio::test]
async fn journald_mode_runs_journalctl_and_ends_it_with_the_stream() {
    use crate::support::Ports;
    let bin = Scratch::new();
    let pidfile = bin.0.join("pid");
    let script = format!(
        "#!/bin/sh\necho \"args: $*\"\nif [ \"$5\" = \"-f\" ]; then\n  echo $$ > {}\n  echo following\n  exec sleep 30\nfi\n",
        pidfile.display()
    );
    let fake = bin.write("journalctl", &script);
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.0.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let agent = Agent::start_env(Ports::free(), &["-dev"], "", &[("PATH", path.as_str())]).await;

    let r = agent
        .get("/v1/agent/monitor/export?service_name=nomad.service&logs_since=90m&plain=true")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "args: -xu nomad.service --since 1h30m0s ago\n");
    let r = agent
        .get("/v1/agent/monitor/export?service_name=nomad")
        .await;
    let (data, offsets) = frames(&r.body);
    assert_eq!(
        String::from_utf8_lossy(&data),
        "args: -xu nomad --since 72h0m0s ago\n"
    );
    assert_eq!(offsets, [data.len() as i64]);
    let r = agent
        .get("/v1/agent/monitor/export?service_name=consul")
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (422, "service name must include 'nomad")
    );

    // Followed: the stream stays open; closing it ends journalctl.
    let (mut stream, head) = open_export(&agent, "service_name=nomad&follow=true&plain=true").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let got = crate::monitor::read_until(&mut stream, |raw| {
        String::from_utf8_lossy(raw).contains("following")
    })
    .await;
    assert!(String::from_utf8_lossy(&got).contains("args: -xu nomad --since 72h0m0s ago -f"));
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(
            Instant::now() < deadline,
            "journalctl {pid} still runs after the stream closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens an export stream with a raw connection; returns it after the response head.
async fn open_export(agent: &Agent, query: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(agent.http).await.unwrap();
    let req = format!("GET /v1/agent/monitor/export?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
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
