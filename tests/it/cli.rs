//! Operator subcommands against a running agent.

use serde_json::{Value, json};

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

#[tokio::test]
async fn operator_snapshot_save_and_restore() {
    use std::os::unix::fs::PermissionsExt;
    let agent = Agent::dev("acl {\n  enabled = true\n}\n").await;
    let boot = crate::support::send(&agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
    assert_eq!(boot.status, 200, "{}", boot.text());
    let mgmt = boot.json()["SecretID"].as_str().unwrap().to_string();
    let env = [("NOMAD_TOKEN", mgmt.as_str())];
    let dir = crate::support::Scratch::new();
    let file = dir.0.join("state.snap");
    let path = file.to_str().unwrap();
    let policy = |name: &str| json!({"Name": name, "Description": "", "Rules": "agent { policy = \"read\" }"});
    let put = |name: &'static str| {
        let body = policy(name);
        let mgmt = mgmt.clone();
        let agent = &agent;
        async move {
            let path = format!("/v1/acl/policy/{name}");
            let r = crate::support::send(agent, "POST", &path, Some(&mgmt), body).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    put("before").await;

    let out = cli(agent.http, &["operator", "snapshot", "save", path], &env).await;
    assert_eq!(stdout_ok(&out), format!("State file written to {path}\n"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the snapshot holds every secret");
    put("after").await;

    // Without a token both are refused with the agent's answer.
    for args in [
        ["operator", "snapshot", "save", path],
        ["operator", "snapshot", "restore", path],
    ] {
        let out = cli(agent.http, &args, &[]).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Unexpected response code: 403"), "{stderr}");
    }
    // A file that is not a snapshot is refused and changes nothing.
    let junk = dir.write("junk.snap", "not a snapshot");
    let out = cli(
        agent.http,
        &["operator", "snapshot", "restore", &junk],
        &env,
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("400 (bad snapshot"), "{stderr}");

    let out = cli(agent.http, &["operator", "snapshot", "restore", path], &env).await;
    assert_eq!(stdout_ok(&out), "Snapshot Restored\n");
    let policies =
        crate::support::send(&agent, "GET", "/v1/acl/policies", Some(&mgmt), Value::Null)
            .await
            .json();
    let names: Vec<&str> = policies
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["Name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["before"],
        "the policy written after the save is gone"
    );
}

#[tokio::test]
async fn operator_raft_list_peers() {
    let agent = Agent::dev("acl {\n  enabled = true\n}\n").await;
    let boot = crate::support::send(&agent, "POST", "/v1/acl/bootstrap", None, Value::Null).await;
    let mgmt = boot.json()["SecretID"].as_str().unwrap().to_string();
    let out = cli(
        agent.http,
        &["operator", "raft", "list-peers"],
        &[("NOMAD_TOKEN", &mgmt)],
    )
    .await;
    let text = stdout_ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("Node"), "{text}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells.len(), 6, "{text}");
    assert_eq!(&cells[3..], ["leader", "true", "3"], "{text}");
    // operator:read is needed.
    let out = cli(agent.http, &["operator", "raft", "list-peers"], &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Failed to retrieve raft configuration: Unexpected response code: 403"),
        "{stderr}"
    );
}

#[test]
fn config_validate_names_every_problem() {
    let dir = crate::support::Scratch::new();
    let good = dir.write(
        "good.hcl",
        "data_dir = \"/tmp/caravan-validate\"\nserver {\n  enabled = true\n}\n",
    );
    let out = run_caravan(&["config", "validate", &good], &[]);
    assert_eq!(stdout_ok(&out), "Configuration is valid!\n");

    let typo = dir.write("typo.hcl", "server {\n  bogus_key = 1\n}\n");
    let broken = dir.write("broken.hcl", "server {\n");
    let out = run_caravan(
        &["config", "validate", &typo, &broken, "/nonexistent-dir"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].contains("typo.hcl") && lines[0].contains("bogus_key"),
        "{stderr}"
    );
    assert!(lines[1].contains("broken.hcl"), "{stderr}");
    assert!(lines[2].contains("/nonexistent-dir"), "{stderr}");
    assert!(out.stdout.is_empty());

    // Files that parse but do not resolve: the merged configuration's problem is named.
    let no_dir = dir.write("no_dir.hcl", "client {\n  enabled = true\n}\n");
    let out = run_caravan(&["config", "validate", &no_dir], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("data_dir"), "{stderr}");
}

#[tokio::test]
async fn job_run_status_stop_and_node_status() {
    let agent = Agent::dev("").await;
    let dir = crate::support::Scratch::new();
    let file = dir.write(
        "web.json",
        &json!({"ID": "web", "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [
            {"Name": "g", "Count": 2, "Tasks": [
                {"Name": "t", "Driver": "docker", "Resources": {"CPU": 10, "MemoryMB": 16}}]}]})
        .to_string(),
    );
    let run = |args: Vec<String>| {
        let http = agent.http;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(http, &args, &[]).await
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let text = stdout_ok(&run(args(&["node", "status"])).await);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("ID") && lines[1].ends_with("ready"),
        "{text}"
    );

    let text = stdout_ok(&run(args(&["job", "run", &file])).await);
    assert!(
        text.starts_with("Job registration successful\nEvaluation ID: "),
        "{text}"
    );
    let eval = text
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("Evaluation ID: ");
    assert_eq!(eval.len(), 36, "{text}");

    let text = stdout_ok(&run(args(&["job", "status"])).await);
    assert!(text.lines().nth(1).unwrap().starts_with("web "), "{text}");

    // The workers place it: two allocations to run.
    let started = std::time::Instant::now();
    loop {
        let text = stdout_ok(&run(args(&["job", "status", "web"])).await);
        assert!(text.starts_with("ID            = web\n"), "{text}");
        if text.lines().filter(|l| l.contains(" run ")).count() == 2 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let text = stdout_ok(&run(args(&["job", "stop", "web"])).await);
    assert!(text.starts_with("Evaluation ID: "), "{text}");
    let text = stdout_ok(&run(args(&["job", "status", "web"])).await);
    assert!(text.contains("Status        = dead\n"), "{text}");

    // Errors name the problem and fail.
    let out = run(args(&["job", "status", "nope"])).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("404 (job not found)"), "{stderr}");
    let out = run(args(&["job", "run", "/nonexistent.json"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error reading job file"));
}

/// Runs `script` in `shell` (`-c`), bounded; `None` when the shell is not installed.
fn shell(shell: &str, script: &str) -> Option<String> {
    let mut child = match std::process::Command::new(shell)
        .arg("-c")
        .arg(script)
        .env("CARAVAN", crate::support::caravan_bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{shell}: {e}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{shell} did not finish within 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The generated scripts complete subcommands and Go-style flags in the real shells: bash
/// always; zsh (its `bashcompinit`, with the arrays it sets up) and fish when installed.
#[test]
fn completion_scripts_complete_in_real_shells() {
    let bash = shell(
        "bash",
        r#"source <("$CARAVAN" completion bash)
t() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _caravan; echo "${COMPREPLY[*]}"; }
t caravan oper
t caravan operator raft ""
t caravan agent -log-l
t caravan monitor export -on
t caravan acl token create -pol
complete -p caravan"#,
    )
    .expect("bash is installed");
    assert_eq!(
        bash,
        "operator\nlist-peers\n-log-level=\n-on-disk\n-policy=\ncomplete -o default -F _caravan caravan\n"
    );
    match shell(
        "zsh",
        r#"source <("$CARAVAN" completion zsh)
print -- ${_comps[caravan]}
setopt ksharrays
COMP_WORDS=(caravan operator ""); COMP_CWORD=2; _caravan; print -- "${COMPREPLY[@]}""#,
    ) {
        Some(zsh) => assert_eq!(
            zsh,
            "_bash_complete -o default -F _caravan\nscheduler snapshot raft gossip\n"
        ),
        None => eprintln!("zsh is not installed: its completion was not run"),
    }
    match shell(
        "fish",
        r#""$CARAVAN" completion fish | source
complete -C "caravan oper"
complete -C "caravan operator raft "
complete -C "caravan monitor export -serv""#,
    ) {
        Some(fish) => assert_eq!(
            fish,
            "operator\tOperator commands\nlist-peers\tList the servers of the Raft configuration (`operator:read`)\n-server-id\tExport a server's logs (a server's name or ID, or `leader`)\n-service-name\tThe agent's systemd unit (it must include `nomad`, as Nomad requires); not with `-on-disk`\n"
        ),
        None => eprintln!("fish is not installed: its completion was not run"),
    }
    // An unknown shell is a usage error.
    let out = run_caravan(&["completion", "tcsh"], &[]);
    assert!(!out.status.success());
}
