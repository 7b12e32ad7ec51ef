//! Operator subcommands that call a running agent's HTTP API (`NOMAD_ADDR`/`CARAVAN_ADDR`,
//! `NOMAD_TOKEN`/`CARAVAN_TOKEN`).

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::ClientArgs;

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
    let base = address(args);
    let uri: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("invalid address {base:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "invalid address {base:?}: only http:// addresses are supported"
        ));
    }
    let mut req = hyper::Request::get(uri);
    if let Some(token) = args
        .token
        .clone()
        .or_else(|| env_first(&["NOMAD_TOKEN", "CARAVAN_TOKEN"]))
    {
        req = req.header("X-Nomad-Token", token);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let call = async {
        let resp = client
            .request(req)
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
}
