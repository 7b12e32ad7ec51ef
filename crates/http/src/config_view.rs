//! How `/v1/agent/self` shows the Nomad configuration keys Caravan keeps without acting on
//! them ([`NomadOnly`]): under Nomad's Go field names (`consul` → `Consuls`, `heartbeat_grace`
//! → `HeartbeatGrace` in nanoseconds, `ssl` → `EnableSSL`), with every secret redacted
//! (`<redacted>` when set, `""` when not for the fields Nomad always has).

use serde_json::{Map, Value};

use caravan_agent_core::config::NomadOnly;
use caravan_agent_core::duration::parse_go_duration;

/// What a secret set to anything is shown as.
pub(crate) const REDACTED: &str = "<redacted>";

/// HCL keys whose Go field name is not the plain PascalCase of the key, per block (`*` for
/// any block). A name ending in `HCL` is a duration Nomad also holds parsed: shown without the
/// suffix, in nanoseconds.
const GO_NAMES: &[(&str, &str, &str)] = &[
    ("*", "plugin_dir", "PluginDir"),
    ("*", "leave_on_interrupt", "LeaveOnInt"),
    ("*", "leave_on_terminate", "LeaveOnTerm"),
    ("consul", "address", "Addr"),
    ("consul", "grpc_address", "GRPCAddr"),
    ("consul", "timeout", "TimeoutHCL"),
    ("consul", "ssl", "EnableSSL"),
    ("consul", "share_ssl", "ShareSSL"),
    ("consul", "verify_ssl", "VerifySSL"),
    ("consul", "grpc_ca_file", "GRPCCAFile"),
    ("consul", "server_http_check_name", "ServerHTTPCheckName"),
    ("consul", "server_rpc_check_name", "ServerRPCCheckName"),
    ("consul", "client_http_check_name", "ClientHTTPCheckName"),
    ("consul", "service_auth_method", "ServiceIdentityAuthMethod"),
    ("consul", "task_auth_method", "TaskIdentityAuthMethod"),
    ("vault", "address", "Addr"),
    ("vault", "create_from_role", "Role"),
    ("vault", "jwt_auth_backend_path", "JWTAuthBackendPath"),
    ("vault", "ca_file", "TLSCaFile"),
    ("vault", "ca_path", "TLSCaPath"),
    ("vault", "cert_file", "TLSCertFile"),
    ("vault", "key_file", "TLSKeyFile"),
    ("vault", "tls_skip_verify", "TLSSkipVerify"),
    ("vault", "tls_server_name", "TLSServerName"),
    ("ui", "show_cli_hints", "ShowCLIHints"),
    ("audit", "sink", "Sinks"),
    ("audit", "filter", "Filters"),
    ("sentinel", "import", "Imports"),
    (
        "autopilot",
        "server_stabilization_time",
        "ServerStabilizationTimeHCL",
    ),
    (
        "autopilot",
        "last_contact_threshold",
        "LastContactThresholdHCL",
    ),
    ("reporting", "address", "ExportAddress"),
    ("reporting", "export_interval", "ExportIntervalHCL"),
    (
        "reporting",
        "snapshot_retention_time",
        "SnapshotRetentionTimeHCL",
    ),
    (
        "reporting",
        "disable_product_usage_reporting",
        "DisableUsageReporting",
    ),
    ("rpc", "keep_alive_interval", "KeepAliveIntervalHCL"),
    (
        "rpc",
        "connection_write_timeout",
        "ConnectionWriteTimeoutHCL",
    ),
    ("rpc", "stream_open_timeout", "StreamOpenTimeoutHCL"),
    ("rpc", "stream_close_timeout", "StreamCloseTimeoutHCL"),
    ("rpc", "dial_timeout", "DialTimeoutHCL"),
    ("server", "heartbeat_grace", "HeartbeatGraceHCL"),
    ("server", "min_heartbeat_ttl", "MinHeartbeatTTLHCL"),
    (
        "server",
        "failover_heartbeat_ttl",
        "FailoverHeartbeatTTLHCL",
    ),
    ("server", "retry_max", "RetryMaxAttempts"),
    ("server", "retry_interval", "RetryIntervalHCL"),
    (
        "server",
        "deploy_query_rate_limit",
        "DeploymentQueryRateLimit",
    ),
    ("server", "raft_logstore", "RaftLogStoreConfig"),
    ("server", "raft_boltdb", "RaftBoltConfig"),
    ("server", "node_gc_threshold", "NodeGCThreshold"),
    ("server", "job_gc_interval", "JobGCInterval"),
    ("server", "job_gc_threshold", "JobGCThreshold"),
    ("server", "eval_gc_threshold", "EvalGCThreshold"),
    ("server", "batch_eval_gc_threshold", "BatchEvalGCThreshold"),
    ("server", "deployment_gc_threshold", "DeploymentGCThreshold"),
    (
        "server",
        "csi_volume_claim_gc_interval",
        "CSIVolumeClaimGCInterval",
    ),
    (
        "server",
        "csi_volume_claim_gc_threshold",
        "CSIVolumeClaimGCThreshold",
    ),
    ("server", "csi_plugin_gc_threshold", "CSIPluginGCThreshold"),
    ("server", "acl_token_gc_threshold", "ACLTokenGCThreshold"),
    ("server", "root_key_gc_interval", "RootKeyGCInterval"),
    ("server", "root_key_gc_threshold", "RootKeyGCThreshold"),
    ("server", "oidc_issuer", "OIDCIssuer"),
    ("client", "cpu_total_compute", "CpuCompute"),
    ("client", "memory_total_mb", "MemoryMB"),
    ("client", "disk_total_mb", "DiskTotalMB"),
    ("client", "disk_free_mb", "DiskFreeMB"),
    ("client", "gc_interval", "GCIntervalHCL"),
    ("client", "gc_parallel_destroys", "GCParallelDestroys"),
    ("client", "gc_disk_usage_threshold", "GCDiskUsageThreshold"),
    (
        "client",
        "gc_inode_usage_threshold",
        "GCInodeUsageThreshold",
    ),
    ("client", "gc_max_allocs", "GCMaxAllocs"),
    ("client", "gc_volumes_on_node_gc", "GCVolumesOnNodeGC"),
    ("client", "no_host_uuid", "NoHostUUID"),
    ("client", "template", "TemplateConfig"),
    ("client", "host_volume", "HostVolumes"),
    ("client", "cni_path", "CNIPath"),
    ("client", "cni_config_dir", "CNIConfigDir"),
    (
        "client",
        "bridge_network_subnet_ipv6",
        "BridgeNetworkSubnetIPv6",
    ),
    ("client", "host_network", "HostNetworks"),
    ("client", "drain_on_shutdown", "Drain"),
    ("client", "fingerprint", "Fingerprinters"),
    ("acl", "token_ttl", "TokenTTLHCL"),
    ("acl", "policy_ttl", "PolicyTTLHCL"),
    ("acl", "role_ttl", "RoleTTLHCL"),
    (
        "acl",
        "token_min_expiration_ttl",
        "TokenMinExpirationTTLHCL",
    ),
    (
        "acl",
        "token_max_expiration_ttl",
        "TokenMaxExpirationTTLHCL",
    ),
    ("acl", "replication_token", "ReplicationToken"),
    ("tls", "verify_server_hostname", "VerifyServerHostname"),
    ("tls", "rpc_upgrade_mode", "RPCUpgradeMode"),
    ("tls", "tls_cipher_suites", "TLSCipherSuites"),
    ("tls", "tls_min_version", "TLSMinVersion"),
];

/// Word parts Go spells in capitals (`id` → `ID`).
const INITIALISMS: &[&str] = &[
    "acl", "api", "ca", "cli", "cni", "cpu", "csi", "dns", "gc", "grpc", "http", "https", "id",
    "ip", "jwt", "mb", "oidc", "rpc", "ssl", "tls", "ttl", "ui", "uri", "url", "uuid",
];

/// A key's Go field name in `block`: the table's, else its words in PascalCase.
pub(crate) fn go_name(block: &str, key: &str) -> String {
    if let Some((_, _, name)) = GO_NAMES
        .iter()
        .find(|(b, k, _)| (*b == block || *b == "*") && *k == key)
    {
        return (*name).to_string();
    }
    key.split('_')
        .map(|word| {
            if INITIALISMS.contains(&word) {
                word.to_ascii_uppercase()
            } else {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Whether a key names a secret: shown as [`REDACTED`] whatever block it is in.
fn is_secret(key: &str) -> bool {
    matches!(key, "token" | "auth" | "password" | "license" | "secret_id")
        || key.ends_with("_token")
        || key.ends_with("_password")
        || key.ends_with("_secret")
}

/// Keys whose value is a free-form map: its keys are shown as written (secrets redacted).
const MAPS: &[&str] = &["options", "chroot_env", "meta", "config", "env", "label"];

/// Labelled blocks (`host_volume "data" { … }`) Nomad holds as a list of entries named by the
/// label.
const LABELLED: &[&str] = &["host_volume", "host_network"];

/// `value` of `key` under Go names, secrets redacted, `…HCL` durations in nanoseconds.
fn render(block: &str, key: &str, value: &Value) -> (String, Value) {
    let name = go_name(block, key);
    if is_secret(key) {
        return (name, redact(value));
    }
    if MAPS.contains(&key) {
        return (name, redact_secrets(value.clone()));
    }
    if LABELLED.contains(&key) {
        let entries = objects(Some(value))
            .into_iter()
            .flat_map(|labelled| labelled.iter())
            .flat_map(|(label, body)| {
                objects(Some(body)).into_iter().map(move |body| {
                    let mut entry = Map::new();
                    entry.insert("Name".into(), Value::from(label.as_str()));
                    for (k, v) in body {
                        let (n, v) = render(key, k, v);
                        entry.insert(n, v);
                    }
                    Value::Object(entry)
                })
            })
            .collect();
        return (name, Value::Array(entries));
    }
    if let Some(base) = name.strip_suffix("HCL") {
        let nanos = value
            .as_str()
            .and_then(|t| parse_go_duration(t).ok())
            .map_or(value.clone(), |d| {
                Value::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            });
        return (base.to_string(), nanos);
    }
    (name, render_value(key, value))
}

/// An object's keys under Go names (nested blocks too, named after their own key).
fn render_value(block: &str, value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| render(block, k, v))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_value(block, v)).collect()),
        other => other.clone(),
    }
}

/// `<redacted>` for a set secret, `""` for an unset or empty one.
pub(crate) fn redact(value: &Value) -> Value {
    match value {
        Value::Null => Value::from(""),
        Value::String(s) if s.is_empty() => Value::from(""),
        _ => Value::from(REDACTED),
    }
}

/// A block given once or several times (HCL1 lists): its objects.
fn objects(value: Option<&Value>) -> Vec<&Map<String, Value>> {
    match value {
        Some(Value::Object(m)) => vec![m],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    }
}

/// `Consuls` / `Vaults`: one entry per block, `Name` (`default` unless given) and `Token`
/// (redacted) always present, as Nomad's entries have them.
fn integrations(block: &str, value: Option<&Value>) -> Value {
    let entries = objects(value)
        .into_iter()
        .map(|m| {
            let mut out = Map::new();
            out.insert("Name".into(), Value::from("default"));
            out.insert("Token".into(), Value::from(""));
            for (k, v) in m {
                let (name, v) = render(block, k, v);
                out.insert(name, v);
            }
            Value::Object(out)
        })
        .collect();
    Value::Array(entries)
}

/// `Plugins`: `plugin "docker" { args config }` as `{Name, Args, Config}`.
fn plugins(value: Option<&Value>) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    let mut out = Vec::new();
    for labelled in objects(Some(value)) {
        for (name, body) in labelled {
            for body in objects(Some(body)) {
                let mut entry = Map::new();
                entry.insert("Name".into(), Value::from(name.as_str()));
                entry.insert(
                    "Args".into(),
                    body.get("args").cloned().unwrap_or(Value::Null),
                );
                // Plugin configuration can hold credentials: keys shown, secrets redacted.
                entry.insert(
                    "Config".into(),
                    body.get("config")
                        .map(|c| redact_secrets(c.clone()))
                        .unwrap_or(Value::Null),
                );
                out.push(Value::Object(entry));
            }
        }
    }
    Value::Array(out)
}

/// Redacts every secret-named key of a free-form map.
fn redact_secrets(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if is_secret(&k) {
                        redact(&v)
                    } else {
                        redact_secrets(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_secrets).collect()),
        other => other,
    }
}

/// `KEKProviders`: `keyring "awskms" { name active config }` as `{Provider, Name, Active}`
/// (Nomad hides `Config`, which holds the provider's credentials).
fn kek_providers(value: Option<&Value>) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    let mut out = Vec::new();
    for labelled in objects(Some(value)) {
        for (provider, body) in labelled {
            for body in objects(Some(body)) {
                let mut entry = Map::new();
                entry.insert("Provider".into(), Value::from(provider.as_str()));
                entry.insert(
                    "Name".into(),
                    body.get("name").cloned().unwrap_or(Value::from("")),
                );
                entry.insert(
                    "Active".into(),
                    body.get("active").cloned().unwrap_or(Value::from(false)),
                );
                out.push(Value::Object(entry));
            }
        }
    }
    Value::Array(out)
}

/// The top-level fields of `config` for the Nomad-only keys: scalars with their zero value
/// when not set, blocks `null` when not set, `Consuls` and `Vaults` always arrays.
pub(crate) fn top_level(n: &NomadOnly) -> Map<String, Value> {
    let mut out = Map::new();
    let scalar = |key: &str, zero: Value| n.get(key).cloned().unwrap_or(zero);
    out.insert("PluginDir".into(), scalar("plugin_dir", Value::from("")));
    out.insert(
        "LogIncludeLocation".into(),
        scalar("log_include_location", Value::from(false)),
    );
    out.insert(
        "LeaveOnInt".into(),
        scalar("leave_on_interrupt", Value::from(false)),
    );
    out.insert(
        "LeaveOnTerm".into(),
        scalar("leave_on_terminate", Value::from(false)),
    );
    out.insert(
        "EnableSyslog".into(),
        scalar("enable_syslog", Value::from(false)),
    );
    out.insert(
        "SyslogFacility".into(),
        scalar("syslog_facility", Value::from("")),
    );
    out.insert(
        "DisableUpdateCheck".into(),
        scalar("disable_update_check", Value::from(false)),
    );
    out.insert(
        "DisableAnonymousSignature".into(),
        scalar("disable_anonymous_signature", Value::from(false)),
    );
    out.insert("Consuls".into(), integrations("consul", n.get("consul")));
    out.insert("Vaults".into(), integrations("vault", n.get("vault")));
    for (key, name) in [
        ("rpc", "RPC"),
        ("ui", "UI"),
        ("sentinel", "Sentinel"),
        ("autopilot", "Autopilot"),
        ("audit", "Audit"),
        ("reporting", "Reporting"),
        ("eventlog", "Eventlog"),
    ] {
        let block = objects(n.get(key));
        let value = match block.as_slice() {
            [] => Value::Null,
            blocks => {
                let mut merged = Map::new();
                for m in blocks {
                    for (k, v) in m.iter() {
                        let (name, v) = render(key, k, v);
                        merged.insert(name, v);
                    }
                }
                Value::Object(merged)
            }
        };
        out.insert(name.into(), value);
    }
    out.insert("Plugins".into(), plugins(n.get("plugin")));
    out.insert("KEKProviders".into(), kek_providers(n.get("keyring")));
    out
}

/// The Nomad-only keys of `block` (`server`, `client`, `acl`, `tls`) under Go names.
pub(crate) fn nested(n: &NomadOnly, block: &str) -> Map<String, Value> {
    objects(n.get(block))
        .into_iter()
        .flat_map(|m| m.iter().map(|(k, v)| render(block, k, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_go() {
        assert_eq!(go_name("consul", "ssl"), "EnableSSL");
        assert_eq!(go_name("consul", "ca_file"), "CAFile");
        assert_eq!(go_name("vault", "ca_file"), "TLSCaFile");
        assert_eq!(go_name("client", "node_pool"), "NodePool");
        assert_eq!(
            go_name("server", "max_heartbeats_per_second"),
            "MaxHeartbeatsPerSecond"
        );
        assert_eq!(
            go_name("ui", "content_security_policy"),
            "ContentSecurityPolicy"
        );
        assert_eq!(go_name("x", "jwt_auth_url"), "JWTAuthURL");
    }

    #[test]
    fn values_render_with_secrets_redacted() {
        let (k, v) = render("server", "heartbeat_grace", &json!("10s"));
        assert_eq!(
            (k.as_str(), v),
            ("HeartbeatGrace", json!(10_000_000_000u64))
        );
        let (k, v) = render("consul", "token", &json!("s3cret"));
        assert_eq!((k.as_str(), v), ("Token", json!(REDACTED)));
        let (k, v) = render("consul", "auth", &json!("u:p"));
        assert_eq!((k.as_str(), v), ("Auth", json!(REDACTED)));
        let (_, v) = render("acl", "replication_token", &json!(""));
        assert_eq!(v, json!(""));
        let plugin = plugins(Some(
            &json!({"docker": {"config": {"auth": {"password": "pw", "user": "u"}}}}),
        ));
        assert_eq!(
            plugin,
            json!([{"Name": "docker", "Args": null, "Config": {"auth": "<redacted>"}}])
        );
    }
}
