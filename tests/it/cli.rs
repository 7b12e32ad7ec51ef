//! Operator subcommands against a running agent.

use crate::support::{Agent, cli, run_caravan, stdout_ok};

#[tokio::test]
async fn agent_info_reads_self() {
    let agent = Agent::dev("").await;
    let text = stdout_ok(&cli(agent.http, &["agent-info"], &[]).await);
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

#[tokio::test]
async fn server_members_join_force_leave() {
    let a = Agent::dev("name = \"ca\"\n").await;
    let b = Agent::dev("name = \"cb\"\n").await;
    let serf_a = a.serf.to_string();
    let out = cli(b.http, &["server", "join", &serf_a], &[]).await;
    assert_eq!(stdout_ok(&out), "Joined 1 servers successfully\n");
    let mut table = String::new();
    for _ in 0..100 {
        table = stdout_ok(&cli(a.http, &["server", "members"], &[]).await);
        if table.contains("cb.global") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(table.starts_with("Name "), "{table}");
    assert!(table.contains("Raft Version"), "{table}");
    let line = table.lines().find(|l| l.starts_with("ca.global")).unwrap();
    assert!(line.contains("alive") && line.contains("true"), "{line}");
    // The joined server is listed on the side it joined, alive, within the 5 s polled above.
    let joined = table
        .lines()
        .find(|l| l.starts_with("cb.global"))
        .unwrap_or_else(|| panic!("cb.global never appeared on ca: {table}"));
    assert!(joined.contains("alive"), "{joined}");
    let out = cli(
        a.http,
        &["server", "force-leave", "-prune", "nobody.global"],
        &[],
    )
    .await;
    stdout_ok(&out);
    let out = cli(a.http, &["server", "join", "127.0.0.1:1"], &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error joining: "));
}
