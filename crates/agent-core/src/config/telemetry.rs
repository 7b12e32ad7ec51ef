//! The `telemetry { … }` block with Nomad's keys and defaults.

use std::time::Duration;

use serde::Deserialize;

use crate::CoreError;
use crate::duration::parse_go_duration;

/// The Circonus keys, in Nomad's order; they are kept and shown, never used.
pub const CIRCONUS_KEYS: [&str; 13] = [
    "circonus_api_token",
    "circonus_api_app",
    "circonus_api_url",
    "circonus_submission_interval",
    "circonus_submission_url",
    "circonus_check_id",
    "circonus_check_force_metric_activation",
    "circonus_check_instance_id",
    "circonus_check_search_tag",
    "circonus_check_tags",
    "circonus_check_display_name",
    "circonus_broker_id",
    "circonus_broker_select_tag",
];

/// `telemetry { … }` as written, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// In-memory sink aggregation interval (Go duration).
    pub in_memory_collection_interval: Option<String>,
    /// In-memory sink retention (Go duration).
    pub in_memory_retention_period: Option<String>,
    /// statsite address.
    pub statsite_address: Option<String>,
    /// statsd address.
    pub statsd_address: Option<String>,
    /// DogStatsD address.
    pub datadog_address: Option<String>,
    /// DogStatsD tags.
    pub datadog_tags: Option<Vec<String>>,
    /// Serve `/v1/metrics?format=prometheus`.
    pub prometheus_metrics: Option<bool>,
    /// Leave the host name out of gauge names.
    pub disable_hostname: Option<bool>,
    /// Label metrics with the node name.
    pub use_node_name: Option<bool>,
    /// How often runtime metrics are collected (Go duration).
    pub collection_interval: Option<String>,
    /// Publish allocation metrics.
    pub publish_allocation_metrics: Option<bool>,
    /// Publish node metrics.
    pub publish_node_metrics: Option<bool>,
    /// Allocation metadata as labels.
    pub include_alloc_metadata_in_metrics: Option<bool>,
    /// Which allocation metadata keys become labels.
    pub allowed_metadata_keys_in_metrics: Option<Vec<String>>,
    /// `+prefix` / `-prefix` rules.
    pub prefix_filter: Option<Vec<String>>,
    /// Whether metrics no rule names are kept.
    pub filter_default: Option<bool>,
    /// Leave out dispatched jobs' summaries.
    pub disable_dispatched_job_summary_metrics: Option<bool>,
    /// Leave out quota utilisation.
    pub disable_quota_utilization_metrics: Option<bool>,
    /// Leave out the RPC rate labels.
    pub disable_rpc_rate_metrics_labels: Option<bool>,
    /// Leave out allocation hook timings.
    pub disable_allocation_hook_metrics: Option<bool>,
    /// Circonus API token (a secret).
    pub circonus_api_token: Option<String>,
    /// Circonus.
    pub circonus_api_app: Option<String>,
    /// Circonus.
    pub circonus_api_url: Option<String>,
    /// Circonus.
    pub circonus_submission_interval: Option<String>,
    /// Circonus.
    pub circonus_submission_url: Option<String>,
    /// Circonus.
    pub circonus_check_id: Option<String>,
    /// Circonus.
    pub circonus_check_force_metric_activation: Option<String>,
    /// Circonus.
    pub circonus_check_instance_id: Option<String>,
    /// Circonus.
    pub circonus_check_search_tag: Option<String>,
    /// Circonus.
    pub circonus_check_tags: Option<String>,
    /// Circonus.
    pub circonus_check_display_name: Option<String>,
    /// Circonus.
    pub circonus_broker_id: Option<String>,
    /// Circonus.
    pub circonus_broker_select_tag: Option<String>,
}

/// The resolved `telemetry` settings, Nomad's defaults filled in. Durations keep the text the
/// operator wrote (Nomad shows it so); [`TelemetryConfig::collection_interval`] parses it.
#[derive(Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Default `10s`.
    pub in_memory_collection_interval: String,
    /// Default `1m`.
    pub in_memory_retention_period: String,
    /// statsite address.
    pub statsite_address: String,
    /// statsd address.
    pub statsd_address: String,
    /// DogStatsD address.
    pub datadog_address: String,
    /// DogStatsD tags.
    pub datadog_tags: Option<Vec<String>>,
    /// Serve the Prometheus text format.
    pub prometheus_metrics: bool,
    /// Leave the host name out of gauge names.
    pub disable_hostname: bool,
    /// Label metrics with the node name.
    pub use_node_name: bool,
    /// Default `1s`.
    pub collection_interval: String,
    /// Publish allocation metrics.
    pub publish_allocation_metrics: bool,
    /// Publish node metrics.
    pub publish_node_metrics: bool,
    /// Allocation metadata as labels.
    pub include_alloc_metadata_in_metrics: bool,
    /// Which allocation metadata keys become labels.
    pub allowed_metadata_keys_in_metrics: Option<Vec<String>>,
    /// `+prefix` / `-prefix` rules.
    pub prefix_filter: Option<Vec<String>>,
    /// Whether metrics no rule names are kept.
    pub filter_default: Option<bool>,
    /// Leave out dispatched jobs' summaries.
    pub disable_dispatched_job_summary_metrics: bool,
    /// Leave out quota utilisation.
    pub disable_quota_utilization_metrics: bool,
    /// Leave out the RPC rate labels.
    pub disable_rpc_rate_metrics_labels: bool,
    /// Default `false`.
    pub disable_allocation_hook_metrics: Option<bool>,
    /// The Circonus keys in [`CIRCONUS_KEYS`] order, `""` when not set. The first is the API
    /// token, a secret.
    pub circonus: [String; 13],
}

/// The secret is never printed.
impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("prometheus_metrics", &self.prometheus_metrics)
            .field("collection_interval", &self.collection_interval)
            .field("disable_hostname", &self.disable_hostname)
            .finish_non_exhaustive()
    }
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            in_memory_collection_interval: "10s".into(),
            in_memory_retention_period: "1m".into(),
            statsite_address: String::new(),
            statsd_address: String::new(),
            datadog_address: String::new(),
            datadog_tags: None,
            prometheus_metrics: false,
            disable_hostname: false,
            use_node_name: false,
            collection_interval: "1s".into(),
            publish_allocation_metrics: false,
            publish_node_metrics: false,
            include_alloc_metadata_in_metrics: false,
            allowed_metadata_keys_in_metrics: None,
            prefix_filter: None,
            filter_default: None,
            disable_dispatched_job_summary_metrics: false,
            disable_quota_utilization_metrics: false,
            disable_rpc_rate_metrics_labels: false,
            disable_allocation_hook_metrics: Some(false),
            circonus: Default::default(),
        }
    }
}

impl TelemetryConfig {
    /// How often runtime figures are collected.
    pub fn collection_interval(&self) -> Duration {
        parse_go_duration(&self.collection_interval).unwrap_or(Duration::from_secs(1))
    }

    /// Resolves the block: defaults, and the durations checked (a value error names its key).
    pub fn resolve(t: TelemetryFile) -> Result<TelemetryConfig, CoreError> {
        let d = TelemetryConfig::default();
        let duration = |key: &str, v: Option<String>, default: String| match v {
            None => Ok(default),
            Some(text) => match parse_go_duration(&text) {
                Ok(p) if !p.is_zero() => Ok(text),
                Ok(_) => Err(CoreError::Invalid(format!(
                    "telemetry.{key}: must be longer than 0s"
                ))),
                Err(e) => Err(CoreError::Invalid(format!("telemetry.{key}: {e}"))),
            },
        };
        let circonus = [
            t.circonus_api_token,
            t.circonus_api_app,
            t.circonus_api_url,
            t.circonus_submission_interval,
            t.circonus_submission_url,
            t.circonus_check_id,
            t.circonus_check_force_metric_activation,
            t.circonus_check_instance_id,
            t.circonus_check_search_tag,
            t.circonus_check_tags,
            t.circonus_check_display_name,
            t.circonus_broker_id,
            t.circonus_broker_select_tag,
        ]
        .map(Option::unwrap_or_default);
        Ok(TelemetryConfig {
            in_memory_collection_interval: duration(
                "in_memory_collection_interval",
                t.in_memory_collection_interval,
                d.in_memory_collection_interval,
            )?,
            in_memory_retention_period: duration(
                "in_memory_retention_period",
                t.in_memory_retention_period,
                d.in_memory_retention_period,
            )?,
            statsite_address: t.statsite_address.unwrap_or_default(),
            statsd_address: t.statsd_address.unwrap_or_default(),
            datadog_address: t.datadog_address.unwrap_or_default(),
            datadog_tags: t.datadog_tags,
            prometheus_metrics: t.prometheus_metrics.unwrap_or(false),
            disable_hostname: t.disable_hostname.unwrap_or(false),
            use_node_name: t.use_node_name.unwrap_or(false),
            collection_interval: duration(
                "collection_interval",
                t.collection_interval,
                d.collection_interval,
            )?,
            publish_allocation_metrics: t.publish_allocation_metrics.unwrap_or(false),
            publish_node_metrics: t.publish_node_metrics.unwrap_or(false),
            include_alloc_metadata_in_metrics: t.include_alloc_metadata_in_metrics.unwrap_or(false),
            allowed_metadata_keys_in_metrics: t.allowed_metadata_keys_in_metrics,
            prefix_filter: t.prefix_filter,
            filter_default: t.filter_default,
            disable_dispatched_job_summary_metrics: t
                .disable_dispatched_job_summary_metrics
                .unwrap_or(false),
            disable_quota_utilization_metrics: t.disable_quota_utilization_metrics.unwrap_or(false),
            disable_rpc_rate_metrics_labels: t.disable_rpc_rate_metrics_labels.unwrap_or(false),
            disable_allocation_hook_metrics: Some(
                t.disable_allocation_hook_metrics.unwrap_or(false),
            ),
            circonus,
        })
    }
}
