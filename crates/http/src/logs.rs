//! Log lines in hclog's shapes, as Nomad writes them:
//! `2026-01-01T00:00:00.000Z [INFO]  http: request complete: method=GET path=/v1/agent/self`,
//! or one JSON object per line (`@level`, `@message`, `@module`, `@timestamp`, `@caller`, fields).
//!
//! One event is one line, whatever its text: values can come from the network (gossip member
//! names, request paths), so a raw ESC or newline in them must reach neither a terminal nor a
//! line-oriented log reader. In text lines a field value that is empty or has whitespace, `"`,
//! or a control or invisible format character ([`needs_escape`]) is written quoted and escaped
//! as Go's `%q` does (`"\x1b[31m"`, `"a\r\nb"`, `"\u009b"`); the message is escaped the same
//! way without the quotes. JSON lines escape the same characters as `\uXXXX`.

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
        let mut out = escape_json_text(serde_json::Value::Object(obj).to_string());
        out.push('\n');
        return out;
    }
    let mut out = format!("{ts} {} {}: ", level_tag(line.level), line.module);
    if let Some(caller) = &line.caller {
        out.push_str(caller);
        out.push_str(": ");
    }
    push_escaped(&mut out, &line.fields.message, false);
    if !line.fields.pairs.is_empty() {
        out.push(':');
        for (k, v) in &line.fields.pairs {
            let _ = write!(out, " {k}=");
            if v.is_empty()
                || v.contains(|c: char| c.is_whitespace() || c == '"' || needs_escape(c))
            {
                out.push('"');
                push_escaped(&mut out, v, true);
                out.push('"');
            } else {
                out.push_str(v);
            }
        }
    }
    out.push('\n');
    out
}

/// Whether a character is written escaped: a control character (C0, DEL, C1) or an invisible
/// Unicode format or separator character that can reorder or hide text on a terminal (bidi
/// overrides, zero-width characters, line and paragraph separators, non-ASCII spaces) — close to
/// what Go's `unicode.IsPrint` rejects.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00A0}'
                | '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{2000}'..='\u{200F}'
                | '\u{2028}'..='\u{202F}'
                | '\u{205F}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{3000}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Appends `s` escaped as inside Go's `%q`: `\a \b \f \n \r \t \v`, `\xNN` below U+0080 and
/// `\uNNNN` above for every [`needs_escape`] character; `quoted` also escapes `"` and `\` (the
/// message, written without quotes, keeps them as they are).
fn push_escaped(out: &mut String, s: &str, quoted: bool) {
    for c in s.chars() {
        match c {
            '"' | '\\' if quoted => {
                out.push('\\');
                out.push(c);
            }
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Replaces the [`needs_escape`] characters serde_json leaves raw (DEL, C1, format characters;
/// it already escapes C0) with `\uXXXX`. They can only occur inside JSON strings, so the line
/// stays valid JSON with the same value.
fn escape_json_text(json: String) -> String {
    if !json.contains(needs_escape) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
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
    fn control_characters_are_escaped_in_text_and_json() {
        /// `value` as a field, and after `m` in the message: the text line must show `field` and
        /// `message` for them, and the JSON line must decode to `value` again.
        fn check(value: &str, field: &str, message: &str) {
            let f = Fields {
                message: format!("m{value}"),
                pairs: vec![("v", value.to_string())],
            };
            let line = Line {
                time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_000),
                level: &Level::INFO,
                module: "gossip",
                fields: &f,
                caller: None,
            };
            let text = format_line(&line, false);
            assert_eq!(
                text,
                format!("2026-01-01T00:00:00.000Z [INFO]  gossip: m{message}: v={field}\n"),
                "value {value:?}"
            );
            let json = format_line(&line, true);
            for out in [&text, &json] {
                let body = out.strip_suffix('\n').unwrap();
                assert!(!body.contains(needs_escape), "raw in {out:?}");
            }
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["v"], value, "{json}");
            assert_eq!(v["@message"], format!("m{value}"), "{json}");
        }
        check("plain", "plain", "plain");
        check("héllo", "héllo", "héllo");
        check(r"C:\dir", r"C:\dir", r"C:\dir");
        check("", r#""""#, "");
        check("a b", r#""a b""#, "a b");
        check(r#"say "hi""#, r#""say \"hi\"""#, r#"say "hi""#);
        check(r"a\ b", r#""a\\ b""#, r"a\ b");
        check("\x1b[31mred", r#""\x1b[31mred""#, r"\x1b[31mred");
        check("a\r\nb", r#""a\r\nb""#, r"a\r\nb");
        check("t\tab", r#""t\tab""#, r"t\tab");
        check("\0", r#""\x00""#, r"\x00");
        check("\x07\x08\x0b\x0c", r#""\a\b\v\f""#, r"\a\b\v\f");
        check("\x7f", r#""\x7f""#, r"\x7f");
        check("\u{9b}2J", r#""\u009b2J""#, r"\u009b2J");
        check("\u{85}", r#""\u0085""#, r"\u0085");
        check("\u{202e}txt", r#""\u202etxt""#, r"\u202etxt");
        check("\u{2028}", r#""\u2028""#, r"\u2028");
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
