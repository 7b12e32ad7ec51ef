//! Reloading the configuration (`PUT /v1/agent/reload`, SIGHUP): the files and flags the agent
//! started with are read again; what can change while running is applied — the log level, the
//! scheduler workers (`server.num_schedulers`, `server.enabled_schedulers`), `enable_debug`,
//! `http_api_response_headers`, and the TLS certificate, key and CA (read again even when their
//! paths are unchanged: new connections use them, established ones continue) — and every other
//! changed key is named at WARN as taking effect on restart. A configuration that does not load,
//! or whose headers or TLS files are bad, is an error (`500` with its text over HTTP) and
//! changes nothing.

use std::sync::Arc;

use std::sync::OnceLock;

use caravan_agent_core::config::AgentConfig;
use caravan_http::LiveConfig;
use caravan_http::dto::{ConfigDto, VersionDto};
use parking_lot::Mutex;

use crate::cli::AgentArgs;
use crate::logging::LevelHandle;
use crate::server::{ServerRole, configured_workers};
use crate::tls::LiveTls;

/// Keys of `/v1/agent/self`'s config that a reload applies (a key, or a prefix ending in `.`).
const APPLIED: [&str; 5] = [
    "LogLevel",
    "Server.NumSchedulers",
    "Server.EnabledSchedulers",
    "EnableDebug",
    "HTTPAPIResponseHeaders.",
];

/// The TLS file keys a reload applies when TLS is in use.
const APPLIED_TLS: [&str; 3] = [
    "TLSConfig.CAFile",
    "TLSConfig.CertFile",
    "TLSConfig.KeyFile",
];

/// Re-reads and applies the configuration.
pub struct Reloader {
    args: AgentArgs,
    level: LevelHandle,
    /// The configuration last loaded (what later reloads are compared with).
    running: Mutex<AgentConfig>,
    /// The configuration in effect: as started, with what reloads applied.
    effective: Mutex<AgentConfig>,
    server: Option<Arc<ServerRole>>,
    tls: Option<Arc<LiveTls>>,
    /// The HTTP application's live settings, once it is built.
    live: OnceLock<LiveConfig>,
}

impl Reloader {
    /// A reloader for an agent started with `args` and running `config`, its TLS files in
    /// `tls` when it uses TLS.
    pub fn new(
        args: AgentArgs,
        level: LevelHandle,
        config: AgentConfig,
        server: Option<Arc<ServerRole>>,
        tls: Option<Arc<LiveTls>>,
    ) -> Reloader {
        Reloader {
            args,
            level,
            effective: Mutex::new(config.clone()),
            running: Mutex::new(config),
            server,
            tls,
            live: OnceLock::new(),
        }
    }

    /// Connects the HTTP application's live settings (response headers, `enable_debug`, the
    /// configuration `/v1/agent/self` shows).
    pub fn attach(&self, live: LiveConfig) {
        let _ = self.live.set(live);
    }

    /// Applies what can change live from `new`; names the rest. Everything that can fail is
    /// checked before anything changes.
    fn apply(&self, new: AgentConfig) -> Result<(), String> {
        let mut running = self.running.lock();
        if let Some(live) = self.live.get() {
            live.check(&new)
                .map_err(|e| format!("reload failed: {e}"))?;
        }
        let tls = match (&self.tls, new.tls.http || new.tls.rpc) {
            (Some(_), true) => {
                Some(LiveTls::prepare(&new.tls).map_err(|e| format!("reload failed: {e}"))?)
            }
            _ => None,
        };
        if new.log_level != running.log_level {
            self.level.set(new.log_level)?;
            tracing::info!(target: "agent", level = ?new.log_level, "log level changed by a reload");
        }
        let wanted = configured_workers(&new);
        if let Some(server) = &self.server
            && configured_workers(&running).differs_from(&wanted)
        {
            use caravan_http::Schedulers;
            server.set_scheduler_config(wanted);
        }
        let mut effective = self.effective.lock();
        effective.log_level = new.log_level;
        effective.server.num_schedulers = new.server.num_schedulers;
        effective.server.enabled_schedulers = new.server.enabled_schedulers.clone();
        effective.enable_debug = new.enable_debug;
        effective.http_api_response_headers = new.http_api_response_headers.clone();
        if let (Some(live), Some(prepared)) = (&self.tls, tls) {
            live.commit(prepared);
            effective.tls.ca_file = new.tls.ca_file.clone();
            effective.tls.cert_file = new.tls.cert_file.clone();
            effective.tls.key_file = new.tls.key_file.clone();
            tracing::info!(target: "agent", "TLS certificates reloaded; new connections use them");
        }
        if let Some(live) = self.live.get() {
            // Checked above: cannot fail.
            live.set(effective.clone())
                .map_err(|e| format!("reload failed: {e}"))?;
        }
        for key in changed_keys(&running, &new) {
            let applied = APPLIED
                .iter()
                .any(|a| key == *a || (a.ends_with('.') && key.starts_with(a)))
                || (self.tls.is_some() && APPLIED_TLS.contains(&key.as_str()));
            if !applied {
                tracing::warn!(target: "agent", key = %key, "configuration changed by a reload; it takes effect on restart");
            }
        }
        *running = new;
        Ok(())
    }
}

impl caravan_http::Reload for Reloader {
    async fn reload(&self) -> Result<(), String> {
        let args = self.args.clone();
        // Reading files and host facts blocks: off the runtime's workers.
        let loaded = tokio::task::spawn_blocking(move || crate::load::load(&args))
            .await
            .map_err(|e| format!("reload failed: {e}"))?;
        match loaded {
            Ok(new) => self.apply(new),
            Err(e) => {
                tracing::error!(target: "agent", error = %e, "reload failed; the running configuration is unchanged");
                Err(e)
            }
        }
    }
}

/// The dotted `/v1/agent/self` config keys (`Server.NumSchedulers`, …) whose values differ.
fn changed_keys(old: &AgentConfig, new: &AgentConfig) -> Vec<String> {
    let show = |c: &AgentConfig| {
        serde_json::to_value(ConfigDto::new(c, VersionDto::release("", ""))).unwrap_or_default()
    };
    let mut out = Vec::new();
    diff("", &show(old), &show(new), &mut out);
    out
}

fn diff(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    match (old, new) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let null = serde_json::Value::Null;
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    &child,
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::config::HostFacts;

    #[test]
    fn changed_keys_name_each_difference() {
        let old = AgentConfig::dev(&HostFacts::loopback("h", 2)).unwrap();
        let mut new = old.clone();
        assert!(changed_keys(&old, &new).is_empty());
        new.enable_debug = !old.enable_debug;
        new.server.num_schedulers = 1;
        let keys = changed_keys(&old, &new);
        assert_eq!(keys, ["EnableDebug", "Server.NumSchedulers"], "{keys:?}");
    }
}
