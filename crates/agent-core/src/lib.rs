//! Caravan's domain model: pure types and rules, no I/O, no async runtime, no clock reads.
//!
//! - [`autopilot`]: server health as Nomad's autopilot judges it.
//! - [`acl`]: ACL policy rules, capability evaluation, and the token/policy store.
//! - [`config`]: the agent configuration file format (Nomad's HCL keys), merging of several
//!   sources, defaults, `-dev` and validation.
//! - [`conn_limit`]: connection limits per client and in all, for the HTTP and RPC listeners.
//! - [`debug`]: profile and monitor requests, validated once for the HTTP API and the agent RPC.
//! - [`jobs`]: jobs, evaluations, allocations and nodes.
//! - [`keyring`]: the gossip keyring: its keys, operations, file format and pooled answers.
//! - [`logfile`]: the log file's naming, rotation and pruning rules.
//! - [`duration`]: Go-syntax durations.
//! - [`member`]: gossip members and their status, as `/v1/agent/members` reports them.
//! - [`query`]: reads of the replicated state, with Nomad's `stale`/`index`/`wait` and index.
//! - [`sched`]: scheduler worker states and the pool configuration.
//! - [`server_list`]: a client's list of server RPC addresses.
//! - [`token_cache`]: a client agent's cache of token resolutions, bounded in size and time.
#![deny(missing_docs)]

pub mod acl;
pub mod autopilot;
pub mod client_rpc;
pub mod config;
pub mod conn_limit;
pub mod debug;
pub mod duration;
pub mod heartbeat;
pub mod jobs;
pub mod keyring;
pub mod logfile;
pub mod member;
pub mod query;
pub mod sched;
pub mod server_list;
pub mod token_cache;

/// Every error this crate returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A configuration source could not be parsed or has an unknown or mistyped key.
    Config {
        /// Where the text came from (a file path).
        origin: String,
        /// The line the problem is on, when known.
        line: Option<usize>,
        /// What is wrong, naming the key path.
        message: String,
    },
    /// A configuration value is out of range or a combination is impossible.
    Invalid(String),
    /// A Go-syntax duration did not parse.
    Duration(String),
}

impl std::fmt::Display for CoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreError::Config {
                origin,
                line: Some(line),
                message,
            } => write!(f, "{origin}:{line}: {message}"),
            CoreError::Config {
                origin, message, ..
            } => write!(f, "{origin}: {message}"),
            CoreError::Invalid(message) | CoreError::Duration(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CoreError {}
