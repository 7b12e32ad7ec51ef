//! Log lines in hclog's shapes, as Nomad writes them:
//! `2026-01-01T00:00:00.000Z [INFO]  http: request complete: method=GET path=/v1/agent/self`,
//! or one JSON object per line (`@level`, `@message`, `@module`, `@timestamp`, fields).

use std::fmt::Write as _;
use std::time::SystemTime;

use caravan_agent_core::config::LogLevel;
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

/// Formats one log line (with its trailing newline).
pub fn format_line(
    now: SystemTime,
    level: &Level,
    module: &str,
    fields: &Fields,
    json: bool,
) -> String {
    let ts = humantime::format_rfc3339_millis(now).to_string();
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert("@level".into(), level.as_str().to_ascii_lowercase().into());
        obj.insert("@message".into(), fields.message.clone().into());
        obj.insert("@module".into(), module.into());
        obj.insert("@timestamp".into(), ts.into());
        for (k, v) in &fields.pairs {
            obj.insert((*k).to_string(), v.clone().into());
        }
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        return line;
    }
    let mut line = format!("{ts} {} {module}: {}", level_tag(level), fields.message);
    if !fields.pairs.is_empty() {
        line.push(':');
        for (k, v) in &fields.pairs {
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                let _ = write!(line, " {k}={v:?}");
            } else {
                let _ = write!(line, " {k}={v}");
            }
        }
    }
    line.push('\n');
    line
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
        let module = meta.target().replace("::", ".");
        writer.write_str(&format_line(
            SystemTime::now(),
            meta.level(),
            &module,
            &fields,
            self.json,
        ))
    }
}

/// Installs the agent's own log output at its configured level.
pub fn init(level: LogLevel, json: bool) {
    let filter = match level {
        LogLevel::Trace => tracing_subscriber::filter::LevelFilter::TRACE,
        LogLevel::Debug => tracing_subscriber::filter::LevelFilter::DEBUG,
        LogLevel::Info => tracing_subscriber::filter::LevelFilter::INFO,
        LogLevel::Warn => tracing_subscriber::filter::LevelFilter::WARN,
        LogLevel::Error => tracing_subscriber::filter::LevelFilter::ERROR,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .event_format(HclogFormat { json })
        .with_writer(std::io::stdout)
        .try_init();
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
        let line = format_line(t, &Level::INFO, "http", &fields(), false);
        assert_eq!(
            line,
            "2026-01-01T00:00:00.000Z [INFO]  http: request complete: method=GET path=\"/v1/a b\"\n"
        );
    }

    #[test]
    fn json_line() {
        let line = format_line(SystemTime::now(), &Level::DEBUG, "http", &fields(), true);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["@level"], "debug");
        assert_eq!(v["@module"], "http");
        assert_eq!(v["@message"], "request complete");
        assert_eq!(v["method"], "GET");
    }
}
