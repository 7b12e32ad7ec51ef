//! `caravan agent`: load the configuration, start the listeners, wait for a signal, shut down.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use caravan_agent_core::config::AgentConfig;
use caravan_http::serve::{self, ServeOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::cli::AgentArgs;

/// How long shutdown may take in all before the process exits anyway.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(4);

/// Runs an agent until SIGINT or SIGTERM.
pub fn agent(args: &AgentArgs) -> ExitCode {
    let config = match crate::load::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("caravan: {e}");
            return ExitCode::from(1);
        }
    };
    let hub = caravan_http::monitor::MonitorHub::new();
    let level = match crate::logging::init(
        config.log_level,
        config.log_json,
        config.log_file.clone(),
        &hub,
    ) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("caravan: {e}");
            return ExitCode::from(1);
        }
    };
    crate::load::warn_ignored(&config);
    // The recorder every `metrics::` call of the process reaches; `/v1/metrics` renders it.
    let sink = caravan_http::metrics::MetricsSink::new();
    // `CARAVAN_METRICS=off` runs without a recorder (every `metrics::` call a no-op, and
    // `/v1/metrics` empty): the baseline `cargo xtask bench http` measures metrics against.
    if std::env::var("CARAVAN_METRICS").is_ok_and(|v| v == "off") {
        tracing::info!(target: "agent", "CARAVAN_METRICS=off: no metrics are recorded");
    } else if metrics::set_global_recorder(sink.clone()).is_err() {
        tracing::warn!(target: "agent", "a metrics recorder was already installed");
    }
    raise_open_files();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("caravan: failed to start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(config, hub, args.clone(), level, sink));
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Raises the open-file soft limit to the hard limit, as Go programs such as Nomad do at start:
/// every connection the HTTP and RPC caps admit (4,096 each) needs a descriptor, and a soft
/// limit of 1,024 would let a flood exhaust them first.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("caravan: cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("caravan: cannot read the open-file limit: {e}"),
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("failed to bind the {what} listener on {addr}: {e}"))
}

async fn run(
    config: AgentConfig,
    hub: caravan_http::monitor::MonitorHub,
    args: AgentArgs,
    level: crate::logging::LevelHandle,
    sink: caravan_http::metrics::MetricsSink,
) -> ExitCode {
    match start_and_wait(config, hub, args, level, sink).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "agent", error = %e, "agent failed");
            eprintln!("caravan: {e}");
            ExitCode::from(1)
        }
    }
}

async fn start_and_wait(
    config: AgentConfig,
    hub: caravan_http::monitor::MonitorHub,
    args: AgentArgs,
    level: crate::logging::LevelHandle,
    sink: caravan_http::metrics::MetricsSink,
) -> Result<(), String> {
    let http_addr = SocketAddr::new(config.addresses.http, config.ports.http);
    let rpc_addr = SocketAddr::new(config.addresses.rpc, config.ports.rpc);
    let http_listener = bind("HTTP", http_addr).await?;
    let rpc_listener = bind("RPC", rpc_addr).await?;
    let limits = config.limits;
    // One set of certificate files for every TLS use, swapped by a reload.
    let live_tls = if config.tls.http || config.tls.rpc {
        Some(crate::tls::LiveTls::load(&config.tls)?)
    } else {
        None
    };
    let http_tls = match (&live_tls, config.tls.http) {
        (Some(live), true) => Some(crate::tls::server_config(
            live,
            &[b"http/1.1"],
            config.tls.verify_https_client,
        )?),
        _ => None,
    };
    let keyring = crate::keyring::ServerKeyring::load(&config)?.map(Arc::new);
    let rpc_keys = keyring.as_ref().map(|k| k.rpc_keys());
    let trust = crate::rpc::trust(&config, live_tls.as_ref(), rpc_keys)?;
    let interval = config.telemetry.collection_interval();
    let agent = Agent::start(config, hub, args, level, live_tls, sink, keyring).await?;
    crate::telemetry::spawn(interval, agent.server_role());
    let app = agent.app().clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let http_opts = ServeOptions {
        max_conns_per_ip: limits.http_max_conns_per_client,
        header_read_timeout: limits.https_handshake_timeout,
        tls: http_tls,
        ..ServeOptions::default()
    };
    let rpc_opts = caravan_rpc::ServerOptions {
        max_conns_per_ip: limits.rpc_max_conns_per_client,
        handshake_timeout: limits.rpc_handshake_timeout,
        ..caravan_rpc::ServerOptions::default()
    };
    let http_task = tokio::spawn(serve::serve_http1(
        http_listener,
        app.clone(),
        http_opts,
        stop_rx.clone(),
    ));
    let rpc_server = caravan_rpc::Server::new(trust, Arc::new(agent.rpc_handler()), rpc_opts);
    let rpc_task = tokio::spawn(rpc_server.serve(rpc_listener, stop_rx));
    log_started(&agent, http_addr, rpc_addr);
    agent.spawn_duties();
    let notifier = crate::notify::Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        n.clone().ready_when_healthy(app.clone());
    }
    let signal = wait_for_signal(&agent).await?;
    tracing::info!(target: "agent", signal, "caught signal, shutting down");
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    // Leave the gossip pool first (about a second), so peers see `left`, not `failed`.
    if tokio::time::timeout(Duration::from_secs(2), agent.leave())
        .await
        .is_err()
    {
        tracing::warn!(target: "agent", "gossip leave took too long");
    }
    // End log streams so open monitor requests finish instead of holding shutdown.
    agent.close_log_streams();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_BUDGET, async {
        let _ = http_task.await;
        let _ = rpc_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: "agent", "shutdown budget spent; exiting with connections open");
    }
    tracing::info!(target: "agent", "shutdown complete");
    Ok(())
}

fn log_started(agent: &Agent, http: SocketAddr, rpc: SocketAddr) {
    let c = agent.config();
    tracing::info!(
        target: "agent",
        node = %c.node_name,
        region = %c.region,
        dc = %c.datacenter,
        server = c.server.enabled,
        client = c.client.enabled,
        dev = c.dev_mode,
        http = %http,
        rpc = %rpc,
        "agent started"
    );
}

/// Waits for SIGTERM or SIGINT; a SIGHUP on the way reloads the configuration (a failure is
/// logged and the agent runs on unchanged).
async fn wait_for_signal(agent: &Agent) -> Result<&'static str, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("failed to watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("failed to watch SIGINT: {e}"))?;
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| format!("failed to watch SIGHUP: {e}"))?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("terminated"),
            _ = int.recv() => return Ok("interrupt"),
            _ = hup.recv() => {
                tracing::info!(target: "agent", "caught SIGHUP, reloading the configuration");
                if agent.reload().await.is_ok() {
                    tracing::info!(target: "agent", "configuration reloaded");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let low = hard.min(256);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        super::raise_open_files();
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
