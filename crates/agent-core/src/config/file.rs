//! The configuration file format: Nomad's agent HCL keys (HCL1 map blocks included) or the same keys
//! as JSON. Parsing is pure: callers read the file and hand the text in.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::CoreError;

/// One configuration source (a file, the command line, or dev-mode defaults), every key optional.
///
/// The field names are the HCL keys; unknown keys are errors that name their path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `name`: the node name.
    pub name: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `datacenter`.
    pub datacenter: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<String>,
    /// `bind_addr`.
    pub bind_addr: Option<String>,
    /// `log_level`.
    pub log_level: Option<String>,
    /// `log_json`.
    pub log_json: Option<bool>,
    /// `log_file`: also write the log to this file (a path ending in `/` names a directory,
    /// the file then being `nomad.log`).
    pub log_file: Option<String>,
    /// `log_rotate_bytes`: rotate the log file once it holds this many bytes (0: no limit).
    pub log_rotate_bytes: Option<i64>,
    /// `log_rotate_duration`: rotate the log file when it is this old (Go duration, `24h`).
    pub log_rotate_duration: Option<String>,
    /// `log_rotate_max_files`: rotated files kept (0: all).
    pub log_rotate_max_files: Option<i64>,
    /// `enable_debug`.
    pub enable_debug: Option<bool>,
    /// `http_api_response_headers { "X-Name" = "value" }`.
    pub http_api_response_headers: Option<BTreeMap<String, String>>,
    /// `ports { http rpc serf }`.
    pub ports: Option<PortsFile>,
    /// `addresses { http rpc serf }`.
    pub addresses: Option<AddressesFile>,
    /// `advertise { http rpc serf }`.
    pub advertise: Option<AddressesFile>,
    /// `server { ... }`.
    pub server: Option<ServerFile>,
    /// `client { ... }`.
    pub client: Option<ClientFile>,
    /// `acl { enabled }`.
    pub acl: Option<AclFile>,
    /// `tls { ... }`.
    pub tls: Option<TlsFile>,
    /// `limits { ... }`.
    pub limits: Option<LimitsFile>,
    /// `telemetry { ... }`.
    pub telemetry: Option<super::telemetry::TelemetryFile>,
    /// Nomad's keys Caravan keeps without acting on them (`consul`, `server.raft_multiplier`,
    /// …), taken out of the tree before it is checked.
    #[serde(skip)]
    pub nomad_only: super::nomad_only::NomadOnly,
}

/// `ports { http = 4646 rpc = 4647 serf = 4648 }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsFile {
    /// HTTP API port.
    pub http: Option<u16>,
    /// Agent RPC port.
    pub rpc: Option<u16>,
    /// Gossip port.
    pub serf: Option<u16>,
}

/// `addresses { ... }` and `advertise { ... }`: one address per listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressesFile {
    /// HTTP API address.
    pub http: Option<String>,
    /// Agent RPC address.
    pub rpc: Option<String>,
    /// Gossip address.
    pub serf: Option<String>,
}

/// `server { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Run a server.
    pub enabled: Option<bool>,
    /// Servers expected before a leader is elected.
    pub bootstrap_expect: Option<u32>,
    /// Scheduler worker count (default: CPU count).
    pub num_schedulers: Option<i64>,
    /// Scheduler types the workers handle.
    pub enabled_schedulers: Option<Vec<String>>,
    /// Base64 gossip encryption key.
    pub encrypt: Option<String>,
    /// Age after which down nodes are garbage collected (Go duration).
    pub node_gc_threshold: Option<String>,
    /// Raft log entries between snapshots.
    pub raft_snapshot_threshold: Option<i64>,
    /// Shortest TTL the leader gives a client node (Go duration, default 10s).
    pub min_heartbeat_ttl: Option<String>,
    /// Heartbeats per second the leader aims for across all nodes (default 50).
    pub max_heartbeats_per_second: Option<f64>,
    /// Extra time past a node's TTL before it is marked down (Go duration, default 10s).
    pub heartbeat_grace: Option<String>,
    /// TTL every node gets when a new leader takes over (Go duration, default 5m).
    pub failover_heartbeat_ttl: Option<String>,
    /// Gossip addresses joined once at start.
    pub start_join: Option<Vec<String>>,
    /// `server_join { ... }`.
    pub server_join: Option<ServerJoinFile>,
}

/// `server_join { retry_join retry_interval retry_max }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerJoinFile {
    /// Gossip addresses joined (and retried) at start.
    pub retry_join: Option<Vec<String>>,
    /// Wait between join attempts (Go duration).
    pub retry_interval: Option<String>,
    /// Attempts before giving up; 0 means forever.
    pub retry_max: Option<u32>,
}

/// `client { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// Run a client.
    pub enabled: Option<bool>,
    /// Server RPC addresses.
    pub servers: Option<Vec<String>>,
    /// Free-form node metadata.
    pub meta: Option<BTreeMap<String, String>>,
    /// Node class.
    pub node_class: Option<String>,
}

/// `acl { enabled }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclFile {
    /// Enforce ACLs.
    pub enabled: Option<bool>,
}

/// `tls { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Serve the HTTP API over TLS.
    pub http: Option<bool>,
    /// Use TLS between agents.
    pub rpc: Option<bool>,
    /// CA bundle path.
    pub ca_file: Option<String>,
    /// Certificate path.
    pub cert_file: Option<String>,
    /// Private key path.
    pub key_file: Option<String>,
    /// Require client certificates on the HTTP API.
    pub verify_https_client: Option<bool>,
}

/// `limits { ... }`: protection against connection exhaustion.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Concurrent HTTP connections per client IP (0 = unlimited).
    pub http_max_conns_per_client: Option<u32>,
    /// Concurrent RPC connections per client IP (0 = unlimited).
    pub rpc_max_conns_per_client: Option<u32>,
    /// Time allowed for a TLS handshake and for request headers (Go duration).
    pub https_handshake_timeout: Option<String>,
    /// Time allowed for an RPC connection's first request (Go duration).
    pub rpc_handshake_timeout: Option<String>,
}

/// The format of a configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Nomad's HCL agent configuration.
    Hcl,
    /// The same keys as JSON.
    Json,
}

impl Format {
    /// Picks the format from a file name: `.json` is JSON, anything else HCL.
    pub fn from_path(path: &str) -> Format {
        if path.ends_with(".json") {
            Format::Json
        } else {
            Format::Hcl
        }
    }
}

/// A parsed, checked configuration source as a tree of keys, ready to merge with others.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The tree of keys, as JSON values.
    pub tree: Value,
}

/// The deepest nesting of blocks, objects, lists and parentheses an HCL text may have.
/// hcl-rs's parser backtracks exponentially in the nesting depth of some malformed texts (each
/// level about doubles the time: 22 levels of `ae%ae%e%{` take seconds, hcl-rs issue #82), and
/// ACL policies reach every server's state machine; Nomad's own configuration and policies nest
/// a few levels.
pub const MAX_HCL_NESTING: usize = 12;

/// The line (1-based) where an HCL text first nests deeper than [`MAX_HCL_NESTING`], counting
/// `{`, `[` and `(` outside quoted strings and comments (heredocs are counted as code, which
/// only refuses more).
pub fn hcl_nesting_error(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    match bytes[i] {
                        b'\\' => i += 1,
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_HCL_NESTING {
                    return Some(line);
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses and checks a configuration text; `origin` names it in errors (usually its path).
pub fn parse_config(origin: &str, text: &str, format: Format) -> Result<ConfigSource, CoreError> {
    if format == Format::Hcl
        && let Some(line) = hcl_nesting_error(text)
    {
        return Err(CoreError::Config {
            origin: origin.to_string(),
            line: Some(line),
            message: format!(
                "blocks, lists and parentheses nested deeper than {MAX_HCL_NESTING} levels"
            ),
        });
    }
    let tree: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| CoreError::Config {
            origin: origin.to_string(),
            line: Some(e.line()),
            message: e.to_string(),
        })?,
        Format::Hcl => {
            let (spread, lines) = super::oneline::spread_single_line_blocks(text);
            let text = hcl1_map_blocks_to_objects(&spread);
            hcl::from_str(&text).map_err(|e| CoreError::Config {
                origin: origin.to_string(),
                line: hcl_error_line(&e).map(|l| lines.get(l - 1).copied().unwrap_or(l)),
                message: hcl_error_message(&e),
            })?
        }
    };
    if tree_depth(&tree) > MAX_CONFIG_DEPTH {
        return Err(CoreError::Config {
            origin: origin.to_string(),
            line: None,
            message: format!("keys nested deeper than {MAX_CONFIG_DEPTH} levels"),
        });
    }
    let tree = merge_repeated_blocks(tree);
    check_tree(origin, text, &tree)?;
    Ok(ConfigSource { tree })
}

/// The deepest nesting of keys a configuration may have, whatever its format. HCL's block labels
/// nest without braces (`a b c {}` is three levels), so [`MAX_HCL_NESTING`] alone does not bound
/// the tree: a text of a few hundred labels made a tree whose JSON no JSON parser takes back
/// (serde_json stops at 128 levels), found by fuzzing. Nomad's deepest keys nest a handful.
pub const MAX_CONFIG_DEPTH: usize = 32;

/// The nesting depth of a JSON value (a scalar is 0, `{}` and `[]` are 1), without recursion.
fn tree_depth(tree: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(tree, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// Validates a tree against [`ConfigFile`], naming the key path of the first problem. Nomad's
/// keys for what Caravan lacks are set aside first ([`NomadOnly`](super::NomadOnly)); any other
/// unknown key is an error.
fn check_tree(origin: &str, text: &str, tree: &Value) -> Result<ConfigFile, CoreError> {
    let mut tree = tree.clone();
    let nomad_only = super::nomad_only::NomadOnly::take(&mut tree);
    let mut file = check_known(origin, text, &tree)?;
    file.nomad_only = nomad_only;
    Ok(file)
}

fn check_known(origin: &str, text: &str, tree: &Value) -> Result<ConfigFile, CoreError> {
    serde_path_to_error::deserialize::<_, ConfigFile>(tree).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let (key, message) = match unknown_field(&inner) {
            // The path already ends with the unknown key.
            Some(field) if path == "." => (field.to_string(), format!("unknown key {field}")),
            Some(_) => (path.clone(), format!("unknown key {path}")),
            None => (path.clone(), format!("{path}: {inner}")),
        };
        CoreError::Config {
            origin: origin.to_string(),
            line: line_of_key(text, &key),
            message,
        }
    })
}

/// Extracts the field name from serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// One parsed configuration file, kept to name where a value came from.
#[derive(Debug, Clone)]
pub struct LoadedSource {
    /// Where the text came from (a file path).
    pub origin: String,
    /// The text.
    pub text: String,
    /// Its keys, as [`parse_config`] read them.
    pub tree: Value,
}

/// Names the file and line of a value error from
/// [`AgentConfig::resolve`](super::AgentConfig::resolve), whose message starts with the key path
/// (`server.server_join.retry_interval: time: invalid duration …`): the last of `sources` (in
/// merge order) that sets that key, as a key error names them (`a.hcl:4: …`). A message that
/// names no key, or a key no file sets (a flag, a default), comes back unchanged.
pub fn locate_value_error(message: &str, sources: &[LoadedSource]) -> String {
    let Some((path, _)) = message.split_once(": ") else {
        return message.to_string();
    };
    let is_path = !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !is_path {
        return message.to_string();
    }
    let Some(source) = sources.iter().rev().find(|s| sets_key(&s.tree, path)) else {
        return message.to_string();
    };
    match line_of_path(&source.text, path) {
        Some(line) => format!("{}:{line}: {message}", source.origin),
        None => format!("{}: {message}", source.origin),
    }
}

/// Whether `tree` sets the dotted key `path` (blocks may be objects or HCL1's lists of them).
fn sets_key(tree: &Value, path: &str) -> bool {
    let mut nodes = vec![tree];
    for segment in path.split('.') {
        let mut next = Vec::new();
        for node in nodes {
            match node {
                Value::Object(map) => next.extend(map.get(segment)),
                Value::Array(items) => next.extend(
                    items
                        .iter()
                        .filter_map(|i| i.as_object().and_then(|m| m.get(segment))),
                ),
                _ => {}
            }
        }
        if next.is_empty() {
            return false;
        }
        nodes = next;
    }
    true
}

/// Best-effort line of a dotted key path: each segment searched from the line of the one before
/// (so `advertise.http` is not taken for `ports.http` above it); else [`line_of_key`].
fn line_of_path(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let nested = || {
        let mut from = 0;
        for segment in path.split('.') {
            let rest = lines.get(from..)?.join("\n");
            from += line_of_key(&rest, segment)?.checked_sub(1)?;
        }
        Some(from + 1)
    };
    nested().or_else(|| line_of_key(text, path))
}

/// Best-effort line number of the last segment of a dotted key path in the source text.
fn line_of_key(text: &str, path: &str) -> Option<usize> {
    let key = path.rsplit('.').next()?;
    if key.is_empty() {
        return None;
    }
    let quoted = format!("\"{key}\"");
    let assigns = |rest: &str| {
        let r = rest.trim_start();
        r.starts_with('=') || r.starts_with('{') || r.starts_with(':')
    };
    text.lines()
        .position(|line| {
            let bare = line.trim_start().strip_prefix(key).is_some_and(assigns);
            let quoted = line
                .match_indices(quoted.as_str())
                .any(|(at, q)| assigns(&line[at + q.len()..]));
            bare || quoted
        })
        .map(|i| i + 1)
}

fn hcl_error_line(e: &hcl::Error) -> Option<usize> {
    match e {
        hcl::Error::Parse(p) => Some(p.location().line()),
        _ => None,
    }
}

fn hcl_error_message(e: &hcl::Error) -> String {
    match e {
        hcl::Error::Parse(p) => p.message().to_string(),
        other => other.to_string(),
    }
}

/// Blocks that may be given several times and stay a list (Nomad's `Consuls` and `Vaults`).
const LISTED_BLOCKS: [&str; 2] = ["consul", "vault"];

/// Two `server { }` blocks in one file arrive as an array of objects: merge them into one object
/// (`consul` and `vault` blocks stay a list: each is an integration of its own).
fn merge_repeated_blocks(mut tree: Value) -> Value {
    if let Value::Object(map) = &mut tree {
        for (key, value) in map.iter_mut() {
            if LISTED_BLOCKS.contains(&key.as_str()) {
                continue;
            }
            if let Value::Array(items) = value
                && !items.is_empty()
                && items.iter().all(Value::is_object)
            {
                let mut merged = Value::Object(Default::default());
                for item in items.drain(..) {
                    merge_trees(&mut merged, item);
                }
                *value = merged;
            }
        }
    }
    tree
}

/// Key paths whose lists accumulate across sources instead of being replaced (as in Nomad).
const APPENDING_LISTS: &[&str] = &[
    "client.servers",
    "server.start_join",
    "server.server_join.retry_join",
];

/// Deep-merges `over` onto `base`: objects merge key by key, the join and server lists append,
/// and every other value in `over` replaces the one in `base`.
pub fn merge_trees(base: &mut Value, over: Value) {
    merge_at(base, over, "");
}

fn merge_at(base: &mut Value, over: Value, path: &str) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (key, value) in o {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get_mut(&key) {
                    Some(existing) => merge_at(existing, value, &child),
                    None => {
                        b.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if APPENDING_LISTS.contains(&path) => b.extend(o),
        (b, o) => *b = o,
    }
}

/// Turns a (merged) tree into the typed form.
pub fn tree_to_file(tree: &Value) -> Result<ConfigFile, CoreError> {
    if tree.is_null() {
        return Ok(ConfigFile::default());
    }
    check_tree("merged configuration", "", tree)
}

/// Rewrites HCL1 map blocks with quoted keys (`meta { "rack" = "r1" }`) into HCL2 object
/// expressions (`meta = { "rack" = "r1" }`), which hcl-rs parses. Strings and comments are skipped;
/// every other byte is kept, so line numbers stay true.
pub fn hcl1_map_blocks_to_objects(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    let mut after_ident = false;
    while i < bytes.len() {
        let c = bytes[i];
        let end = match c {
            b'"' => {
                after_ident = false;
                skip_string(bytes, i)
            }
            b'#' => skip_line(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'/') => skip_line(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => text[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |p| i + 2 + p + 2),
            b'{' => {
                if after_ident && body_starts_with_quoted_key(bytes, i + 1) {
                    out.push_str("= ");
                }
                after_ident = false;
                i + 1
            }
            c if is_ident_byte(c) => {
                after_ident = true;
                i + bytes[i..].iter().take_while(|&&b| is_ident_byte(b)).count()
            }
            b' ' | b'\t' => i + 1,
            _ => {
                after_ident = false;
                i + utf8_len(c)
            }
        };
        let end = end.min(bytes.len());
        out.push_str(&text[i..end]);
        i = end;
    }
    out
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn skip_string(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            b'\n' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn skip_line(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| start + p)
}

/// Whether the first token of a block body is a quoted string followed by `=` or `:`.
fn body_starts_with_quoted_key(bytes: &[u8], from: usize) -> bool {
    let mut i = from;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    if bytes.get(i) != Some(&b'"') {
        return false;
    }
    let mut j = skip_string(bytes, i);
    while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
        j += 1;
    }
    matches!(bytes.get(j), Some(b'=') | Some(b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check(text, format, ok)`: block labels and JSON objects nest only so deep.
    #[test]
    fn configuration_keys_nest_at_most_max_config_depth() {
        let check = |text: &str, format: Format, ok: bool| {
            let got = parse_config("t", text, format);
            match (&got, ok) {
                (Err(CoreError::Config { message, .. }), false) => assert_eq!(
                    message,
                    &format!("keys nested deeper than {MAX_CONFIG_DEPTH} levels"),
                    "{text:?}"
                ),
                (Err(e), true) => panic!("{text:?}: {e}"),
                (Ok(_), false) => panic!("{text:?}: accepted"),
                _ => {}
            }
        };
        // Nomad-only keys take any value, so only the depth decides.
        let labels = |n: usize| format!("syslog_facility {} {{}}\n", "l ".repeat(n - 2));
        check(&labels(MAX_CONFIG_DEPTH), Format::Hcl, true);
        check(&labels(MAX_CONFIG_DEPTH + 1), Format::Hcl, false);
        check(&labels(300), Format::Hcl, false);
        let json = |n: usize| {
            format!(
                "{{\"syslog_facility\": {}{}}}",
                "{\"l\": ".repeat(n - 2) + "{}",
                "}".repeat(n - 2)
            )
        };
        check(&json(MAX_CONFIG_DEPTH), Format::Json, true);
        check(&json(MAX_CONFIG_DEPTH + 1), Format::Json, false);
        assert_eq!(tree_depth(&Value::Null), 0);
        assert_eq!(tree_depth(&serde_json::json!({"a": [1, {"b": {}}]})), 4);
    }

    /// `check(text, expected)`: the line an HCL text first nests too deep on, if any.
    #[test]
    fn hcl_nesting_is_bounded_outside_strings_and_comments() {
        let check = |text: &str, expected: Option<usize>| {
            assert_eq!(hcl_nesting_error(text), expected, "{text:?}");
        };
        let deep = |n: usize| "a {\n".repeat(n);
        check(&deep(MAX_HCL_NESTING), None);
        check(&deep(MAX_HCL_NESTING + 1), Some(MAX_HCL_NESTING + 1));
        check(&format!("x = \"{}\"\n", "{".repeat(40)), None);
        check(&format!("x = \"\\\"{}\"\n", "[".repeat(40)), None);
        check(
            &format!(
                "# {}\n// {}\n/* {}\n */\n",
                "(".repeat(40),
                "{".repeat(40),
                "[".repeat(40)
            ),
            None,
        );
        check(
            &format!("a {{ b = [1] }}\n{}", deep(MAX_HCL_NESTING + 1)),
            Some(MAX_HCL_NESTING + 2),
        );
        // The shape of the fuzz input that took minutes in hcl-rs (each line one level deeper):
        // refused before hcl-rs sees it, naming the line.
        let slow = "oi= ae%ae%e%{\n".repeat(16);
        let err = parse_config("slow.hcl", &slow, Format::Hcl).unwrap_err();
        assert!(err.to_string().starts_with("slow.hcl:13: "), "{err}");
    }

    /// `check(sources, message, expected)`: where a value error is said to come from.
    #[test]
    fn value_errors_name_file_and_line() {
        let source = |origin: &str, text: &str| LoadedSource {
            origin: origin.into(),
            text: text.into(),
            tree: parse_config(origin, text, Format::Hcl).unwrap().tree,
        };
        let check = |sources: &[LoadedSource], message: &str, expected: &str| {
            assert_eq!(locate_value_error(message, sources), expected, "{message}");
        };
        let ports_then_advertise = source(
            "a.hcl",
            "ports {\n  http = 1\n}\nadvertise {\n  http = \"x\"\n}\n",
        );
        let level = source("b.hcl", "log_level = \"loud\"\n");
        let both = [ports_then_advertise, level];
        check(&both, "log_level: bad", "b.hcl:1: log_level: bad");
        check(&both, "advertise.http: bad", "a.hcl:5: advertise.http: bad");
        check(&both, "ports.http: bad", "a.hcl:2: ports.http: bad");
        // No file sets it (a default or a flag), or the message names no key: unchanged.
        check(&both, "bind_addr: bad", "bind_addr: bad");
        check(
            &both,
            "key size must be 16, 24 or 32 bytes",
            "key size must be 16, 24 or 32 bytes",
        );
        check(&both, "Log_Level: bad", "Log_Level: bad");
        // The last source that sets the key wins.
        let again = source("c.hcl", "name = \"n\"\nlog_level = \"x\"\n");
        check(
            &[both[1].clone(), again],
            "log_level: bad",
            "c.hcl:2: log_level: bad",
        );
    }

    fn parse(text: &str) -> Result<ConfigFile, CoreError> {
        let src = parse_config("test.hcl", text, Format::Hcl)?;
        tree_to_file(&src.tree)
    }

    #[test]
    fn reads_nomad_documented_forms() {
        let file = parse(
            r#"
name = "server1"
data_dir = "/tmp/x"
http_api_response_headers {
  "Access-Control-Allow-Origin" = "*"
}
ports { http = 5646 }
server {
  enabled = true
  server_join {
    retry_join = ["127.0.0.1:4648"]
    retry_interval = "15s"
  }
}
client {
  enabled = true
  meta { "rack" = "r1" }
}
"#,
        )
        .unwrap();
        assert_eq!(file.name.as_deref(), Some("server1"));
        assert_eq!(
            file.http_api_response_headers.unwrap()["Access-Control-Allow-Origin"],
            "*"
        );
        assert_eq!(file.ports.unwrap().http, Some(5646));
        let client = file.client.unwrap();
        assert_eq!(client.meta.unwrap()["rack"], "r1");
        let join = file.server.unwrap().server_join.unwrap();
        assert_eq!(join.retry_join.unwrap(), vec!["127.0.0.1:4648"]);
    }

    #[test]
    fn reads_the_spec_example_verbatim() {
        let file = parse(
            r#"
name       = "server1"
ports     { http = 4646  rpc = 4647  serf = 4648 }
addresses { http = "127.0.0.1"  rpc = "127.0.0.1"  serf = "127.0.0.1" }
advertise { http = "10.0.0.1:4646"  rpc = "10.0.0.1:4647"  serf = "10.0.0.1:4648" }
http_api_response_headers { "X-Extra" = "value" }
server {
  enabled            = true
  enabled_schedulers = ["service", "batch", "system", "sysbatch", "_core"]
  server_join { retry_join = ["127.0.0.1:4648"]  retry_interval = "30s"  retry_max = 0 }
}
client {
  enabled = true
  meta    { "rack" = "r1" }
}
"#,
        )
        .unwrap();
        let ports = file.ports.unwrap();
        assert_eq!(
            (ports.http, ports.rpc, ports.serf),
            (Some(4646), Some(4647), Some(4648))
        );
        assert_eq!(
            file.advertise.unwrap().serf.as_deref(),
            Some("10.0.0.1:4648")
        );
        assert_eq!(file.http_api_response_headers.unwrap()["X-Extra"], "value");
        let join = file.server.unwrap().server_join.unwrap();
        assert_eq!(join.retry_max, Some(0));
        assert_eq!(file.client.unwrap().meta.unwrap()["rack"], "r1");
        // Errors after a spread line still name the original line.
        let err = parse(
            "ports { http = 1  rpc = 2 }
x = = 1
",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("test.hcl:2: "), "{err}");
    }

    #[test]
    fn reads_hcl2_map_forms() {
        let file = parse("client {\n meta { rack = \"r1\" }\n}\n").unwrap();
        assert_eq!(file.client.unwrap().meta.unwrap()["rack"], "r1");
        let file = parse("client {\n meta = { \"a.b/c\" = \"x\" }\n}\n").unwrap();
        assert_eq!(file.client.unwrap().meta.unwrap()["a.b/c"], "x");
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let err = parse("server {\n  enabled = true\n  bogus_key = 1\n}\n").unwrap_err();
        assert_eq!(err.to_string(), "test.hcl:3: unknown key server.bogus_key");
        let err = parse("nope = 1\n").unwrap_err();
        assert_eq!(err.to_string(), "test.hcl:1: unknown key nope");
    }

    #[test]
    fn type_error_names_path() {
        let err = parse("ports {\n  http = \"x\"\n}\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("test.hcl:2: ports.http: invalid type"),
            "{text}"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("name = \"a\"\nserver {\n  enabled = = true\n}\n").unwrap_err();
        assert!(err.to_string().starts_with("test.hcl:3: "), "{err}");
    }

    #[test]
    fn json_files_use_the_same_keys() {
        let src = parse_config(
            "a.json",
            r#"{"region": "eu", "client": {"enabled": true, "meta": {"k": "v"}}}"#,
            Format::Json,
        )
        .unwrap();
        let file = tree_to_file(&src.tree).unwrap();
        assert_eq!(file.region.as_deref(), Some("eu"));
        let err = parse_config("a.json", r#"{"regio": "eu"}"#, Format::Json).unwrap_err();
        assert_eq!(err.to_string(), "a.json:1: unknown key regio");
        let err = parse_config("a.json", "{\n\"region\": }", Format::Json).unwrap_err();
        assert!(err.to_string().starts_with("a.json:2: "), "{err}");
    }

    #[test]
    fn later_sources_merge_over_earlier() {
        let mut a = parse_config(
            "a",
            "region = \"a\"\nclient {\n servers = [\"1.1.1.1:4647\"]\n meta { x = \"1\" }\n}\n",
            Format::Hcl,
        )
        .unwrap()
        .tree;
        let b = parse_config(
            "b",
            "region = \"b\"\nclient {\n servers = [\"2.2.2.2:4647\"]\n meta { y = \"2\" }\n}\n",
            Format::Hcl,
        )
        .unwrap()
        .tree;
        merge_trees(&mut a, b);
        let file = tree_to_file(&a).unwrap();
        assert_eq!(file.region.as_deref(), Some("b"));
        let client = file.client.unwrap();
        assert_eq!(client.servers.unwrap().len(), 2);
        assert_eq!(client.meta.unwrap().len(), 2);
    }

    #[test]
    fn repeated_blocks_merge() {
        let file =
            parse("server {\n enabled = true\n}\nserver {\n bootstrap_expect = 3\n}\n").unwrap();
        let server = file.server.unwrap();
        assert_eq!(server.enabled, Some(true));
        assert_eq!(server.bootstrap_expect, Some(3));
    }

    #[test]
    fn rewrite_keeps_strings_and_comments() {
        let text = "# meta { \"a\" = \"b\" }\nname = \"x { \\\"y\\\" = 1 }\"\n";
        assert_eq!(hcl1_map_blocks_to_objects(text), text);
    }
}
