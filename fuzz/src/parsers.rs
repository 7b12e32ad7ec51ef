//! The text parsers: agent configuration (HCL and JSON), ACL policy rules, Go durations.

use std::fmt::Write as _;
use std::time::Duration;

use caravan_agent_core::acl::{Acl, Level, Rules, parse_rules};
use caravan_agent_core::config::{AgentConfig, Format, HostFacts, parse_config, tree_to_file};
use caravan_agent_core::duration::{format_go_duration, parse_go_duration};

/// Agent configuration in HCL, as `-config` files and `caravan agent` read it.
///
/// Invariant: [`parse_config`] answers `Ok` or an error for any text, never panics; a text it
/// accepts resolves ([`AgentConfig::resolve`]) to a configuration or an error, never a panic;
/// and its tree printed as JSON parses back through the JSON parser to the same tree (print →
/// parse round trip: what `/v1/agent/self` and a JSON config file carry means the same).
pub fn config_hcl(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        config_text(text, Format::Hcl);
    }
}

/// Agent configuration in JSON. Invariant: as [`config_hcl`].
pub fn config_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        config_text(text, Format::Json);
    }
}

fn config_text(text: &str, format: Format) {
    let Ok(source) = parse_config("fuzz", text, format) else {
        return;
    };
    let printed = serde_json::to_string(&source.tree).unwrap_or_default();
    match parse_config("printed.json", &printed, Format::Json) {
        Ok(again) => assert_eq!(
            again.tree, source.tree,
            "the tree printed as JSON parsed back to another tree: {printed}"
        ),
        Err(e) => panic!("the tree printed as JSON does not parse: {e}: {printed}"),
    }
    if let Ok(file) = tree_to_file(&source.tree) {
        let host = HostFacts::loopback("fuzz", 2);
        let _ = AgentConfig::resolve(file, false, &host, Vec::new());
    }
}

/// ACL policy rules (`PUT /v1/acl/policy/<name>`, replicated policies).
///
/// Invariant: [`parse_rules`] answers `Ok` or an error for any text, never panics; accepted
/// rules evaluate ([`Acl::from_rules`]) without panicking, and printed back as HCL they parse
/// to the same rules (print → parse round trip).
pub fn acl_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = parse_rules(text) else {
        return;
    };
    let acl = Acl::from_rules([&rules]);
    let _ = (
        acl.allow_agent_write(),
        acl.allow_node_read(),
        acl.allow_job_submit(),
    );
    let printed = print_rules(&rules);
    match parse_rules(&printed) {
        Ok(again) => assert_eq!(again, rules, "printed rules parsed otherwise: {printed}"),
        Err(e) => panic!("printed rules do not parse: {e}: {printed}"),
    }
}

/// Rules as policy HCL, in the syntax Nomad's documentation shows.
pub fn print_rules(rules: &Rules) -> String {
    let mut out = String::new();
    for (block, level) in [
        ("agent", rules.agent),
        ("node", rules.node),
        ("operator", rules.operator),
    ] {
        if let Some(level) = level_text(level) {
            let _ = writeln!(out, "{block} {{\n  policy = \"{level}\"\n}}");
        }
    }
    for (name, (level, caps)) in &rules.namespaces {
        let _ = writeln!(out, "namespace {} {{", hcl_string(name));
        if let Some(level) = level_text(*level) {
            let _ = writeln!(out, "  policy = \"{level}\"");
        }
        if !caps.is_empty() {
            let list: Vec<String> = caps.iter().map(|c| hcl_string(c)).collect();
            let _ = writeln!(out, "  capabilities = [{}]", list.join(", "));
        }
        out.push_str("}\n");
    }
    out
}

fn level_text(level: Level) -> Option<&'static str> {
    match level {
        Level::None => None,
        Level::Read => Some("read"),
        Level::Write => Some("write"),
        Level::Deny => Some("deny"),
    }
}

/// A quoted HCL string: HCL's escapes (`\\`, `\"`, `\n`, `\r`, `\t`, `\uNNNN` for other control
/// characters; not JSON's `\b` and `\f`), and template openers (`${`, `%{`) doubled.
fn hcl_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out.replace("${", "$${").replace("%{", "%%{")
}

/// Go-syntax durations (configuration values, `?wait=`, `?logs_since=`).
///
/// Invariant: [`parse_go_duration`] answers `Ok` or an error for any text, never panics; an
/// accepted duration formats ([`format_go_duration`]) to a text that parses back to the same
/// duration; and any duration up to Go's maximum (`i64::MAX` nanoseconds), taken from the
/// input's first 8 bytes, formats to a text that parses back to itself.
pub fn duration(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(d) = parse_go_duration(text)
    {
        round_trip(d);
    }
    if let Some(head) = data.first_chunk::<8>() {
        let nanos = u64::from_le_bytes(*head) & (i64::MAX as u64);
        round_trip(Duration::from_nanos(nanos));
    }
}

fn round_trip(d: Duration) {
    let text = format_go_duration(d);
    match parse_go_duration(&text) {
        Ok(back) => assert_eq!(back, d, "{d:?} formatted as {text:?} parsed back otherwise"),
        Err(e) => panic!("{d:?} formatted as {text:?} does not parse: {e}"),
    }
}
