//! Log lines in hclog's shapes, as Nomad writes them:
//! `2026-01-01T00:00:00.000Z [INFO]  http: request complete: method=GET path=/v1/agent/self`,
//! or one JSON object per line (`@level`, `@message`, `@module`, `@timestamp`, `@caller`, fields).

use std::fmt::Write as _;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The fields of one event: its message and the key/value pairs, in order.
#[derive(Debug, Default)]
pub struct Fields {
    /// The `message` field.
    pub message: String,
    /// Every other field.
    pub pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.pairs.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.pairs.push((field.name(), format!("{value:?}")));
        }
    }
}

/// hclog's bracketed level, padded to 7 characters.
pub fn level_tag(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "[TRACE]",
        Level::DEBUG => "[DEBUG]",
        Level::INFO => "[INFO] ",
        Level::WARN => "[WARN] ",
        Level::ERROR => "[ERROR]",
    }
}

/// One log line's parts.
pub struct Line<'a> {
    /// When.
    pub time: SystemTime,
    /// Level.
    pub level: &'a Level,
    /// Logger name (`http`, `agent`, …).
    pub module: &'a str,
    /// Message and fields.
    pub fields: &'a Fields,
    /// `file:line`, when location is asked for.
    pub caller: Option<String>,
}

/// Formats one log line (with its trailing newline), as text or JSON.
pub fn format_line(line: &Line<'_>, json: bool) -> String {
    let ts = humantime::format_rfc3339_millis(line.time).to_string();
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert(
            "@level".into(),
            line.level.as_str().to_ascii_lowercase().into(),
        );
        obj.insert("@message".into(), line.fields.message.clone().into());
        obj.insert("@module".into(), line.module.into());
        obj.insert("@timestamp".into(), ts.into());
        if let Some(caller) = &line.caller {
            obj.insert("@caller".into(), caller.clone().into());
        }
        for (k, v) in &line.fields.pairs {
            obj.insert((*k).to_string(), v.clone().into());
        }
        let mut out = serde_json::Value::Object(obj).to_string();
        out.push('\n');
        return out;
    }
    let mut out = format!("{ts} {} {}: ", level_tag(line.level), line.module);
    if let Some(caller) = &line.caller {
        out.push_str(caller);
        out.push_str(": ");
    }
    out.push_str(&line.fields.message);
    if !line.fields.pairs.is_empty() {
        out.push(':');
        for (k, v) in &line.fields.pairs {
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                let _ = write!(out, " {k}={v:?}");
            } else {
                let _ = write!(out, " {k}={v}");
            }
        }
    }
    out.push('\n');
    out
}

/// The logger name of an event: its target with `::` as `.`.
pub fn module_of(target: &str) -> String {
    target.replace("::", ".")
}

/// A `tracing_subscriber` event formatter producing hclog lines.
pub struct HclogFormat {
    /// JSON lines instead of text.
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for HclogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let module = module_of(meta.target());
        let line = Line {
            time: SystemTime::now(),
            level: meta.level(),
            module: &module,
            fields: &fields,
            caller: None,
        };
        writer.write_str(&format_line(&line, self.json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fields() -> Fields {
        Fields {
            message: "request complete".into(),
            pairs: vec![("method", "GET".into()), ("path", "/v1/a b".into())],
        }
    }

    #[test]
    fn text_line() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_000);
        let f = fields();
        let line = Line {
            time: t,
            level: &Level::INFO,
            module: "http",
            fields: &f,
            caller: None,
        };
        assert_eq!(
            format_line(&line, false),
            "2026-01-01T00:00:00.000Z [INFO]  http: request complete: method=GET path=\"/v1/a b\"\n"
        );
        let line = Line {
            caller: Some("x.rs:3".into()),
            ..line
        };
        assert!(format_line(&line, false).contains("http: x.rs:3: request complete"));
    }

    #[test]
    fn json_line() {
        let f = fields();
        let line = Line {
            time: SystemTime::now(),
            level: &Level::DEBUG,
            module: "http",
            fields: &f,
            caller: Some("a.rs:1".into()),
        };
        let v: serde_json::Value =
            serde_json::from_str(format_line(&line, true).trim_end()).unwrap();
        assert_eq!(v["@level"], "debug");
        assert_eq!(v["@module"], "http");
        assert_eq!(v["@message"], "request complete");
        assert_eq!(v["@caller"], "a.rs:1");
        assert_eq!(v["method"], "GET");
    }
}
