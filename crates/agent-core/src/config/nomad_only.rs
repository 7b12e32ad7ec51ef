//! Nomad configuration keys Caravan reads and keeps but does not act on: the blocks of
//! subsystems it does not have (`consul`, `vault`, `plugin`, `audit`, `ui`, …) and the keys of
//! the blocks it has that belong to features it lacks (`server.raft_multiplier`,
//! `client.options`, `acl.token_ttl`, …). A real Nomad configuration file therefore loads; each
//! such key is named once at WARN ([`NomadOnly::paths`]) and shown in `/v1/agent/self` as Nomad
//! shows it (secrets redacted there). Any other unknown key is still an error naming it, so a
//! typo is not taken for a Nomad key.
//!
//! The lists are Nomad's HCL keys (`command/agent/config.go` and `nomad/structs/config`).

use serde_json::{Map, Value};

/// Top-level keys and blocks of subsystems Caravan does not have.
pub const TOP_LEVEL: &[&str] = &[
    "plugin_dir",
    "log_include_location",
    "rpc",
    "leave_on_interrupt",
    "leave_on_terminate",
    "enable_syslog",
    "syslog_facility",
    "disable_update_check",
    "disable_anonymous_signature",
    "consul",
    "vault",
    "ui",
    "sentinel",
    "autopilot",
    "plugin",
    "audit",
    "reporting",
    "keyring",
    "eventlog",
];

/// `server { … }` keys Caravan does not act on.
pub const SERVER: &[&str] = &[
    "authoritative_region",
    "client_introduction",
    "data_dir",
    "protocol_version",
    "raft_protocol",
    "raft_multiplier",
    "job_gc_interval",
    "job_gc_threshold",
    "eval_gc_threshold",
    "batch_eval_gc_threshold",
    "deployment_gc_threshold",
    "csi_volume_claim_gc_interval",
    "csi_volume_claim_gc_threshold",
    "csi_plugin_gc_threshold",
    "acl_token_gc_threshold",
    "root_key_gc_interval",
    "root_key_gc_threshold",
    "root_key_rotation_threshold",
    "retry_join",
    "retry_max",
    "retry_interval",
    "rejoin_after_leave",
    "non_voting_server",
    "redundancy_zone",
    "upgrade_version",
    "default_scheduler_config",
    "plan_rejection_tracker",
    "plan_apply_pipeline",
    "enable_event_broker",
    "event_buffer_size",
    "license_path",
    "search",
    "deploy_query_rate_limit",
    "raft_logstore",
    "raft_boltdb",
    "raft_snapshot_interval",
    "raft_trailing_logs",
    "job_default_priority",
    "job_max_priority",
    "job_max_count",
    "job_max_source_size",
    "job_tracked_versions",
    "oidc_issuer",
    "start_timeout",
    "non_production",
];

/// `client { … }` keys Caravan does not act on.
pub const CLIENT: &[&str] = &[
    "state_dir",
    "alloc_dir",
    "alloc_mounts_dir",
    "host_volumes_dir",
    "host_volume_plugin_dir",
    "common_plugin_dir",
    "node_pool",
    "options",
    "chroot_env",
    "network_interface",
    "preferred_address_family",
    "network_speed",
    "cpu_disable_dmidecode",
    "cpu_total_compute",
    "memory_total_mb",
    "disk_total_mb",
    "disk_free_mb",
    "reservable_cores",
    "max_kill_timeout",
    "client_max_port",
    "client_min_port",
    "max_dynamic_port",
    "min_dynamic_port",
    "reserved",
    "gc_interval",
    "gc_parallel_destroys",
    "gc_disk_usage_threshold",
    "gc_inode_usage_threshold",
    "gc_max_allocs",
    "gc_volumes_on_node_gc",
    "no_host_uuid",
    "disable_remote_exec",
    "template",
    "server_join",
    "host_volume",
    "cni_path",
    "cni_config_dir",
    "bridge_network_name",
    "bridge_network_subnet",
    "bridge_network_subnet_ipv6",
    "bridge_network_hairpin_mode",
    "host_network",
    "bind_wildcard_default_host_network",
    "cgroup_parent",
    "nomad_service_discovery",
    "artifact",
    "drain_on_shutdown",
    "users",
    "node_max_allocs",
    "fingerprint",
    "default_ineligible",
];

/// `acl { … }` keys Caravan does not act on (it has no token expiry and no replication).
pub const ACL: &[&str] = &[
    "token_ttl",
    "policy_ttl",
    "role_ttl",
    "replication_token",
    "token_min_expiration_ttl",
    "token_max_expiration_ttl",
];

/// `tls { … }` keys Caravan does not act on.
pub const TLS: &[&str] = &[
    "verify_server_hostname",
    "rpc_upgrade_mode",
    "tls_cipher_suites",
    "tls_min_version",
];

/// The blocks whose keys are listed above, with their lists.
const NESTED: [(&str, &[&str]); 4] = [
    ("server", SERVER),
    ("client", CLIENT),
    ("acl", ACL),
    ("tls", TLS),
];

/// What a configuration holds of the keys above, in the shape of the configuration tree
/// (`{"consul": {…}, "server": {"raft_multiplier": 2}}`). Its `Debug` names the keys only:
/// the values can be secrets (`consul.token`, `vault.token`, `acl.replication_token`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NomadOnly {
    /// The keys and their values as the files give them (HCL1 blocks as JSON values).
    pub tree: Value,
}

impl std::fmt::Debug for NomadOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NomadOnly")
            .field("keys", &self.paths())
            .finish()
    }
}

impl NomadOnly {
    /// Moves the Nomad-only keys out of a configuration tree.
    pub fn take(tree: &mut Value) -> NomadOnly {
        let mut taken = Map::new();
        let Value::Object(top) = tree else {
            return NomadOnly::default();
        };
        for key in TOP_LEVEL {
            if let Some(v) = top.remove(*key) {
                taken.insert((*key).to_string(), v);
            }
        }
        for (block, keys) in NESTED {
            let mut inner = Map::new();
            let objects: Vec<&mut Map<String, Value>> = match top.get_mut(block) {
                Some(Value::Object(m)) => vec![m],
                Some(Value::Array(items)) => {
                    items.iter_mut().filter_map(Value::as_object_mut).collect()
                }
                _ => Vec::new(),
            };
            for object in objects {
                for key in keys {
                    if let Some(v) = object.remove(*key) {
                        inner.insert((*key).to_string(), v);
                    }
                }
            }
            if !inner.is_empty() {
                taken.insert(block.to_string(), Value::Object(inner));
            }
        }
        NomadOnly {
            tree: if taken.is_empty() {
                Value::Null
            } else {
                Value::Object(taken)
            },
        }
    }

    /// One dotted path per block or key held, in the order of the lists above: `consul`,
    /// `server.raft_multiplier`.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(top) = self.tree.as_object() else {
            return out;
        };
        for key in TOP_LEVEL {
            if top.contains_key(*key) {
                out.push((*key).to_string());
            }
        }
        for (block, keys) in NESTED {
            if let Some(inner) = top.get(block).and_then(Value::as_object) {
                out.extend(
                    keys.iter()
                        .filter(|k| inner.contains_key(**k))
                        .map(|k| format!("{block}.{k}")),
                );
            }
        }
        out
    }

    /// The value of a top-level key or block, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.tree.get(key)
    }

    /// The value of `key` in `block` (`server`, `client`, `acl`, `tls`), if set.
    pub fn nested(&self, block: &str, key: &str) -> Option<&Value> {
        self.tree.get(block).and_then(|b| b.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn takes_nomad_keys_and_leaves_the_rest() {
        let mut tree = json!({
            "region": "r",
            "consul": {"address": "1.2.3.4:8500", "token": "s3cret"},
            "plugin": {"docker": {"config": {}}},
            "server": {"enabled": true, "raft_multiplier": 2, "bogus": 1},
            "acl": {"enabled": true, "replication_token": "x"},
            "client": [{"options": {"a": "b"}}, {"enabled": true}],
        });
        let taken = NomadOnly::take(&mut tree);
        assert_eq!(
            tree,
            json!({"region": "r", "server": {"enabled": true, "bogus": 1},
                   "acl": {"enabled": true}, "client": [{}, {"enabled": true}]})
        );
        assert_eq!(
            taken.paths(),
            [
                "consul",
                "plugin",
                "server.raft_multiplier",
                "client.options",
                "acl.replication_token"
            ]
        );
        assert_eq!(taken.nested("acl", "replication_token"), Some(&json!("x")));
        let debug = format!("{taken:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("consul"),
            "{debug}"
        );
        let mut plain = json!({"region": "r"});
        assert_eq!(NomadOnly::take(&mut plain), NomadOnly::default());
        assert!(NomadOnly::default().paths().is_empty());
    }
}
