//! Wire types with Nomad's exact field names and casing. Domain types stay in agent-core; these
//! exist only to be encoded.

use std::collections::BTreeMap;

use crate::config_view;
use caravan_agent_core::acl::{Policy, Token};
use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::duration::format_go_duration;
use caravan_agent_core::jobs::{
    Allocation, Evaluation, GroupSubmission, Job, JobSubmission, Node, Task, TaskGroup,
    TaskSubmission,
};
use caravan_agent_core::member::Member;
use serde::{Deserialize, Serialize};

/// `GET /v1/agent/self`: lowercase top-level keys.
#[derive(Debug, Serialize)]
pub struct SelfResponse {
    /// The running configuration.
    pub config: ConfigDto,
    /// This agent's gossip member (a zero member on client-only agents).
    pub member: MemberDto,
    /// Subsystem statistics, all values strings.
    pub stats: BTreeMap<String, BTreeMap<String, String>>,
}

/// A gossip member as Serf encodes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MemberDto {
    /// `<node>.<region>`.
    pub name: String,
    /// IP text, or `null`.
    pub addr: Option<String>,
    /// Gossip port.
    pub port: u16,
    /// Tags, or `null`.
    pub tags: Option<BTreeMap<String, String>>,
    /// `alive`, `leaving`, `left`, `failed` or `none`.
    pub status: String,
    /// Lowest protocol version.
    pub protocol_min: u8,
    /// Highest protocol version.
    pub protocol_max: u8,
    /// Current protocol version.
    pub protocol_cur: u8,
    /// Lowest delegate version.
    pub delegate_min: u8,
    /// Highest delegate version.
    pub delegate_max: u8,
    /// Current delegate version.
    pub delegate_cur: u8,
}

impl From<&Member> for MemberDto {
    fn from(m: &Member) -> MemberDto {
        let [protocol_min, protocol_max, protocol_cur] = m.versions.protocol;
        let [delegate_min, delegate_max, delegate_cur] = m.versions.delegate;
        MemberDto {
            name: m.name.clone(),
            addr: m.addr.map(|a| a.to_string()),
            port: m.port,
            tags: m.tags.clone(),
            status: m.status.as_str().to_string(),
            protocol_min,
            protocol_max,
            protocol_cur,
            delegate_min,
            delegate_max,
            delegate_cur,
        }
    }
}

/// One server of the Raft configuration (`/v1/operator/raft/configuration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServerDto {
    /// Server ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Member name (`name.region`), empty when gossip has not told it.
    pub node: String,
    /// RPC address.
    pub address: String,
    /// Whether it leads.
    pub leader: bool,
    /// Whether it votes.
    pub voter: bool,
    /// Raft protocol version (`"3"`).
    pub raft_protocol: String,
}

/// The Raft configuration, as Nomad's `Operator.RaftGetConfiguration` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftConfigurationDto {
    /// The servers.
    pub servers: Vec<RaftServerDto>,
    /// The log index of the configuration.
    pub index: u64,
}

/// One client node's last heartbeat (`/v1/nodes/heartbeats`, a Caravan addition: Nomad keeps
/// this only in the leader's timers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeHeartbeatDto {
    /// The node.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// When its last heartbeat reached the leader, RFC 3339 on the answering server's clock.
    pub last_heartbeat: String,
    /// Nanoseconds since then, as of the answer (a Go `time.Duration`): what a reader whose
    /// clock differs from the server's should use.
    pub since_last_heartbeat: u64,
    /// The TTL the node was told, in nanoseconds (a Go `time.Duration`).
    #[serde(rename = "HeartbeatTTL")]
    pub heartbeat_ttl: u64,
}

impl NodeHeartbeatDto {
    /// The wire form of `beat`, answered at `now`.
    pub fn new(
        beat: &caravan_agent_core::heartbeat::LastHeartbeat,
        now: std::time::SystemTime,
    ) -> Self {
        let since = std::time::Duration::from_millis(beat.since_ms);
        let at = now
            .checked_sub(since)
            .filter(|t| *t >= std::time::UNIX_EPOCH)
            .unwrap_or(std::time::UNIX_EPOCH);
        NodeHeartbeatDto {
            node_id: beat.node_id.clone(),
            last_heartbeat: humantime::format_rfc3339_millis(at).to_string(),
            since_last_heartbeat: beat.since_ms.saturating_mul(1_000_000),
            heartbeat_ttl: beat.ttl_ms.saturating_mul(1_000_000),
        }
    }
}

/// `/v1/operator/autopilot/health` (Nomad's `OperatorHealthReply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutopilotHealthDto {
    /// Every voter healthy.
    pub healthy: bool,
    /// Healthy voters beyond a quorum.
    pub failure_tolerance: u64,
    /// Each voter.
    pub servers: Vec<ServerHealthDto>,
}

/// One voter's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerHealthDto {
    /// Server ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Member name.
    pub name: String,
    /// RPC address.
    pub address: String,
    /// Gossip status.
    pub serf_status: String,
    /// Build version.
    pub version: String,
    /// Whether it leads.
    pub leader: bool,
    /// Time since it last heard from the leader, as a Go duration (`"0s"`, `"12ms"`).
    pub last_contact: String,
    /// The term of its last log entry.
    pub last_term: u64,
    /// Its last log index.
    pub last_index: u64,
    /// Its verdict.
    pub healthy: bool,
    /// Whether it votes.
    pub voter: bool,
    /// Since when its verdict has held (RFC 3339).
    pub stable_since: String,
}

/// Build version facts (`config.Version`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionDto {
    /// Build date (RFC 3339), empty when unknown.
    pub build_date: String,
    /// Source revision.
    pub revision: String,
    /// Version.
    pub version: String,
    /// Pre-release tag.
    pub version_prerelease: String,
    /// Build metadata.
    pub version_metadata: String,
}

impl VersionDto {
    /// A release version with its source revision and no pre-release or metadata.
    pub fn release(version: &str, revision: &str) -> VersionDto {
        VersionDto {
            build_date: String::new(),
            revision: revision.to_string(),
            version: version.to_string(),
            version_prerelease: String::new(),
            version_metadata: String::new(),
        }
    }
}

/// Per-listener values (`Ports`, `Addresses`, `AdvertiseAddrs`).
#[derive(Debug, Serialize)]
pub struct PerListener<T> {
    /// HTTP API.
    #[serde(rename = "HTTP")]
    pub http: T,
    /// RPC.
    #[serde(rename = "RPC")]
    pub rpc: T,
    /// Gossip.
    #[serde(rename = "Serf")]
    pub serf: T,
}

/// `config.Server`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerDto {
    /// Whether the server runs.
    pub enabled: bool,
    /// Expected servers.
    pub bootstrap_expect: u32,
    /// Worker count.
    pub num_schedulers: u32,
    /// Scheduler types.
    pub enabled_schedulers: Vec<String>,
    /// Go duration string.
    #[serde(rename = "NodeGCThreshold")]
    pub node_gc_threshold: String,
    /// `heartbeat_grace`, nanoseconds.
    pub heartbeat_grace: u64,
    /// `min_heartbeat_ttl`, nanoseconds.
    #[serde(rename = "MinHeartbeatTTL")]
    pub min_heartbeat_ttl: u64,
    /// `max_heartbeats_per_second`.
    pub max_heartbeats_per_second: f64,
    /// `failover_heartbeat_ttl`, nanoseconds.
    #[serde(rename = "FailoverHeartbeatTTL")]
    pub failover_heartbeat_ttl: u64,
    /// Join settings.
    pub server_join: ServerJoinDto,
    /// Nomad's server keys Caravan keeps without acting on them.
    #[serde(flatten)]
    pub nomad_only: serde_json::Map<String, serde_json::Value>,
}

/// `config.Server.ServerJoin`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerJoinDto {
    /// Addresses joined at start.
    pub start_join: Vec<String>,
    /// Addresses retried at start.
    pub retry_join: Vec<String>,
    /// Retry interval in nanoseconds.
    pub retry_interval: u64,
    /// Attempts; 0 = forever.
    pub retry_max_attempts: u32,
}

/// `config.Client`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientDto {
    /// Whether the client runs.
    pub enabled: bool,
    /// Configured servers.
    pub servers: Vec<String>,
    /// Node class.
    pub node_class: String,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
    /// Nomad's client keys Caravan keeps without acting on them.
    #[serde(flatten)]
    pub nomad_only: serde_json::Map<String, serde_json::Value>,
}

/// `config.ACL`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AclDto {
    /// Enforcement on.
    pub enabled: bool,
    /// Replication token, `<redacted>` when set.
    pub replication_token: String,
    /// Nomad's ACL keys Caravan keeps without acting on them (`TokenTTL`, …).
    #[serde(flatten)]
    pub nomad_only: serde_json::Map<String, serde_json::Value>,
}

/// `config.TLSConfig`.
#[derive(Debug, Serialize)]
pub struct TlsDto {
    /// TLS on HTTP.
    #[serde(rename = "EnableHTTP")]
    pub enable_http: bool,
    /// TLS on RPC.
    #[serde(rename = "EnableRPC")]
    pub enable_rpc: bool,
    /// CA bundle.
    #[serde(rename = "CAFile")]
    pub ca_file: String,
    /// Certificate.
    #[serde(rename = "CertFile")]
    pub cert_file: String,
    /// Key.
    #[serde(rename = "KeyFile")]
    pub key_file: String,
    /// Client certificates required.
    #[serde(rename = "VerifyHTTPSClient")]
    pub verify_https_client: bool,
    /// Nomad's TLS keys Caravan keeps without acting on them.
    #[serde(flatten)]
    pub nomad_only: serde_json::Map<String, serde_json::Value>,
}

/// `config.Limits`.
#[derive(Debug, Serialize)]
pub struct LimitsDto {
    /// Per-IP HTTP connections.
    #[serde(rename = "HTTPMaxConnsPerClient")]
    pub http_max_conns_per_client: u32,
    /// Per-IP RPC connections.
    #[serde(rename = "RPCMaxConnsPerClient")]
    pub rpc_max_conns_per_client: u32,
    /// Go duration string.
    #[serde(rename = "HTTPSHandshakeTimeout")]
    pub https_handshake_timeout: String,
    /// Go duration string.
    #[serde(rename = "RPCHandshakeTimeout")]
    pub rpc_handshake_timeout: String,
}

/// `config`: the running configuration in Nomad's field names. Secrets are redacted; the gossip
/// key is never shown.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigDto {
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node name.
    pub node_name: String,
    /// State directory (empty in dev mode).
    pub data_dir: String,
    /// Log level.
    pub log_level: String,
    /// JSON logs.
    pub log_json: bool,
    /// The log file (`""`: none).
    pub log_file: String,
    /// Its rotation period, a Go duration (`""` without a log file).
    pub log_rotate_duration: String,
    /// Its size limit in bytes (0: none).
    pub log_rotate_bytes: u64,
    /// Rotated files kept (0: all).
    pub log_rotate_max_files: usize,
    /// Bind address.
    pub bind_addr: String,
    /// Debug endpoints without ACLs.
    pub enable_debug: bool,
    /// Ports.
    pub ports: PerListener<u16>,
    /// Bind addresses.
    pub addresses: PerListener<String>,
    /// Advertised addresses.
    pub advertise_addrs: PerListener<String>,
    /// Client settings.
    pub client: ClientDto,
    /// Server settings.
    pub server: ServerDto,
    /// ACL settings.
    #[serde(rename = "ACL")]
    pub acl: AclDto,
    /// Telemetry settings.
    pub telemetry: TelemetryDto,
    /// Dev mode.
    pub dev_mode: bool,
    /// Build version.
    pub version: VersionDto,
    /// Configuration files read.
    pub files: Vec<String>,
    /// TLS settings.
    #[serde(rename = "TLSConfig")]
    pub tls_config: TlsDto,
    /// Extra response headers.
    #[serde(rename = "HTTPAPIResponseHeaders")]
    pub http_api_response_headers: BTreeMap<String, String>,
    /// Connection limits.
    pub limits: LimitsDto,
    /// Nomad's settings for subsystems Caravan lacks (`Consuls`, `Vaults`, `UI`, `Plugins`, …,
    /// and scalars such as `LeaveOnTerm`), as the configuration gives them, secrets redacted.
    #[serde(flatten)]
    pub nomad_only: serde_json::Map<String, serde_json::Value>,
}

impl ConfigDto {
    /// The wire form of a configuration.
    pub fn new(c: &AgentConfig, version: VersionDto) -> ConfigDto {
        ConfigDto {
            region: c.region.clone(),
            datacenter: c.datacenter.clone(),
            node_name: c.node_name.clone(),
            data_dir: c.data_dir.clone().unwrap_or_default(),
            log_level: c.log_level.as_str().to_string(),
            log_json: c.log_json,
            log_file: c
                .log_file
                .as_ref()
                .map_or(String::new(), |f| f.path.clone()),
            log_rotate_duration: c
                .log_file
                .as_ref()
                .map_or(String::new(), |f| format_go_duration(f.rotate_duration)),
            log_rotate_bytes: c.log_file.as_ref().map_or(0, |f| f.rotate_bytes),
            log_rotate_max_files: c.log_file.as_ref().map_or(0, |f| f.max_files),
            bind_addr: c.bind_addr.to_string(),
            enable_debug: c.enable_debug,
            ports: PerListener {
                http: c.ports.http,
                rpc: c.ports.rpc,
                serf: c.ports.serf,
            },
            addresses: PerListener {
                http: c.addresses.http.to_string(),
                rpc: c.addresses.rpc.to_string(),
                serf: c.addresses.serf.to_string(),
            },
            advertise_addrs: PerListener {
                http: c.advertise.http.to_string(),
                rpc: c.advertise.rpc.to_string(),
                serf: c.advertise.serf.to_string(),
            },
            client: ClientDto {
                enabled: c.client.enabled,
                servers: c.client.servers.clone(),
                node_class: c.client.node_class.clone(),
                meta: c.client.meta.clone(),
                nomad_only: config_view::nested(&c.nomad_only, "client"),
            },
            server: ServerDto {
                enabled: c.server.enabled,
                bootstrap_expect: c.server.bootstrap_expect,
                num_schedulers: c.server.num_schedulers,
                enabled_schedulers: c.server.enabled_schedulers.clone(),
                node_gc_threshold: format_go_duration(c.server.node_gc_threshold),
                heartbeat_grace: c.server.heartbeat.grace.as_nanos() as u64,
                min_heartbeat_ttl: c.server.heartbeat.min_ttl.as_nanos() as u64,
                max_heartbeats_per_second: c.server.heartbeat.max_per_second,
                failover_heartbeat_ttl: c.server.heartbeat.failover_ttl.as_nanos() as u64,
                server_join: ServerJoinDto {
                    start_join: c.server.start_join.clone(),
                    retry_join: c.server.server_join.retry_join.clone(),
                    retry_interval: c.server.server_join.retry_interval.as_nanos() as u64,
                    retry_max_attempts: c.server.server_join.retry_max,
                },
                nomad_only: config_view::nested(&c.nomad_only, "server"),
            },
            acl: {
                let mut nomad_only = config_view::nested(&c.nomad_only, "acl");
                let token = nomad_only.remove("ReplicationToken");
                AclDto {
                    enabled: c.acl_enabled,
                    replication_token: token
                        .and_then(|t| t.as_str().map(String::from))
                        .unwrap_or_default(),
                    nomad_only,
                }
            },
            telemetry: TelemetryDto::new(&c.telemetry),
            dev_mode: c.dev_mode,
            version,
            files: c.files.clone(),
            tls_config: TlsDto {
                enable_http: c.tls.http,
                enable_rpc: c.tls.rpc,
                ca_file: c.tls.ca_file.clone(),
                cert_file: c.tls.cert_file.clone(),
                key_file: c.tls.key_file.clone(),
                verify_https_client: c.tls.verify_https_client,
                nomad_only: config_view::nested(&c.nomad_only, "tls"),
            },
            http_api_response_headers: c.http_api_response_headers.clone(),
            limits: LimitsDto {
                http_max_conns_per_client: c.limits.http_max_conns_per_client,
                rpc_max_conns_per_client: c.limits.rpc_max_conns_per_client,
                https_handshake_timeout: format_go_duration(c.limits.https_handshake_timeout),
                rpc_handshake_timeout: format_go_duration(c.limits.rpc_handshake_timeout),
            },
            nomad_only: config_view::top_level(&c.nomad_only),
        }
    }
}

/// `config.Telemetry`, Nomad's field names; `CirconusAPIToken` is `<redacted>` when set.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TelemetryDto {
    /// Go duration text.
    pub in_memory_collection_interval: String,
    /// Go duration text.
    pub in_memory_retention_period: String,
    /// statsite.
    pub statsite_addr: String,
    /// statsd.
    pub statsd_addr: String,
    /// DogStatsD.
    #[serde(rename = "DataDogAddr")]
    pub datadog_addr: String,
    /// DogStatsD tags.
    #[serde(rename = "DataDogTags")]
    pub datadog_tags: Option<Vec<String>>,
    /// Prometheus text format served.
    pub prometheus_metrics: bool,
    /// No host name in gauge names.
    pub disable_hostname: bool,
    /// Node name label.
    pub use_node_name: bool,
    /// Go duration text.
    pub collection_interval: String,
    /// Allocation metrics.
    pub publish_allocation_metrics: bool,
    /// Node metrics.
    pub publish_node_metrics: bool,
    /// Allocation metadata labels.
    pub include_alloc_metadata_in_metrics: bool,
    /// Allowed metadata keys.
    pub allowed_metadata_keys_in_metrics: Option<Vec<String>>,
    /// Prefix rules.
    pub prefix_filter: Option<Vec<String>>,
    /// Default for unnamed metrics.
    pub filter_default: Option<bool>,
    /// Dispatched job summaries off.
    pub disable_dispatched_job_summary_metrics: bool,
    /// Quota utilisation off.
    pub disable_quota_utilization_metrics: bool,
    /// RPC rate labels off.
    #[serde(rename = "DisableRPCRateMetricsLabels")]
    pub disable_rpc_rate_metrics_labels: bool,
    /// Allocation hook timings off.
    pub disable_allocation_hook_metrics: Option<bool>,
    /// The Circonus fields, by Go name, in Nomad's order.
    #[serde(flatten)]
    pub circonus: serde_json::Map<String, serde_json::Value>,
}

/// The Circonus fields' Go names, in `caravan_agent_core::config::telemetry::CIRCONUS_KEYS`
/// order.
const CIRCONUS_NAMES: [&str; 13] = [
    "CirconusAPIToken",
    "CirconusAPIApp",
    "CirconusAPIURL",
    "CirconusSubmissionInterval",
    "CirconusCheckSubmissionURL",
    "CirconusCheckID",
    "CirconusCheckForceMetricActivation",
    "CirconusCheckInstanceID",
    "CirconusCheckSearchTag",
    "CirconusCheckTags",
    "CirconusCheckDisplayName",
    "CirconusBrokerID",
    "CirconusBrokerSelectTag",
];

impl TelemetryDto {
    /// The wire form of the telemetry settings.
    pub fn new(t: &caravan_agent_core::config::TelemetryConfig) -> TelemetryDto {
        let circonus = CIRCONUS_NAMES
            .iter()
            .zip(&t.circonus)
            .enumerate()
            .map(|(i, (name, value))| {
                let value = if i == 0 {
                    config_view::redact(&serde_json::Value::from(value.as_str()))
                } else {
                    serde_json::Value::from(value.as_str())
                };
                ((*name).to_string(), value)
            })
            .collect();
        TelemetryDto {
            in_memory_collection_interval: t.in_memory_collection_interval.clone(),
            in_memory_retention_period: t.in_memory_retention_period.clone(),
            statsite_addr: t.statsite_address.clone(),
            statsd_addr: t.statsd_address.clone(),
            datadog_addr: t.datadog_address.clone(),
            datadog_tags: t.datadog_tags.clone(),
            prometheus_metrics: t.prometheus_metrics,
            disable_hostname: t.disable_hostname,
            use_node_name: t.use_node_name,
            collection_interval: t.collection_interval.clone(),
            publish_allocation_metrics: t.publish_allocation_metrics,
            publish_node_metrics: t.publish_node_metrics,
            include_alloc_metadata_in_metrics: t.include_alloc_metadata_in_metrics,
            allowed_metadata_keys_in_metrics: t.allowed_metadata_keys_in_metrics.clone(),
            prefix_filter: t.prefix_filter.clone(),
            filter_default: t.filter_default,
            disable_dispatched_job_summary_metrics: t.disable_dispatched_job_summary_metrics,
            disable_quota_utilization_metrics: t.disable_quota_utilization_metrics,
            disable_rpc_rate_metrics_labels: t.disable_rpc_rate_metrics_labels,
            disable_allocation_hook_metrics: t.disable_allocation_hook_metrics,
            circonus,
        }
    }
}

/// `GET /v1/agent/members`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct MembersResponse {
    /// The serving server's node name.
    pub server_name: String,
    /// Its region.
    pub server_region: String,
    /// Its datacenter.
    #[serde(rename = "ServerDC")]
    pub server_dc: String,
    /// Every member the serving server knows.
    pub members: Vec<MemberDto>,
}

impl MembersResponse {
    /// The answer of the server `config` describes (its node name, region and datacenter), which
    /// knows `members`.
    pub fn of(config: &AgentConfig, members: Vec<MemberDto>) -> Self {
        MembersResponse {
            server_name: config.node_name.clone(),
            server_region: config.region.clone(),
            server_dc: config.datacenter.clone(),
            members,
        }
    }
}

/// `/v1/agent/keyring/*`'s answer (Nomad's `KeyringResponse`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct KeyringResponse {
    /// Messages by member name.
    pub messages: std::collections::BTreeMap<String, String>,
    /// For `list`: each key (base64) and how many members hold it.
    pub keys: std::collections::BTreeMap<String, usize>,
    /// Members asked.
    pub num_nodes: usize,
}

/// `PUT /v1/agent/join`: snake_case, all three keys always present.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JoinResponse {
    /// Addresses contacted.
    pub num_joined: usize,
    /// Why some failed, or empty.
    pub error: String,
    /// A deprecation warning, or empty.
    pub warning: String,
}

/// One subsystem's health (`{"ok": bool, "message": string}`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HealthCheck {
    /// Healthy.
    pub ok: bool,
    /// `ok`, or why not.
    pub message: String,
}

/// `GET /v1/agent/health`: a kind that was not checked is omitted.
#[derive(Debug, Default, Serialize)]
pub struct HealthResponse {
    /// The client's check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<HealthCheck>,
    /// The server's check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<HealthCheck>,
}

/// Disk usage of one mount point, in MiB.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Total size.
    #[serde(rename = "DiskMB")]
    pub disk_mb: i64,
    /// Used (total − free).
    #[serde(rename = "UsedMB")]
    pub used_mb: i64,
}

/// `GET /v1/agent/host`: the host data object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostData {
    /// `uname` fields: machine nodename release sysname version.
    #[serde(rename = "OS")]
    pub os: String,
    /// One map per interface address (go-sockaddr keys).
    #[serde(rename = "Network")]
    pub network: Vec<BTreeMap<String, String>>,
    /// `/etc/resolv.conf`, or the error reading it.
    #[serde(rename = "ResolvConf")]
    pub resolv_conf: String,
    /// `/etc/hosts`, or the error reading it.
    #[serde(rename = "Hosts")]
    pub hosts: String,
    /// The process environment, secrets redacted.
    #[serde(rename = "Environment")]
    pub environment: BTreeMap<String, String>,
    /// Disk usage per mount point.
    #[serde(rename = "Disk")]
    pub disk: BTreeMap<String, DiskUsage>,
}

/// `GET /v1/agent/host?server_id=…|node_id=…`: the wrapped form.
#[derive(Debug, Serialize)]
pub struct HostDataResponse<'a> {
    /// The server's member name or the client's node ID.
    #[serde(rename = "AgentID")]
    pub agent_id: String,
    /// The host data.
    #[serde(rename = "HostData")]
    pub host_data: &'a HostData,
}

/// An ACL token on the wire.
#[derive(Debug, Clone, Serialize)]
pub struct TokenDto {
    /// Public ID.
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// Secret (absent in list stubs).
    #[serde(rename = "SecretID", skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `client` or `management`.
    #[serde(rename = "Type")]
    pub token_type: &'static str,
    /// Policy names; `null` when none.
    #[serde(rename = "Policies")]
    pub policies: Option<Vec<String>>,
    /// Replicated to every region.
    #[serde(rename = "Global")]
    pub global: bool,
    /// RFC 3339.
    #[serde(rename = "CreateTime")]
    pub create_time: String,
    /// Creation index.
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    /// Last change index.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

impl TokenDto {
    /// The full token (with its secret) or the list stub (without).
    pub fn new(t: &Token, with_secret: bool) -> TokenDto {
        TokenDto {
            accessor_id: t.accessor_id.clone(),
            secret_id: with_secret.then(|| t.secret_id.clone()),
            name: t.name.clone(),
            token_type: t.token_type.as_str(),
            policies: (!t.policies.is_empty()).then(|| t.policies.clone()),
            global: t.global,
            create_time: t.create_time.clone(),
            create_index: t.create_index,
            modify_index: t.modify_index,
        }
    }
}

/// An ACL policy on the wire (`Rules` absent in list stubs).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDto {
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Description.
    #[serde(rename = "Description")]
    pub description: String,
    /// HCL rules.
    #[serde(rename = "Rules", skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// Creation index.
    #[serde(rename = "CreateIndex")]
    pub create_index: u64,
    /// Last change index.
    #[serde(rename = "ModifyIndex")]
    pub modify_index: u64,
}

impl PolicyDto {
    /// The full policy or its list stub.
    pub fn new(p: &Policy, with_rules: bool) -> PolicyDto {
        PolicyDto {
            name: p.name.clone(),
            description: p.description.clone(),
            rules: with_rules.then(|| p.rules.clone()),
            create_index: p.create_index,
            modify_index: p.modify_index,
        }
    }
}

/// `POST /v1/acl/policy/:name` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyRequest {
    /// Name (must match the path when given).
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Description.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// HCL rules.
    #[serde(rename = "Rules", default)]
    pub rules: String,
}

/// `POST /v1/acl/token` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    /// Name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// `client` (default) or `management`.
    #[serde(rename = "Type", default)]
    pub token_type: String,
    /// Policy names.
    #[serde(rename = "Policies", default)]
    pub policies: Option<Vec<String>>,
    /// Global.
    #[serde(rename = "Global", default)]
    pub global: bool,
}

// ---- The job API (`/v1/jobs`, `/v1/job/*`, evaluations, allocations, nodes) ----
//
// Nomad's casing. The object types (job, group, task, allocation, evaluation, node) declare their
// fields in the sort order of their wire names, the order the API has always sent them in (they
// were sorted maps); the write answer keeps Nomad's `JobRegisterResponse` order.

/// What a job registration or deregistration answers: `EvalID`, `EvalCreateIndex`,
/// `JobModifyIndex`, in that order.
#[derive(Debug, Serialize)]
pub(crate) struct JobWriteDto {
    #[serde(rename = "EvalID")]
    eval_id: String,
    #[serde(rename = "EvalCreateIndex")]
    eval_create_index: u64,
    #[serde(rename = "JobModifyIndex")]
    job_modify_index: u64,
}

impl From<crate::api::JobWriteResult> for JobWriteDto {
    fn from(w: crate::api::JobWriteResult) -> JobWriteDto {
        JobWriteDto {
            eval_create_index: w.eval_create_index,
            eval_id: w.eval_id,
            job_modify_index: w.job_modify_index,
        }
    }
}

/// A job: the stub in lists, with `TaskGroups` when read by ID.
#[derive(Debug, Serialize)]
pub(crate) struct JobDto<'a> {
    #[serde(rename = "CreateIndex")]
    create_index: u64,
    #[serde(rename = "Datacenters")]
    datacenters: &'a [String],
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "JobModifyIndex")]
    job_modify_index: u64,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Namespace")]
    namespace: &'static str,
    #[serde(rename = "Priority")]
    priority: u32,
    #[serde(rename = "Status")]
    status: &'a str,
    #[serde(rename = "Stop")]
    stop: bool,
    #[serde(rename = "TaskGroups", skip_serializing_if = "Option::is_none")]
    task_groups: Option<Vec<TaskGroupDto<'a>>>,
    #[serde(rename = "Type")]
    job_type: &'static str,
    #[serde(rename = "Version")]
    version: u64,
}

impl<'a> JobDto<'a> {
    /// The job as lists show it; `full` adds its task groups, as a read by ID does.
    pub(crate) fn new(j: &'a Job, full: bool) -> JobDto<'a> {
        JobDto {
            create_index: j.create_index,
            datacenters: &j.datacenters,
            id: &j.id,
            job_modify_index: j.modify_index,
            modify_index: j.modify_index,
            name: &j.name,
            namespace: "default",
            priority: j.priority,
            status: &j.status,
            stop: j.stop,
            task_groups: full.then(|| j.groups.iter().map(TaskGroupDto::from).collect()),
            job_type: j.job_type.as_str(),
            version: j.version,
        }
    }
}

/// A job's task group.
#[derive(Debug, Serialize)]
pub(crate) struct TaskGroupDto<'a> {
    #[serde(rename = "Count")]
    count: u32,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Tasks")]
    tasks: Vec<TaskDto<'a>>,
}

/// A group's task.
#[derive(Debug, Serialize)]
pub(crate) struct TaskDto<'a> {
    #[serde(rename = "Driver")]
    driver: &'a str,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Resources")]
    resources: TaskResourcesDto,
}

/// What a task asks for.
#[derive(Debug, Serialize)]
pub(crate) struct TaskResourcesDto {
    #[serde(rename = "CPU")]
    cpu: u64,
    #[serde(rename = "MemoryMB")]
    memory_mb: u64,
}

impl<'a> From<&'a TaskGroup> for TaskGroupDto<'a> {
    fn from(g: &'a TaskGroup) -> TaskGroupDto<'a> {
        let task = |t: &'a Task| TaskDto {
            driver: &t.driver,
            name: &t.name,
            resources: TaskResourcesDto {
                cpu: t.cpu,
                memory_mb: t.memory_mb,
            },
        };
        TaskGroupDto {
            count: g.count,
            name: &g.name,
            tasks: g.tasks.iter().map(task).collect(),
        }
    }
}

/// An allocation.
#[derive(Debug, Serialize)]
pub(crate) struct AllocationDto<'a> {
    #[serde(rename = "AllocatedResources")]
    allocated_resources: AllocatedResourcesDto,
    #[serde(rename = "ClientStatus")]
    client_status: &'a str,
    #[serde(rename = "CreateIndex")]
    create_index: u64,
    #[serde(rename = "DesiredStatus")]
    desired_status: &'a str,
    #[serde(rename = "EvalID")]
    eval_id: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "JobID")]
    job_id: &'a str,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "Namespace")]
    namespace: &'static str,
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    #[serde(rename = "TaskGroup")]
    task_group: &'a str,
}

/// An allocation's resources (`Shared` and `Tasks` are always empty here).
#[derive(Debug, Serialize)]
pub(crate) struct AllocatedResourcesDto {
    #[serde(rename = "CPU")]
    cpu: u64,
    #[serde(rename = "MemoryMB")]
    memory_mb: u64,
    #[serde(rename = "Shared")]
    shared: BTreeMap<String, String>,
    #[serde(rename = "Tasks")]
    tasks: BTreeMap<String, String>,
}

impl<'a> From<&'a Allocation> for AllocationDto<'a> {
    fn from(a: &'a Allocation) -> AllocationDto<'a> {
        AllocationDto {
            allocated_resources: AllocatedResourcesDto {
                cpu: a.cpu,
                memory_mb: a.memory_mb,
                shared: BTreeMap::new(),
                tasks: BTreeMap::new(),
            },
            client_status: &a.client_status,
            create_index: a.create_index,
            desired_status: &a.desired_status,
            eval_id: &a.eval_id,
            id: &a.id,
            job_id: &a.job_id,
            modify_index: a.modify_index,
            name: &a.name,
            namespace: "default",
            node_id: &a.node_id,
            task_group: &a.task_group,
        }
    }
}

/// An evaluation.
#[derive(Debug, Serialize)]
pub(crate) struct EvaluationDto<'a> {
    #[serde(rename = "BlockedEval")]
    blocked_eval: &'a str,
    #[serde(rename = "CreateIndex")]
    create_index: u64,
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "JobID")]
    job_id: &'a str,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
    #[serde(rename = "Namespace")]
    namespace: &'static str,
    #[serde(rename = "Priority")]
    priority: u32,
    #[serde(rename = "QueuedAllocations")]
    queued: &'a BTreeMap<String, u64>,
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "StatusDescription")]
    status_description: &'a str,
    #[serde(rename = "TriggeredBy")]
    triggered_by: &'a str,
    #[serde(rename = "Type")]
    scheduler: &'a str,
}

impl<'a> From<&'a Evaluation> for EvaluationDto<'a> {
    fn from(e: &'a Evaluation) -> EvaluationDto<'a> {
        EvaluationDto {
            blocked_eval: &e.blocked_eval,
            create_index: e.create_index,
            id: &e.id,
            job_id: &e.job_id,
            modify_index: e.modify_index,
            namespace: "default",
            priority: e.priority,
            queued: &e.queued,
            status: e.status.as_str(),
            status_description: &e.status_description,
            triggered_by: &e.triggered_by,
            scheduler: &e.scheduler,
        }
    }
}

/// A client node.
#[derive(Debug, Serialize)]
pub(crate) struct NodeDto<'a> {
    #[serde(rename = "CreateIndex")]
    create_index: u64,
    #[serde(rename = "Datacenter")]
    datacenter: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Meta")]
    meta: &'a BTreeMap<String, String>,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
    #[serde(rename = "Name")]
    name: &'a str,
    #[serde(rename = "NodeClass")]
    node_class: &'a str,
    #[serde(rename = "NodeResources")]
    node_resources: NodeResourcesDto,
    #[serde(rename = "SchedulingEligibility")]
    scheduling_eligibility: &'static str,
    #[serde(rename = "Status")]
    status: &'a str,
}

/// A node's capacity.
#[derive(Debug, Serialize)]
pub(crate) struct NodeResourcesDto {
    #[serde(rename = "Cpu")]
    cpu: NodeCpuDto,
    #[serde(rename = "Memory")]
    memory: NodeMemoryDto,
}

/// A node's CPU.
#[derive(Debug, Serialize)]
pub(crate) struct NodeCpuDto {
    #[serde(rename = "CpuShares")]
    cpu_shares: u64,
}

/// A node's memory.
#[derive(Debug, Serialize)]
pub(crate) struct NodeMemoryDto {
    #[serde(rename = "MemoryMB")]
    memory_mb: u64,
}

impl<'a> From<&'a Node> for NodeDto<'a> {
    fn from(n: &'a Node) -> NodeDto<'a> {
        NodeDto {
            create_index: n.create_index,
            datacenter: &n.datacenter,
            id: &n.id,
            meta: &n.meta,
            modify_index: n.modify_index,
            name: &n.name,
            node_class: &n.node_class,
            node_resources: NodeResourcesDto {
                cpu: NodeCpuDto { cpu_shares: n.cpu },
                memory: NodeMemoryDto {
                    memory_mb: n.memory_mb,
                },
            },
            scheduling_eligibility: "eligible",
            status: &n.status,
        }
    }
}

#[derive(Debug, Deserialize)]
/// `PUT /v1/jobs` (and `/v1/job/<id>`) body: `{"Job": {...}}`, in Nomad's casing.
pub(crate) struct RegisterRequest {
    #[serde(rename = "Job")]
    pub(crate) job: JobIn,
}

#[derive(Debug, Deserialize)]
pub(crate) struct JobIn {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Type", default)]
    job_type: Option<String>,
    #[serde(rename = "Priority", default)]
    priority: Option<u32>,
    #[serde(rename = "Datacenters", default)]
    datacenters: Option<Vec<String>>,
    #[serde(rename = "TaskGroups", default)]
    task_groups: Option<Vec<GroupIn>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GroupIn {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Count", default)]
    count: Option<u32>,
    #[serde(rename = "Tasks", default)]
    tasks: Option<Vec<TaskIn>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TaskIn {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "Resources", default)]
    resources: Option<ResourcesIn>,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct ResourcesIn {
    #[serde(rename = "CPU", default)]
    cpu: Option<u64>,
    #[serde(rename = "MemoryMB", default)]
    memory_mb: Option<u64>,
}

impl From<JobIn> for JobSubmission {
    fn from(j: JobIn) -> JobSubmission {
        JobSubmission {
            id: j.id,
            name: j.name,
            job_type: j.job_type,
            priority: j.priority,
            datacenters: j.datacenters,
            groups: j
                .task_groups
                .map(|groups| groups.into_iter().map(GroupSubmission::from).collect()),
        }
    }
}

impl From<GroupIn> for GroupSubmission {
    fn from(g: GroupIn) -> GroupSubmission {
        GroupSubmission {
            name: g.name,
            count: g.count,
            tasks: g
                .tasks
                .map(|tasks| tasks.into_iter().map(TaskSubmission::from).collect()),
        }
    }
}

impl From<TaskIn> for TaskSubmission {
    fn from(t: TaskIn) -> TaskSubmission {
        let r = t.resources.unwrap_or_default();
        TaskSubmission {
            name: t.name,
            driver: t.driver,
            cpu: r.cpu,
            memory_mb: r.memory_mb,
        }
    }
}

// ---- Scheduler workers (`/v1/agent/schedulers*`) ----

/// One scheduler worker (`/v1/agent/schedulers`), snake_case as Nomad sends it.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerDto {
    pub(crate) id: String,
    pub(crate) enabled_schedulers: Vec<String>,
    pub(crate) started: String,
    pub(crate) status: &'static str,
    pub(crate) workload_status: &'static str,
}

impl From<&caravan_agent_core::sched::WorkerInfo> for WorkerDto {
    fn from(w: &caravan_agent_core::sched::WorkerInfo) -> WorkerDto {
        WorkerDto {
            id: w.id.clone(),
            enabled_schedulers: w.enabled_schedulers.clone(),
            started: humantime::format_rfc3339_nanos(w.started).to_string(),
            status: w.status.as_str(),
            workload_status: w.workload_status.as_str(),
        }
    }
}

/// `GET /v1/agent/schedulers`.
#[derive(Debug, Serialize)]
pub(crate) struct WorkersResponse {
    pub(crate) server_id: String,
    pub(crate) schedulers: Vec<WorkerDto>,
}

/// `/v1/agent/schedulers/config`.
#[derive(Debug, Serialize)]
pub(crate) struct SchedulerConfigResponse {
    pub(crate) server_id: String,
    pub(crate) num_schedulers: i64,
    pub(crate) enabled_schedulers: Vec<String>,
}

// ---- Log streams (`/v1/agent/monitor`) ----

/// One frame of a monitor or export stream (Nomad's `StreamFrame`): base64 `Data`, the
/// cumulative `Offset` (omitted at zero) and `FileEvent` (omitted when empty, as on exports).
#[derive(Debug, Serialize)]
pub(crate) struct StreamFrame<'a> {
    #[serde(rename = "Offset", skip_serializing_if = "is_zero")]
    pub(crate) offset: i64,
    #[serde(rename = "Data")]
    pub(crate) data: &'a str,
    #[serde(rename = "FileEvent", skip_serializing_if = "str::is_empty")]
    pub(crate) file_event: &'a str,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::heartbeat::LastHeartbeat;
    use std::time::{Duration, UNIX_EPOCH};

    fn check(since_ms: u64, now_secs: u64, expected: (&str, u64)) {
        let beat = LastHeartbeat {
            node_id: "n".into(),
            since_ms,
            ttl_ms: 10,
        };
        let dto = NodeHeartbeatDto::new(&beat, UNIX_EPOCH + Duration::from_secs(now_secs));
        assert_eq!(
            (dto.last_heartbeat.as_str(), dto.since_last_heartbeat),
            expected
        );
    }

    #[test]
    fn a_heartbeat_is_shown_at_now_minus_its_age() {
        check(1_500, 1_000, ("1970-01-01T00:16:38.500Z", 1_500_000_000));
        // Older than the clock, or beyond what nanoseconds hold: clamped, not wrapped.
        check(
            2_000_000,
            1_000,
            ("1970-01-01T00:00:00.000Z", 2_000_000_000_000),
        );
        check(u64::MAX, 1_000, ("1970-01-01T00:00:00.000Z", u64::MAX));
    }
}
