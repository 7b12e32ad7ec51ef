//! Reading configuration: files and directories (lexical order), dev defaults, flags, merged in
//! that order and resolved against this machine's facts.

use std::net::{IpAddr, Ipv4Addr};

use caravan_agent_core::CoreError;
use caravan_agent_core::config::{
    self, AgentConfig, Format, HostFacts, LoadedSource, merge_trees, parse_config, tree_to_file,
};
use serde_json::Value;

use crate::cli::AgentArgs;

/// Loads and resolves the agent configuration the flags describe.
pub fn load(args: &AgentArgs) -> Result<AgentConfig, String> {
    let mut tree = if args.dev {
        config::dev_defaults().tree
    } else {
        Value::Object(Default::default())
    };
    let mut sources = Vec::new();
    for path in &args.config {
        for file in config_files(path)? {
            let source = read_source(file)?;
            merge_trees(&mut tree, source.tree.clone());
            sources.push(source);
        }
    }
    let files = origins(&sources);
    // A flag overrides every file: an error about a key a flag set names no file.
    let flags = args.to_tree();
    sources.push(LoadedSource {
        origin: "the command line".into(),
        text: String::new(),
        tree: flags.clone(),
    });
    merge_trees(&mut tree, flags);
    let file = tree_to_file(&tree).map_err(|e| e.to_string())?;
    AgentConfig::resolve(file, args.dev, &host_facts(), files)
        .map_err(|e: CoreError| located(&e, &sources))
}

/// The keys of Nomad's format the configuration sets that Caravan does not act on: Nomad's
/// blocks and keys for what Caravan lacks, and `telemetry` when it sets more than the two keys
/// Caravan uses (`prometheus_metrics`, `collection_interval`).
pub fn ignored_keys(config: &AgentConfig) -> Vec<String> {
    let mut keys = config.nomad_only.paths();
    let defaults = config::TelemetryConfig::default();
    let mut rest = config.telemetry.clone();
    rest.prometheus_metrics = defaults.prometheus_metrics;
    rest.collection_interval = defaults.collection_interval.clone();
    if rest != defaults {
        keys.push("telemetry".into());
    }
    keys
}

/// Names each of [`ignored_keys`] once at WARN (the key, never its value: some are secrets).
pub fn warn_ignored(config: &AgentConfig) {
    for key in ignored_keys(config) {
        tracing::warn!(target: "agent", key = %key, "configuration key has no effect in Caravan; it is accepted for Nomad compatibility");
    }
}

/// `caravan config validate`: reads every file of `paths` (files, or directories' `.hcl` and
/// `.json` files), merged as the agent would, and resolves them without starting anything.
/// Returns every problem found: each file that cannot be read or parsed, then (when all parse)
/// what resolving the merged configuration refuses.
pub fn validate(paths: &[String]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut tree = Value::Object(Default::default());
    let mut sources = Vec::new();
    for path in paths {
        let found = match config_files(path) {
            Ok(found) => found,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for file in found {
            match read_source(file) {
                Ok(source) => {
                    merge_trees(&mut tree, source.tree.clone());
                    sources.push(source);
                }
                Err(e) => problems.push(e),
            }
        }
    }
    if problems.is_empty() {
        let resolved = tree_to_file(&tree)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                AgentConfig::resolve(file, false, &host_facts(), origins(&sources))
                    .map_err(|e| located(&e, &sources))
            });
        if let Err(e) = resolved {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A file, or the `.hcl` and `.json` files of a directory in lexical order.
/// Reads and parses one configuration file, kept with its text to name where a value came from.
fn read_source(file: String) -> Result<LoadedSource, String> {
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("failed to read config file {file}: {e}"))?;
    let source = parse_config(&file, &text, Format::from_path(&file)).map_err(|e| e.to_string())?;
    Ok(LoadedSource {
        origin: file,
        text,
        tree: source.tree,
    })
}

/// The files read, in merge order.
fn origins(sources: &[LoadedSource]) -> Vec<String> {
    sources.iter().map(|s| s.origin.clone()).collect()
}

/// A resolve error's text, with the file and line of the value it is about when a file set it.
fn located(e: &CoreError, sources: &[LoadedSource]) -> String {
    match e {
        CoreError::Invalid(message) | CoreError::Duration(message) => {
            config::locate_value_error(message, sources)
        }
        other => other.to_string(),
    }
}

fn config_files(path: &str) -> Result<Vec<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("failed to read config {path}: {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_string()]);
    }
    let mut files: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| format!("failed to read config directory {path}: {e}"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("hcl") | Some("json")
            )
        })
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(files)
}

/// The machine facts defaults depend on.
pub fn host_facts() -> HostFacts {
    HostFacts {
        hostname: sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into()),
        num_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        private_ip: private_ip(),
    }
}

/// The first private IPv4 address of an interface, else loopback.
fn private_ip() -> IpAddr {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    };
    let mut candidates: Vec<Ipv4Addr> = networks
        .values()
        .flat_map(|data| data.ip_networks().iter().map(|n| n.addr))
        .filter_map(|addr| match addr {
            IpAddr::V4(v4) if v4.is_private() => Some(v4),
            _ => None,
        })
        .collect();
    candidates.sort();
    candidates
        .first()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |ip| IpAddr::V4(*ip))
}
