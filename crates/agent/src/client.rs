//! Operator subcommands that call a running agent's HTTP API (`NOMAD_ADDR`/`CARAVAN_ADDR`,
//! `NOMAD_TOKEN`/`CARAVAN_TOKEN`).

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::{
    AclCommand, AclPolicyCommand, AclTokenCommand, ClientArgs, ExportArgs, JobCommand,
    SchedulerCommand, ServerCommand, SnapshotCommand,
};

/// The default agent address.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:4646";

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// The agent address: the flag, `NOMAD_ADDR`, `CARAVAN_ADDR`, or the default.
pub fn address(args: &ClientArgs) -> String {
    args.address
        .clone()
        .or_else(|| env_first(&["NOMAD_ADDR", "CARAVAN_ADDR"]))
        .unwrap_or_else(|| DEFAULT_ADDR.to_string())
}

/// Sends one GET and returns the status and body.
pub async fn get(args: &ClientArgs, path: &str) -> Result<(u16, Vec<u8>), String> {
    request(args, "GET", path, Vec::new()).await
}

/// A request to the agent at [`address`], with the token from the flag or the environment.
fn build_request(
    args: &ClientArgs,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let base = address(args);
    let uri: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("invalid address {base:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
        return Err(format!(
            "invalid address {base:?}: only http:// and https:// addresses are supported"
        ));
    }
    let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, host);
    if let Some(token) = args
        .token
        .clone()
        .or_else(|| env_first(&["NOMAD_TOKEN", "CARAVAN_TOKEN"]))
    {
        req = req.header("X-Nomad-Token", token);
    }
    req.body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("invalid request: {e}"))
}

/// Sends a request: plain HTTP through hyper's pooled client, `https://` over rustls with the
/// CA, client certificate and server name of the flags or `NOMAD_*` environment.
async fn send(
    args: &ClientArgs,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    if req.uri().scheme_str() != Some("https") {
        let client = Client::builder(TokioExecutor::new()).build_http();
        return client.request(req).await.map_err(|e| e.to_string());
    }
    let host = req
        .uri()
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = req.uri().port_u16().unwrap_or(443);
    let tls = crate::tls::cli_client(&cli_tls(args))?;
    let name = cli_tls(args).server_name.unwrap_or_else(|| host.clone());
    let name = rustls_pki_types::ServerName::try_from(name)
        .map_err(|e| format!("invalid TLS server name: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// The CLI's TLS settings: flags first, then Nomad's environment variables.
fn cli_tls(args: &ClientArgs) -> crate::tls::CliTls {
    let pick = |flag: &Option<String>, env: &str| flag.clone().or_else(|| env_first(&[env]));
    let skip_env = env_first(&["NOMAD_SKIP_VERIFY"])
        .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
    crate::tls::CliTls {
        ca_cert: pick(&args.ca_cert, "NOMAD_CACERT"),
        client_cert: pick(&args.client_cert, "NOMAD_CLIENT_CERT"),
        client_key: pick(&args.client_key, "NOMAD_CLIENT_KEY"),
        server_name: pick(&args.tls_server_name, "NOMAD_TLS_SERVER_NAME"),
        skip_verify: args.tls_skip_verify || skip_env,
    }
}

/// Sends one request and returns the status and body.
pub async fn request(
    args: &ClientArgs,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let base = address(args);
    let req = build_request(args, method, path, body)?;
    let call = async {
        let resp = send(args, req)
            .await
            .map_err(|e| format!("error querying agent at {base}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("error reading response from {base}: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .map_err(|_| format!("timed out querying agent at {base}"))?
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("failed to start the runtime: {e}"))?;
    Ok(rt.block_on(f))
}

/// `caravan agent-info`: prints the agent's stats, one section per subsystem, as Nomad does.
pub fn agent_info(args: &ClientArgs) -> ExitCode {
    let result = block_on(get(args, "/v1/agent/self")).and_then(|r| r);
    let (status, body) = match result {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("Error querying agent info: {e}");
            return ExitCode::from(1);
        }
    };
    if status != 200 {
        eprintln!(
            "Error querying agent info: Unexpected response code: {status} ({})",
            String::from_utf8_lossy(&body)
        );
        return ExitCode::from(1);
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error querying agent info: invalid JSON: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", render_stats(&value["stats"]));
    ExitCode::SUCCESS
}

/// Runs a request to completion and returns the body of a 200, or prints `what: error` and fails.
fn call_ok(args: &ClientArgs, method: &str, path: &str, what: &str) -> Result<Vec<u8>, ExitCode> {
    call_ok_with(args, method, path, Vec::new(), what)
}

fn call_ok_with(
    args: &ClientArgs,
    method: &str,
    path: &str,
    body: Vec<u8>,
    what: &str,
) -> Result<Vec<u8>, ExitCode> {
    match block_on(request(args, method, path, body)).and_then(|r| r) {
        Ok((200, body)) => Ok(body),
        Ok((status, body)) => {
            eprintln!(
                "{what}: Unexpected response code: {status} ({})",
                String::from_utf8_lossy(&body)
            );
            Err(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("{what}: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `caravan server members | join | force-leave`.
pub fn server(cmd: ServerCommand) -> ExitCode {
    match cmd {
        ServerCommand::Members(args) => server_members(&args),
        ServerCommand::Join { client, addresses } => {
            let query: Vec<String> = addresses
                .iter()
                .map(|a| format!("address={}", encode(a)))
                .collect();
            let path = format!("/v1/agent/join?{}", query.join("&"));
            let body = match call_ok(&client, "PUT", &path, "Error joining") {
                Ok(b) => b,
                Err(code) => return code,
            };
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let joined = v["num_joined"].as_u64().unwrap_or(0);
            let error = v["error"].as_str().unwrap_or_default();
            if joined == 0 {
                eprintln!("Error joining: {}", error.trim_end());
                return ExitCode::from(1);
            }
            println!("Joined {joined} servers successfully");
            ExitCode::SUCCESS
        }
        ServerCommand::ForceLeave {
            client,
            prune,
            node,
        } => {
            let mut path = format!("/v1/agent/force-leave?node={}", encode(&node));
            if prune {
                path.push_str("&prune=1");
            }
            match call_ok(&client, "PUT", &path, "Error force-leaving server") {
                Ok(_) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
    }
}

fn server_members(args: &ClientArgs) -> ExitCode {
    let body = match call_ok(args, "GET", "/v1/agent/members", "Error querying servers") {
        Ok(b) => b,
        Err(code) => return code,
    };
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error querying servers: invalid JSON: {e}");
            return ExitCode::from(1);
        }
    };
    let leader_addr = block_on(get(args, "/v1/agent/self"))
        .and_then(|r| r)
        .ok()
        .and_then(|(_, b)| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| {
            s["stats"]["nomad"]["leader_addr"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    print!("{}", render_members(&v["Members"], &leader_addr));
    ExitCode::SUCCESS
}

/// `caravan acl bootstrap | policy apply | token create`.
pub fn acl(cmd: AclCommand) -> ExitCode {
    let (result, what) = match cmd {
        AclCommand::Bootstrap(client) => (
            call_ok(&client, "POST", "/v1/acl/bootstrap", "Error bootstrapping"),
            "token",
        ),
        AclCommand::Policy(AclPolicyCommand::Apply {
            client,
            description,
            name,
            file,
        }) => {
            let rules = match std::fs::read_to_string(&file) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("Error reading policy file {file}: {e}");
                    return ExitCode::from(1);
                }
            };
            let body = serde_json::json!({
                "Name": name,
                "Description": description.unwrap_or_default(),
                "Rules": rules,
            });
            let path = format!("/v1/acl/policy/{}", encode(&name));
            let r = call_ok_with(
                &client,
                "POST",
                &path,
                body.to_string().into_bytes(),
                "Error writing ACL policy",
            );
            if r.is_ok() {
                println!("Successfully wrote \"{name}\" ACL policy!");
                return ExitCode::SUCCESS;
            }
            (r, "policy")
        }
        AclCommand::Token(AclTokenCommand::Create {
            client,
            name,
            token_type,
            policy,
            global,
        }) => {
            let body = serde_json::json!({
                "Name": name.unwrap_or_default(),
                "Type": token_type.unwrap_or_else(|| "client".into()),
                "Policies": policy,
                "Global": global,
            });
            (
                call_ok_with(
                    &client,
                    "POST",
                    "/v1/acl/token",
                    body.to_string().into_bytes(),
                    "Error creating token",
                ),
                "token",
            )
        }
    };
    match result {
        Ok(body) if what == "token" => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            println!("Accessor ID  = {}", field("AccessorID"));
            println!("Secret ID    = {}", field("SecretID"));
            println!("Name         = {}", field("Name"));
            println!("Type         = {}", field("Type"));
            println!("Global       = {}", v["Global"].as_bool().unwrap_or(false));
            let policies: Vec<String> = v["Policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            println!(
                "Policies     = {}",
                if policies.is_empty() {
                    "n/a".into()
                } else {
                    format!("[{}]", policies.join(" "))
                }
            );
            println!("Create Time  = {}", field("CreateTime"));
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `caravan monitor`: streams log frames and prints their decoded data until the stream ends.
pub fn monitor(
    args: &ClientArgs,
    log_level: &str,
    json: bool,
    node_id: Option<String>,
    server_id: Option<String>,
) -> ExitCode {
    let mut path = format!("/v1/agent/monitor?log_level={}", encode(log_level));
    if json {
        path.push_str("&log_json=true");
    }
    if let Some(id) = node_id {
        path.push_str(&format!("&node_id={}", encode(&id)));
    }
    if let Some(id) = server_id {
        path.push_str(&format!("&server_id={}", encode(&id)));
    }
    match block_on(stream_monitor(args, &path)).and_then(|r| r) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error starting monitor: {e}");
            ExitCode::from(1)
        }
    }
}

/// `caravan monitor export`: prints the decoded frames of `/v1/agent/monitor/export` until the
/// stream ends; an export that printed nothing is an error, as in Nomad.
pub fn monitor_export(args: &ExportArgs) -> ExitCode {
    let since = match caravan_agent_core::duration::parse_go_duration(&args.logs_since) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "caravan: invalid value {:?} for -logs-since: {e}",
                args.logs_since
            );
            return ExitCode::from(1);
        }
    };
    let id = |v: &Option<String>| encode(v.as_deref().unwrap_or(""));
    let path = format!(
        "/v1/agent/monitor/export?follow={}&logs_since={}&node_id={}&on_disk={}&server_id={}&service_name={}",
        args.follow,
        encode(&caravan_agent_core::duration::format_go_duration(since)),
        id(&args.node_id),
        args.on_disk,
        id(&args.server_id),
        id(&args.service_name),
    );
    match block_on(stream_monitor(&args.client, &path)).and_then(|r| r) {
        Ok(0) => {
            eprintln!(
                "Error starting monitor: \nReturned no data or errors, check your log_file configuration or service name"
            );
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error starting monitor: \n{e}");
            ExitCode::from(1)
        }
    }
}

/// Streams a monitor or export response's frames to stdout; returns the bytes printed.
async fn stream_monitor(args: &ClientArgs, path: &str) -> Result<u64, String> {
    use base64::Engine;
    use std::io::Write as _;
    let base = address(args);
    let req = build_request(args, "GET", path, Vec::new())?;
    let resp = send(args, req)
        .await
        .map_err(|e| format!("error querying agent at {base}: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    if status != 200 {
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "Unexpected response code: {status} ({})",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut printed = 0u64;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut stdout = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("stream error: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let mut consumed = 0;
        let mut frames =
            serde_json::Deserializer::from_slice(&pending).into_iter::<serde_json::Value>();
        while let Some(Ok(v)) = frames.next() {
            consumed = frames.byte_offset();
            if let Some(d) = v["Data"].as_str()
                && let Ok(bytes) = engine.decode(d)
            {
                printed += bytes.len() as u64;
                let _ = stdout.write_all(&bytes);
                let _ = stdout.flush();
            }
        }
        pending.drain(..consumed);
    }
    Ok(printed)
}

/// The most a snapshot file may hold to be sent (the HTTP API takes request bodies up to 1 MiB).
const MAX_SNAPSHOT_FILE: u64 = 1 << 20;

/// `caravan operator snapshot save FILE | restore FILE`, as Nomad's.
pub fn snapshot(cmd: SnapshotCommand) -> ExitCode {
    const PATH: &str = "/v1/operator/snapshot";
    match cmd {
        SnapshotCommand::Save { client, file } => {
            let bytes = match call_ok(&client, "GET", PATH, "Failed to get snapshot file") {
                Ok(b) => b,
                Err(code) => return code,
            };
            if let Err(e) = write_private(&file, &bytes) {
                eprintln!("Failed to write snapshot file {}: {e}", file.display());
                return ExitCode::from(1);
            }
            println!("State file written to {}", file.display());
            ExitCode::SUCCESS
        }
        SnapshotCommand::Restore { client, file } => {
            let bytes = match read_bounded(&file, MAX_SNAPSHOT_FILE) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("Failed to read snapshot file {}: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            match call_ok_with(&client, "PUT", PATH, bytes, "Failed to restore snapshot") {
                Ok(_) => {
                    println!("Snapshot Restored");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
    }
}

/// Writes `bytes` to a new or truncated file readable by this user only (0600).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    // An existing file keeps its mode through `open`: narrow it too.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads a whole file, refusing one over `max` bytes.
fn read_bounded(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// `caravan operator scheduler get-config | set-config`.
pub fn scheduler(cmd: SchedulerCommand) -> ExitCode {
    const PATH: &str = "/v1/agent/schedulers/config";
    let (client, body) = match cmd {
        SchedulerCommand::GetConfig(client) => (client, None),
        SchedulerCommand::SetConfig {
            client,
            num_schedulers,
            enabled_schedulers,
        } => {
            let current = match call_ok(
                &client,
                "GET",
                PATH,
                "Error querying scheduler configuration",
            ) {
                Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default(),
                Err(code) => return code,
            };
            let num =
                num_schedulers.unwrap_or_else(|| current["num_schedulers"].as_i64().unwrap_or(0));
            let enabled: Vec<String> = match enabled_schedulers {
                Some(list) => list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                None => current["enabled_schedulers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            };
            let body = serde_json::json!({"num_schedulers": num, "enabled_schedulers": enabled});
            (client, Some(body.to_string().into_bytes()))
        }
    };
    let result = match body {
        None => call_ok(
            &client,
            "GET",
            PATH,
            "Error querying scheduler configuration",
        ),
        Some(b) => call_ok_with(
            &client,
            "PUT",
            PATH,
            b,
            "Error setting scheduler configuration",
        ),
    };
    match result {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let enabled: Vec<&str> = v["enabled_schedulers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            println!(
                "Server ID            = {}",
                v["server_id"].as_str().unwrap_or_default()
            );
            println!("Number of Schedulers = {}", v["num_schedulers"]);
            println!("Enabled Schedulers   = {}", enabled.join(", "));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Nomad's `server members` table.
pub fn render_members(members: &serde_json::Value, leader_addr: &str) -> String {
    let mut rows = vec![
        [
            "Name",
            "Address",
            "Port",
            "Status",
            "Leader",
            "Raft Version",
            "Build",
            "Datacenter",
            "Region",
        ]
        .map(str::to_string),
    ];
    for m in members.as_array().into_iter().flatten() {
        let tag = |k: &str| m["Tags"][k].as_str().unwrap_or_default().to_string();
        let rpc = format!("{}:{}", tag("rpc_addr"), tag("port"));
        rows.push([
            m["Name"].as_str().unwrap_or_default().to_string(),
            m["Addr"].as_str().unwrap_or_default().to_string(),
            m["Port"].to_string(),
            m["Status"].as_str().unwrap_or_default().to_string(),
            (!leader_addr.is_empty() && rpc == leader_addr).to_string(),
            tag("raft_vsn"),
            tag("build"),
            tag("dc"),
            tag("region"),
        ]);
    }
    columnize(&rows)
}

/// Rows as left-aligned columns two spaces apart, as Go's `columnize` prints Nomad's tables.
fn columnize<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A 200's body as JSON, or `what: error` printed and a failure.
fn json_ok(
    client: &ClientArgs,
    method: &str,
    path: &str,
    body: Vec<u8>,
    what: &str,
) -> Result<serde_json::Value, ExitCode> {
    let bytes = call_ok_with(client, method, path, body, what)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        eprintln!("{what}: invalid JSON: {e}");
        ExitCode::from(1)
    })
}

/// The first 8 characters of an ID, as Nomad's tables show them.
fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// `caravan job run | status | stop`.
pub fn job(cmd: JobCommand) -> ExitCode {
    let done = match cmd {
        JobCommand::Run { client, file, .. } => job_run(&client, &file),
        JobCommand::Status { client, id: None } => job_list(&client),
        JobCommand::Status {
            client,
            id: Some(id),
        } => job_show(&client, &id),
        JobCommand::Stop { client, id, .. } => {
            let path = format!("/v1/job/{}", encode(&id));
            json_ok(
                &client,
                "DELETE",
                &path,
                Vec::new(),
                "Error deregistering job",
            )
            .map(|w| {
                println!(
                    "Evaluation ID: {}",
                    w["EvalID"].as_str().unwrap_or_default()
                );
            })
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn job_run(client: &ClientArgs, file: &std::path::Path) -> Result<(), ExitCode> {
    let fail = |e: String| {
        eprintln!("Error reading job file {}: {e}", file.display());
        ExitCode::from(1)
    };
    let bytes = read_bounded(file, MAX_SNAPSHOT_FILE).map_err(fail)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("invalid JSON: {e}")))?;
    let body = if value.get("Job").is_some() {
        value
    } else {
        serde_json::json!({ "Job": value })
    };
    let w = json_ok(
        client,
        "POST",
        "/v1/jobs",
        body.to_string().into_bytes(),
        "Error submitting job",
    )?;
    println!("Job registration successful");
    println!(
        "Evaluation ID: {}",
        w["EvalID"].as_str().unwrap_or_default()
    );
    Ok(())
}

fn job_list(client: &ClientArgs) -> Result<(), ExitCode> {
    let jobs = json_ok(client, "GET", "/v1/jobs", Vec::new(), "Error querying jobs")?;
    let list = jobs.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("No running jobs");
        return Ok(());
    }
    let mut rows = vec![["ID", "Type", "Priority", "Status"].map(str::to_string)];
    for j in &list {
        let text = |k: &str| j[k].as_str().unwrap_or_default().to_string();
        rows.push([
            text("ID"),
            text("Type"),
            j["Priority"].to_string(),
            text("Status"),
        ]);
    }
    print!("{}", columnize(&rows));
    Ok(())
}

fn job_show(client: &ClientArgs, id: &str) -> Result<(), ExitCode> {
    let path = format!("/v1/job/{}", encode(id));
    let j = json_ok(client, "GET", &path, Vec::new(), "Error querying job")?;
    let allocs = json_ok(
        client,
        "GET",
        &format!("{path}/allocations"),
        Vec::new(),
        "Error querying job allocations",
    )?;
    let text = |k: &str| j[k].as_str().unwrap_or_default().to_string();
    let dcs: Vec<&str> = j["Datacenters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .collect();
    println!("ID            = {}", text("ID"));
    println!("Name          = {}", text("Name"));
    println!("Type          = {}", text("Type"));
    println!("Priority      = {}", j["Priority"]);
    println!("Datacenters   = {}", dcs.join(","));
    println!("Status        = {}", text("Status"));
    println!();
    println!("Allocations");
    let mut rows = vec![["ID", "Node ID", "Task Group", "Desired", "Status"].map(str::to_string)];
    for a in allocs.as_array().into_iter().flatten() {
        let t = |k: &str| a[k].as_str().unwrap_or_default().to_string();
        rows.push([
            short(&t("ID")),
            short(&t("NodeID")),
            t("TaskGroup"),
            t("DesiredStatus"),
            t("ClientStatus"),
        ]);
    }
    if rows.len() == 1 {
        println!("No allocations placed");
    } else {
        print!("{}", columnize(&rows));
    }
    Ok(())
}

/// `caravan node status`: Nomad's table of client nodes.
pub fn node_status(client: &ClientArgs) -> ExitCode {
    let nodes = match json_ok(
        client,
        "GET",
        "/v1/nodes",
        Vec::new(),
        "Error querying node status",
    ) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let list = nodes.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("No nodes registered");
        return ExitCode::SUCCESS;
    }
    let mut rows = vec![["ID", "DC", "Name", "Class", "Eligibility", "Status"].map(str::to_string)];
    for n in &list {
        let t = |k: &str| n[k].as_str().unwrap_or_default().to_string();
        let class = match t("NodeClass") {
            c if c.is_empty() => "<none>".to_string(),
            c => c,
        };
        rows.push([
            short(&t("ID")),
            t("Datacenter"),
            t("Name"),
            class,
            t("SchedulingEligibility"),
            t("Status"),
        ]);
    }
    print!("{}", columnize(&rows));
    ExitCode::SUCCESS
}

/// `caravan operator raft list-peers`: Nomad's table of the Raft configuration.
pub fn raft_list_peers(client: &ClientArgs) -> ExitCode {
    let path = "/v1/operator/raft/configuration";
    let bytes = match call_ok(client, "GET", path, "Failed to retrieve raft configuration") {
        Ok(b) => b,
        Err(code) => return code,
    };
    let config: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Failed to retrieve raft configuration: invalid JSON: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", render_peers(&config));
    ExitCode::SUCCESS
}

/// `caravan operator gossip keyring`, as Nomad's: one action at a time.
pub fn gossip_keyring(args: &crate::cli::KeyringArgs) -> ExitCode {
    if args.generate {
        let key: [u8; 32] = rand::random();
        println!(
            "{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)
        );
        return ExitCode::SUCCESS;
    }
    let keyed = [
        (
            "install",
            &args.install,
            "Installing new gossip encryption key...",
        ),
        (
            "use",
            &args.use_key,
            "Changing primary gossip encryption key...",
        ),
        ("remove", &args.remove, "Removing gossip encryption key..."),
    ];
    let mut actions: Vec<(&str, Option<&String>, &str)> = keyed
        .iter()
        .filter_map(|(op, key, note)| key.as_ref().map(|k| (*op, Some(k), *note)))
        .collect();
    if args.list {
        actions.push(("list", None, "Gathering installed encryption keys..."));
    }
    let (op, key, note) = match actions.as_slice() {
        [one] => *one,
        [] => {
            eprintln!("No actionable argument was passed");
            eprintln!("Either the '-install', '-use', '-remove' or '-list' flag must be set");
            return ExitCode::from(1);
        }
        _ => {
            eprintln!("Only a single action is allowed");
            return ExitCode::from(1);
        }
    };
    println!("{note}");
    let body = key.map_or_else(Vec::new, |k| {
        serde_json::json!({ "Key": k }).to_string().into_bytes()
    });
    let path = format!("/v1/agent/keyring/{op}");
    let bytes = match call_ok_with(&args.client, "PUT", &path, body, "error") {
        Ok(b) => b,
        Err(code) => return code,
    };
    if op == "list" {
        let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        println!("Key");
        for (k, _) in answer["Keys"].as_object().into_iter().flatten() {
            println!("{k}");
        }
    }
    ExitCode::SUCCESS
}

/// Nomad's `operator raft list-peers` table.
pub fn render_peers(config: &serde_json::Value) -> String {
    let mut rows =
        vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"].map(str::to_string)];
    for s in config["Servers"].as_array().into_iter().flatten() {
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        let state = if s["Leader"] == true {
            "leader"
        } else {
            "follower"
        };
        rows.push([
            text("Node"),
            text("ID"),
            text("Address"),
            state.to_string(),
            (s["Voter"] == true).to_string(),
            text("RaftProtocol"),
        ]);
    }
    columnize(&rows)
}

/// `section\n  key = value\n` for every stats section, sorted.
pub fn render_stats(stats: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(sections) = stats.as_object() {
        let mut names: Vec<_> = sections.keys().collect();
        names.sort();
        for name in names {
            out.push_str(name);
            out.push('\n');
            if let Some(values) = sections[name].as_object() {
                let mut keys: Vec<_> = values.keys().collect();
                keys.sort();
                for key in keys {
                    let v = values[key].as_str().unwrap_or_default();
                    out.push_str(&format!("  {key} = {v}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_sections() {
        let v = serde_json::json!({"runtime": {"b": "2", "a": "1"}, "client": {"x": "y"}});
        assert_eq!(
            render_stats(&v),
            "client\n  x = y\nruntime\n  a = 1\n  b = 2\n"
        );
    }

    #[test]
    fn renders_raft_peers_as_nomad() {
        let v = serde_json::json!({"Index": 7, "Servers": [
            {"ID": "id-a", "Node": "a.global", "Address": "127.0.0.1:4647", "Leader": true, "Voter": true, "RaftProtocol": "3"},
            {"ID": "id-bb", "Node": "bb.global", "Address": "127.0.0.1:14647", "Leader": false, "Voter": true, "RaftProtocol": "3"},
        ]});
        assert_eq!(
            render_peers(&v),
            "Node       ID     Address          State     Voter  RaftProtocol\n\
             a.global   id-a   127.0.0.1:4647   leader    true   3\n\
             bb.global  id-bb  127.0.0.1:14647  follower  true   3\n"
        );
    }
}
