//! Operator subcommands against a running agent.

use crate::support::{Agent, run_caravan};

#[tokio::test]
async fn agent_info_reads_self() {
    let agent = Agent::dev("").await;
    let addr = format!("http://{}", agent.http);
    let out =
        tokio::task::spawn_blocking(move || run_caravan(&["agent-info"], &[("NOMAD_ADDR", &addr)]))
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("runtime\n"), "{text}");
    assert!(text.contains("  known_servers = "), "{text}");
    assert!(text.contains("nomad\n  bootstrap = true\n"), "{text}");
}

#[test]
fn agent_info_without_agent_fails_cleanly() {
    let port = crate::support::free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let out = run_caravan(&["agent-info"], &[("CARAVAN_ADDR", &addr)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Error querying agent info: "),
        "{stderr}"
    );
}

#[test]
fn version() {
    let out = run_caravan(&["version"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Caravan v0.1.0"));
}
