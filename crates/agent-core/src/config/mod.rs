//! Agent configuration: the file format ([`file`]), merging of sources, defaults, dev mode and
//! validation into a resolved [`AgentConfig`].

pub mod file;
pub mod nomad_only;
pub(crate) mod oneline;
pub mod telemetry;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine;

pub use file::{
    ConfigFile, ConfigSource, Format, LoadedSource, locate_value_error, merge_trees, parse_config,
    tree_to_file,
};

use crate::CoreError;
use crate::duration::parse_go_duration;
pub use crate::logfile::LogFileConfig;
pub use nomad_only::NomadOnly;
pub use telemetry::TelemetryConfig;

/// The scheduler types a worker can serve, in Nomad's default order (`_core` last).
pub const SCHEDULER_TYPES: [&str; 5] = ["service", "batch", "system", "sysbatch", "_core"];

/// Facts about the machine that defaults depend on; the caller reads them, so this crate stays pure.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The machine's host name (default node name).
    pub hostname: String,
    /// Logical CPUs (default and upper bound of `num_schedulers`).
    pub num_cpus: u32,
    /// The address advertised when listeners bind to an unspecified address.
    pub private_ip: IpAddr,
}

/// Log levels an agent accepts (Nomad's set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Most verbose.
    Trace,
    /// Debug.
    Debug,
    /// Info (default).
    Info,
    /// Warnings.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// Parses a level case-insensitively (`warning` is not accepted, as in Nomad).
    pub fn parse(text: &str) -> Option<LogLevel> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }

    /// The upper-case name Nomad prints (`DEBUG`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }
}

/// A port per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// HTTP API.
    pub http: u16,
    /// Agent RPC.
    pub rpc: u16,
    /// Gossip.
    pub serf: u16,
}

/// An IP address per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// HTTP API.
    pub http: IpAddr,
    /// Agent RPC.
    pub rpc: IpAddr,
    /// Gossip.
    pub serf: IpAddr,
}

/// The address other agents reach each listener on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertise {
    /// HTTP API.
    pub http: SocketAddr,
    /// Agent RPC.
    pub rpc: SocketAddr,
    /// Gossip.
    pub serf: SocketAddr,
}

/// `server { server_join { ... } }`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerJoin {
    /// Gossip addresses joined and retried at start.
    pub retry_join: Vec<String>,
    /// Wait between attempts.
    pub retry_interval: Duration,
    /// Attempts before giving up; 0 = forever.
    pub retry_max: u32,
}

/// The server role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Whether this agent runs a server.
    pub enabled: bool,
    /// Servers expected before a leader is elected.
    pub bootstrap_expect: u32,
    /// Scheduler workers.
    pub num_schedulers: u32,
    /// Scheduler types the workers handle (`_core` always present).
    pub enabled_schedulers: Vec<String>,
    /// Decoded gossip encryption key (16, 24 or 32 bytes).
    pub encrypt_key: Option<Vec<u8>>,
    /// Age after which down nodes are collected.
    pub node_gc_threshold: Duration,
    /// Raft log entries applied between snapshots (Nomad's `raft_snapshot_threshold`).
    pub raft_snapshot_threshold: u64,
    /// Gossip addresses joined once at start.
    pub start_join: Vec<String>,
    /// Join retry settings.
    pub server_join: ServerJoin,
    /// The leader's client heartbeat rule.
    pub heartbeat: crate::heartbeat::HeartbeatRule,
}

/// The client role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Whether this agent runs a client.
    pub enabled: bool,
    /// Configured server RPC addresses (`host:port`, port defaulting to 4647).
    pub servers: Vec<String>,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
    /// Node class.
    pub node_class: String,
}

/// TLS settings for the HTTP API and the RPC listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// TLS on the HTTP API.
    pub http: bool,
    /// TLS between agents.
    pub rpc: bool,
    /// CA bundle.
    pub ca_file: String,
    /// Certificate.
    pub cert_file: String,
    /// Private key.
    pub key_file: String,
    /// Require client certificates.
    pub verify_https_client: bool,
}

/// Connection protection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent HTTP connections per client IP (0 = unlimited).
    pub http_max_conns_per_client: u32,
    /// Concurrent RPC connections per client IP (0 = unlimited).
    pub rpc_max_conns_per_client: u32,
    /// Time allowed to send request headers on the HTTP API.
    pub https_handshake_timeout: Duration,
    /// Time allowed for the first request on an RPC connection.
    pub rpc_handshake_timeout: Duration,
}

/// The resolved, validated configuration an agent runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Node name (default: host name).
    pub node_name: String,
    /// Region (default `global`).
    pub region: String,
    /// Datacenter (default `dc1`).
    pub datacenter: String,
    /// State directory; `None` only in dev mode (state in memory).
    pub data_dir: Option<String>,
    /// Address all listeners bind to unless `addresses` overrides.
    pub bind_addr: IpAddr,
    /// Log level.
    pub log_level: LogLevel,
    /// JSON log lines.
    pub log_json: bool,
    /// The log file, when `log_file` is set.
    pub log_file: Option<LogFileConfig>,
    /// Debug endpoints without ACLs.
    pub enable_debug: bool,
    /// Headers set on every HTTP API response.
    pub http_api_response_headers: BTreeMap<String, String>,
    /// Listener ports.
    pub ports: Ports,
    /// Listener addresses.
    pub addresses: Addresses,
    /// Advertised addresses.
    pub advertise: Advertise,
    /// Server role.
    pub server: ServerConfig,
    /// Client role.
    pub client: ClientConfig,
    /// Whether ACLs are enforced.
    pub acl_enabled: bool,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Connection limits.
    pub limits: Limits,
    /// The `telemetry` block, with Nomad's defaults.
    pub telemetry: TelemetryConfig,
    /// Nomad's keys for what Caravan lacks, kept to be shown (and named at start).
    pub nomad_only: NomadOnly,
    /// Dev mode.
    pub dev_mode: bool,
    /// The configuration files that were read, in order.
    pub files: Vec<String>,
}

/// The settings `-dev` starts from, before files and flags merge over them.
pub fn dev_defaults() -> ConfigSource {
    let text = r#"
bind_addr = "127.0.0.1"
log_level = "DEBUG"
enable_debug = true
server {
  enabled = true
  bootstrap_expect = 1
}
client {
  enabled = true
}
acl {
  enabled = false
}
"#;
    // The literal above is fixed and checked by a unit test.
    parse_config("dev defaults", text, Format::Hcl).unwrap_or_default()
}

impl HostFacts {
    /// A host named `hostname` with `num_cpus` CPUs that advertises the loopback address: what an
    /// embedder or a test that runs on one machine describes.
    pub fn loopback(hostname: &str, num_cpus: u32) -> HostFacts {
        HostFacts {
            hostname: hostname.to_string(),
            num_cpus,
            private_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

impl AgentConfig {
    /// The configuration `caravan agent -dev` runs with on `host` (client and server, loopback
    /// addresses, no ACLs): a starting point for embedders and tests.
    pub fn dev(host: &HostFacts) -> Result<AgentConfig, CoreError> {
        AgentConfig::resolve(tree_to_file(&dev_defaults().tree)?, true, host, Vec::new())
    }

    /// Resolves merged sources into a validated configuration. `files` lists the files read.
    pub fn resolve(
        file: ConfigFile,
        dev_mode: bool,
        host: &HostFacts,
        files: Vec<String>,
    ) -> Result<AgentConfig, CoreError> {
        let bind_addr = parse_ip("bind_addr", file.bind_addr.as_deref().unwrap_or("0.0.0.0"))?;
        let ports = resolve_ports(file.ports.unwrap_or_default());
        let addresses = resolve_addresses(file.addresses.unwrap_or_default(), bind_addr)?;
        let advertise = resolve_advertise(
            file.advertise.unwrap_or_default(),
            &addresses,
            &ports,
            host.private_ip,
        )?;
        let server = resolve_server(file.server.unwrap_or_default(), host.num_cpus)?;
        let client = resolve_client(file.client.unwrap_or_default())?;
        let log_level_text = file.log_level.unwrap_or_else(|| "INFO".into());
        let log_level = LogLevel::parse(&log_level_text).ok_or_else(|| {
            invalid(format!(
                "log_level: invalid log level {log_level_text:?} (want trace, debug, info, warn or error)"
            ))
        })?;
        let log_file = resolve_log_file(
            file.log_file,
            file.log_rotate_bytes,
            file.log_rotate_duration,
            file.log_rotate_max_files,
        )?;
        let acl_enabled = file.acl.and_then(|a| a.enabled).unwrap_or(false);
        if !server.enabled && !client.enabled {
            return Err(invalid(
                "must specify either server, client or dev mode for the agent".into(),
            ));
        }
        if !dev_mode && file.data_dir.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(
                "must specify \"data_dir\" config option or \"data-dir\" CLI flag".into(),
            ));
        }
        let config = AgentConfig {
            node_name: non_empty(file.name).unwrap_or_else(|| host.hostname.clone()),
            region: non_empty(file.region).unwrap_or_else(|| "global".into()),
            datacenter: non_empty(file.datacenter).unwrap_or_else(|| "dc1".into()),
            data_dir: non_empty(file.data_dir),
            bind_addr,
            log_level,
            log_json: file.log_json.unwrap_or(false),
            log_file,
            enable_debug: file.enable_debug.unwrap_or(false),
            http_api_response_headers: file.http_api_response_headers.unwrap_or_default(),
            ports,
            addresses,
            advertise,
            server,
            client,
            acl_enabled,
            tls: resolve_tls(file.tls.unwrap_or_default())?,
            limits: resolve_limits(file.limits.unwrap_or_default())?,
            telemetry: TelemetryConfig::resolve(file.telemetry.unwrap_or_default())?,
            nomad_only: file.nomad_only,
            dev_mode,
            files,
        };
        Ok(config)
    }

    /// The gossip member name: `<node_name>.<region>`.
    pub fn member_name(&self) -> String {
        format!("{}.{}", self.node_name, self.region)
    }
}

fn invalid(message: String) -> CoreError {
    CoreError::Invalid(message)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn parse_ip(key: &str, text: &str) -> Result<IpAddr, CoreError> {
    text.parse()
        .map_err(|_| invalid(format!("{key}: {text:?} is not an IP address")))
}

fn parse_duration(
    key: &str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, CoreError> {
    match text {
        None => Ok(default),
        Some(t) => parse_go_duration(&t).map_err(|e| invalid(format!("{key}: {e}"))),
    }
}

/// `log_file` and its rotation keys. Nomad takes a negative byte or file count and a zero
/// period silently (a negative count even makes its pruning index past its list); here they are
/// value errors naming the key.
fn resolve_log_file(
    path: Option<String>,
    bytes: Option<i64>,
    duration: Option<String>,
    max_files: Option<i64>,
) -> Result<Option<LogFileConfig>, CoreError> {
    let bytes = match bytes {
        Some(n) if n < 0 => {
            return Err(invalid(format!("log_rotate_bytes: {n} is negative")));
        }
        n => n.unwrap_or(0) as u64,
    };
    let max_files = match max_files {
        Some(n) if n < 0 => {
            return Err(invalid(format!("log_rotate_max_files: {n} is negative")));
        }
        n => usize::try_from(n.unwrap_or(0)).unwrap_or(usize::MAX),
    };
    let period = parse_duration(
        "log_rotate_duration",
        duration.filter(|d| !d.is_empty()),
        crate::logfile::DEFAULT_ROTATE_DURATION,
    )?;
    if period.is_zero() {
        return Err(invalid(
            "log_rotate_duration: must be longer than 0s".to_string(),
        ));
    }
    Ok(non_empty(path).map(|p| LogFileConfig::new(&p, bytes, period, max_files)))
}

fn resolve_ports(p: file::PortsFile) -> Ports {
    Ports {
        http: p.http.unwrap_or(4646),
        rpc: p.rpc.unwrap_or(4647),
        serf: p.serf.unwrap_or(4648),
    }
}

fn resolve_addresses(a: file::AddressesFile, bind: IpAddr) -> Result<Addresses, CoreError> {
    let one = |key: &str, v: Option<String>| match v.filter(|s| !s.is_empty()) {
        None => Ok(bind),
        Some(text) => parse_ip(&format!("addresses.{key}"), &text),
    };
    Ok(Addresses {
        http: one("http", a.http)?,
        rpc: one("rpc", a.rpc)?,
        serf: one("serf", a.serf)?,
    })
}

fn resolve_advertise(
    a: file::AddressesFile,
    addresses: &Addresses,
    ports: &Ports,
    private_ip: IpAddr,
) -> Result<Advertise, CoreError> {
    let one =
        |key: &str, v: Option<String>, ip: IpAddr, port: u16| match v.filter(|s| !s.is_empty()) {
            None if ip.is_unspecified() => Ok(SocketAddr::new(private_ip, port)),
            None => Ok(SocketAddr::new(ip, port)),
            Some(text) => {
                parse_host_port(&text, port).map_err(|e| invalid(format!("advertise.{key}: {e}")))
            }
        };
    Ok(Advertise {
        http: one("http", a.http, addresses.http, ports.http)?,
        rpc: one("rpc", a.rpc, addresses.rpc, ports.rpc)?,
        serf: one("serf", a.serf, addresses.serf, ports.serf)?,
    })
}

/// Parses `ip`, `ip:port`, `[v6]:port` or a bare IPv6 address, with `default_port` when none is
/// given.
pub fn parse_host_port(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "{text:?} is not an IP address with an optional port"
    ))
}

/// Nomad's default `raft_snapshot_threshold`.
pub const DEFAULT_RAFT_SNAPSHOT_THRESHOLD: u64 = 8192;

/// The largest `raft_snapshot_threshold` taken (a log that long is still bounded).
pub const MAX_RAFT_SNAPSHOT_THRESHOLD: i64 = 1 << 24;

fn resolve_server(s: file::ServerFile, num_cpus: u32) -> Result<ServerConfig, CoreError> {
    let heartbeat = heartbeat_rule(&s)?;
    let num_schedulers = match s.num_schedulers {
        None => num_cpus,
        Some(n) if n < 0 || n > i64::from(num_cpus) => {
            return Err(invalid(format!(
                "server.num_schedulers: {n} is outside 0..={num_cpus} (the number of CPUs)"
            )));
        }
        Some(n) => n as u32,
    };
    let enabled_schedulers = match s.enabled_schedulers {
        None => SCHEDULER_TYPES.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            if let Some(bad) = list.iter().find(|t| !SCHEDULER_TYPES.contains(&t.as_str())) {
                return Err(invalid(format!(
                    "server.enabled_schedulers: unknown scheduler type {bad:?}"
                )));
            }
            if !list.iter().any(|t| t == "_core") {
                return Err(invalid(
                    "server.enabled_schedulers: must include \"_core\"".into(),
                ));
            }
            list
        }
    };
    let encrypt_key = match s.encrypt.filter(|k| !k.is_empty()) {
        None => None,
        Some(text) => Some(decode_gossip_key(&text)?),
    };
    let join = s.server_join.unwrap_or_default();
    let raft_snapshot_threshold = match s.raft_snapshot_threshold {
        None => DEFAULT_RAFT_SNAPSHOT_THRESHOLD,
        Some(n) if (1..=MAX_RAFT_SNAPSHOT_THRESHOLD).contains(&n) => n as u64,
        Some(n) => {
            return Err(invalid(format!(
                "server.raft_snapshot_threshold: {n} is outside 1..={MAX_RAFT_SNAPSHOT_THRESHOLD}"
            )));
        }
    };
    Ok(ServerConfig {
        raft_snapshot_threshold,
        enabled: s.enabled.unwrap_or(false),
        bootstrap_expect: s.bootstrap_expect.unwrap_or(0),
        num_schedulers,
        enabled_schedulers,
        encrypt_key,
        node_gc_threshold: parse_duration(
            "server.node_gc_threshold",
            s.node_gc_threshold,
            Duration::from_secs(24 * 3600),
        )?,
        start_join: s.start_join.unwrap_or_default(),
        heartbeat,
        server_join: ServerJoin {
            retry_join: join.retry_join.unwrap_or_default(),
            retry_interval: parse_duration(
                "server.server_join.retry_interval",
                join.retry_interval,
                Duration::from_secs(30),
            )?,
            retry_max: join.retry_max.unwrap_or(0),
        },
    })
}

/// `min_heartbeat_ttl`, `max_heartbeats_per_second`, `heartbeat_grace` and
/// `failover_heartbeat_ttl`, with Nomad's defaults.
fn heartbeat_rule(s: &file::ServerFile) -> Result<crate::heartbeat::HeartbeatRule, CoreError> {
    let d = crate::heartbeat::HeartbeatRule::default();
    let rate = s.max_heartbeats_per_second.unwrap_or(d.max_per_second);
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
        return Err(invalid(format!(
            "server.max_heartbeats_per_second: {rate} is not a rate above 0 (at most 1000000)"
        )));
    }
    let at_most_a_day = |key: &str, value: &Option<String>, default| {
        let v = parse_duration(key, value.clone(), default)?;
        if v > Duration::from_secs(86_400) {
            return Err(invalid(format!("{key}: at most 24h")));
        }
        Ok(v)
    };
    Ok(crate::heartbeat::HeartbeatRule {
        min_ttl: at_most_a_day("server.min_heartbeat_ttl", &s.min_heartbeat_ttl, d.min_ttl)?,
        max_per_second: rate,
        grace: at_most_a_day("server.heartbeat_grace", &s.heartbeat_grace, d.grace)?,
        failover_ttl: at_most_a_day(
            "server.failover_heartbeat_ttl",
            &s.failover_heartbeat_ttl,
            d.failover_ttl,
        )?,
    })
}

/// Decodes a base64 gossip key and checks its length (16, 24 or 32 bytes).
pub fn decode_gossip_key(text: &str) -> Result<Vec<u8>, CoreError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| {
            invalid(format!(
                "server.encrypt: failed to decode key from base64: {e}"
            ))
        })?;
    match key.len() {
        16 | 24 | 32 => Ok(key),
        n => Err(invalid(format!(
            "server.encrypt: key size must be 16, 24 or 32 bytes, got {n}"
        ))),
    }
}

fn resolve_client(c: file::ClientFile) -> Result<ClientConfig, CoreError> {
    let servers = c.servers.unwrap_or_default();
    for s in &servers {
        if s.trim().is_empty() {
            return Err(invalid("client.servers: empty server address".into()));
        }
    }
    Ok(ClientConfig {
        enabled: c.enabled.unwrap_or(false),
        servers,
        meta: c.meta.unwrap_or_default(),
        node_class: c.node_class.unwrap_or_default(),
    })
}

fn resolve_tls(t: file::TlsFile) -> Result<TlsConfig, CoreError> {
    let tls = TlsConfig {
        http: t.http.unwrap_or(false),
        rpc: t.rpc.unwrap_or(false),
        ca_file: t.ca_file.unwrap_or_default(),
        cert_file: t.cert_file.unwrap_or_default(),
        key_file: t.key_file.unwrap_or_default(),
        verify_https_client: t.verify_https_client.unwrap_or(false),
    };
    if (tls.http || tls.rpc) && (tls.cert_file.is_empty() || tls.key_file.is_empty()) {
        return Err(invalid(
            "tls: cert_file and key_file are required when tls.http or tls.rpc is true".into(),
        ));
    }
    if tls.rpc && tls.ca_file.is_empty() {
        return Err(invalid(
            "tls.ca_file: required when tls.rpc is true (agents verify each other)".into(),
        ));
    }
    if tls.verify_https_client && tls.ca_file.is_empty() {
        return Err(invalid(
            "tls.ca_file: required when tls.verify_https_client is true".into(),
        ));
    }
    Ok(tls)
}

fn resolve_limits(l: file::LimitsFile) -> Result<Limits, CoreError> {
    Ok(Limits {
        http_max_conns_per_client: l.http_max_conns_per_client.unwrap_or(100),
        rpc_max_conns_per_client: l.rpc_max_conns_per_client.unwrap_or(100),
        https_handshake_timeout: parse_duration(
            "limits.https_handshake_timeout",
            l.https_handshake_timeout,
            Duration::from_secs(5),
        )?,
        rpc_handshake_timeout: parse_duration(
            "limits.rpc_handshake_timeout",
            l.rpc_handshake_timeout,
            Duration::from_secs(5),
        )?,
    })
}

/// Default bind address when none is configured and not in dev mode.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostFacts {
        HostFacts {
            hostname: "box".into(),
            num_cpus: 2,
            private_ip: "10.1.2.3".parse().unwrap(),
        }
    }

    fn resolve(text: &str, dev: bool) -> Result<AgentConfig, CoreError> {
        let mut tree = if dev {
            dev_defaults().tree
        } else {
            Default::default()
        };
        merge_trees(&mut tree, parse_config("t.hcl", text, Format::Hcl)?.tree);
        AgentConfig::resolve(tree_to_file(&tree)?, dev, &host(), vec![])
    }

    #[test]
    fn dev_mode_needs_nothing_else() {
        let c = resolve("", true).unwrap();
        assert!(c.server.enabled && c.client.enabled && c.enable_debug && !c.acl_enabled);
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1");
        assert_eq!(c.advertise.rpc.to_string(), "127.0.0.1:4647");
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.server.bootstrap_expect, 1);
        assert_eq!(c.server.num_schedulers, 2);
        assert_eq!(
            c.server.raft_snapshot_threshold,
            DEFAULT_RAFT_SNAPSHOT_THRESHOLD
        );
        assert_eq!(c.server.enabled_schedulers.last().unwrap(), "_core");
        assert_eq!(c.member_name(), "box.global");
    }

    #[test]
    fn unspecified_bind_advertises_private_ip() {
        let c = resolve("data_dir = \"/d\"\nserver {\n enabled = true\n}\n", false).unwrap();
        assert_eq!(c.advertise.serf.to_string(), "10.1.2.3:4648");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            (
                "data_dir = \"/d\"\n",
                "must specify either server, client or dev mode",
            ),
            (
                "server {\n enabled = true\n}\n",
                "must specify \"data_dir\"",
            ),
            (
                "data_dir = \"/d\"\nbind_addr = \"x\"\nclient {\n enabled = true\n}\n",
                "bind_addr:",
            ),
            (
                "data_dir = \"/d\"\nlog_level = \"warning\"\nclient {\n enabled = true\n}\n",
                "log_level:",
            ),
            (
                "data_dir = \"/d\"\nserver {\n enabled = true\n num_schedulers = 3\n}\n",
                "server.num_schedulers:",
            ),
            (
                "data_dir = \"/d\"\nserver {\n enabled = true\n raft_snapshot_threshold = 0\n}\n",
                "server.raft_snapshot_threshold: 0 is outside 1..=16777216",
            ),
            (
                "data_dir = \"/d\"\nserver {\n enabled = true\n enabled_schedulers = [\"service\"]\n}\n",
                "must include \"_core\"",
            ),
            (
                "data_dir = \"/d\"\nserver {\n enabled = true\n encrypt = \"aGVsbG8=\"\n}\n",
                "key size must be 16, 24 or 32 bytes, got 5",
            ),
            (
                "data_dir = \"/d\"\nserver {\n enabled = true\n encrypt = \"!!\"\n}\n",
                "server.encrypt: failed to decode",
            ),
            (
                "data_dir = \"/d\"\nserver {\n enabled = true\n node_gc_threshold = \"1d\"\n}\n",
                "server.node_gc_threshold: time: unknown unit",
            ),
            (
                "data_dir = \"/d\"\nlog_file = \"/l/\"\nlog_rotate_bytes = -1\nclient {\n enabled = true\n}\n",
                "log_rotate_bytes: -1 is negative",
            ),
            (
                "data_dir = \"/d\"\nlog_rotate_max_files = -2\nclient {\n enabled = true\n}\n",
                "log_rotate_max_files: -2 is negative",
            ),
            (
                "data_dir = \"/d\"\nlog_rotate_duration = \"1d\"\nclient {\n enabled = true\n}\n",
                "log_rotate_duration: time: unknown unit",
            ),
            (
                "data_dir = \"/d\"\nlog_rotate_duration = \"0s\"\nclient {\n enabled = true\n}\n",
                "log_rotate_duration: must be longer than 0s",
            ),
            (
                "data_dir = \"/d\"\nadvertise {\n rpc = \"host\"\n}\nclient {\n enabled = true\n}\n",
                "advertise.rpc:",
            ),
            (
                "data_dir = \"/d\"\ntls {\n http = true\n}\nclient {\n enabled = true\n}\n",
                "tls: cert_file and key_file are required",
            ),
            (
                "data_dir = \"/d\"\ntls {\n rpc = true\n cert_file = \"c\"\n key_file = \"k\"\n}\nclient {\n enabled = true\n}\n",
                "tls.ca_file: required when tls.rpc",
            ),
        ];
        for (text, want) in cases {
            let err = resolve(text, false).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn log_file_keys_resolve() {
        let c = resolve("", true).unwrap();
        assert_eq!(c.log_file, None);
        let c = resolve(
            "log_file = \"/var/log/c/\"\nlog_rotate_bytes = 1000\nlog_rotate_duration = \"1h\"\nlog_rotate_max_files = 3\n",
            true,
        )
        .unwrap();
        let f = c.log_file.unwrap();
        assert_eq!(f.active_path(), "/var/log/c/nomad.log");
        assert_eq!((f.rotate_bytes, f.max_files), (1000, 3));
        assert_eq!(f.rotate_duration, Duration::from_secs(3600));
        let c = resolve("log_file = \"/l/a.log\"\n", true).unwrap();
        let f = c.log_file.unwrap();
        assert_eq!((f.rotate_bytes, f.max_files), (0, 0));
        assert_eq!(f.rotate_duration, crate::logfile::DEFAULT_ROTATE_DURATION);
    }

    /// A server and client configuration as Nomad's documentation writes them, with blocks for
    /// subsystems Caravan lacks: it loads, and each such key is named once.
    #[test]
    fn real_nomad_files_load() {
        let text = r#"
datacenter = "dc1"
data_dir   = "/opt/nomad/data"
log_include_location = true
leave_on_terminate = true
server {
  enabled          = true
  bootstrap_expect = 3
  heartbeat_grace  = "10s"
  job_gc_threshold = "4h"
  default_scheduler_config {
    scheduler_algorithm = "spread"
    preemption_config {
      batch_scheduler_enabled = true
    }
  }
}
client {
  enabled = true
  node_pool = "prod"
  options {
    "driver.raw_exec.enable" = "1"
  }
  host_volume "data" {
    path      = "/srv/data"
    read_only = false
  }
  reserved {
    cpu    = 500
    memory = 512
  }
}
acl {
  enabled           = true
  token_ttl         = "30s"
  replication_token = "a-secret"
}
tls {
  http = false
  verify_server_hostname = true
}
consul {
  address = "127.0.0.1:8500"
  token   = "consul-secret"
  auto_advertise = true
}
consul {
  name    = "other"
  address = "10.0.0.2:8500"
}
vault {
  enabled = true
  address = "https://vault.service.consul:8200"
}
telemetry {
  collection_interval        = "5s"
  disable_hostname           = true
  prometheus_metrics         = true
  publish_allocation_metrics = true
  publish_node_metrics       = true
  circonus_api_token         = "circ-secret"
}
plugin "docker" {
  config {
    allow_privileged = true
    volumes {
      enabled = true
    }
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
ui {
  enabled = true
  label {
    text = "prod"
  }
}
autopilot {
  cleanup_dead_servers = true
  last_contact_threshold = "200ms"
}
audit {
  enabled = true
}
"#;
        let c = resolve(text, false).unwrap();
        assert_eq!(
            c.nomad_only.paths(),
            [
                "log_include_location",
                "leave_on_terminate",
                "consul",
                "vault",
                "ui",
                "autopilot",
                "plugin",
                "audit",
                "server.job_gc_threshold",
                "server.default_scheduler_config",
                "client.node_pool",
                "client.options",
                "client.reserved",
                "client.host_volume",
                "acl.token_ttl",
                "acl.replication_token",
                "tls.verify_server_hostname",
            ]
        );
        assert!(c.server.enabled && c.client.enabled && c.acl_enabled);
        assert_eq!(c.server.bootstrap_expect, 3);
        let consuls = c.nomad_only.get("consul").unwrap().as_array().unwrap();
        assert_eq!(consuls.len(), 2, "two consul blocks stay two");
        let plugins = c.nomad_only.get("plugin").unwrap();
        assert!(plugins.get("docker").is_some() && plugins.get("raw_exec").is_some());
        assert!(c.telemetry.prometheus_metrics && c.telemetry.disable_hostname);
        assert_eq!(c.telemetry.collection_interval(), Duration::from_secs(5));
        assert_eq!(c.telemetry.circonus[0], "circ-secret");
        let debug = format!("{c:?}");
        for secret in ["a-secret", "consul-secret", "circ-secret"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        // A key Nomad does not have is still an error naming it.
        let err = resolve("consul {\n address = \"x\"\n}\nserver {\n heartbeat_grace = \"1s\"\n hartbeat_grace = \"1s\"\n}\n", true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.hcl:6: unknown key server.hartbeat_grace"
        );
        let err = resolve("consull {\n}\n", true).unwrap_err();
        assert_eq!(err.to_string(), "t.hcl:1: unknown key consull");
        // Telemetry's keys are typed and its durations checked.
        let err = resolve("telemetry {\n prometheus_metrics = \"yes\"\n}\n", true).unwrap_err();
        assert!(
            err.to_string()
                .contains("telemetry.prometheus_metrics: invalid type"),
            "{err}"
        );
        let err = resolve("telemetry {\n collection_interval = \"1d\"\n}\n", true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("telemetry.collection_interval: time: unknown unit"),
            "{err}"
        );
        let err = resolve("telemetry {\n bogus = 1\n}\n", true).unwrap_err();
        assert_eq!(err.to_string(), "t.hcl:2: unknown key telemetry.bogus");
        let d = resolve("", true).unwrap();
        assert_eq!(d.telemetry, TelemetryConfig::default());
        assert_eq!(d.nomad_only, NomadOnly::default());
    }

    #[test]
    fn good_key_decodes() {
        let key = decode_gossip_key("Ym9ib2JvYm9ib2JvYm9ib2JvYm9ib2JvYm9ib2JvYm8=").unwrap();
        assert_eq!(key.len(), 32);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("1.2.3.4", 4647).unwrap().to_string(),
            "1.2.3.4:4647"
        );
        assert_eq!(
            parse_host_port("1.2.3.4:9", 4647).unwrap().to_string(),
            "1.2.3.4:9"
        );
        assert_eq!(
            parse_host_port("::1", 4647).unwrap().to_string(),
            "[::1]:4647"
        );
        assert_eq!(
            parse_host_port("[::1]:5", 4647).unwrap().to_string(),
            "[::1]:5"
        );
        assert!(parse_host_port("nohost:1", 4647).is_err());
    }
}
