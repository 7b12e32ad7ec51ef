//! Requests for the agent's debugging endpoints — profiles and log monitors — as the HTTP API
//! builds them and the agent RPC (`Agent.Profile`, `Agent.Monitor`, `Agent.MonitorExport`)
//! decodes them from JSON.
//!
//! One type per request serves both paths, so they cannot disagree on the rules: a
//! [`ProfileRequest`] is validated when it is built ([`ProfileRequest::new`]) and when it is
//! decoded (serde goes through the same constructor), so `seconds` above
//! [`MAX_PROFILE_SECONDS`] never reaches a profiler, whichever way the request came in.
//!
//! These two types are the agent's RPC wire format, hence `Serialize` and `Deserialize` (field
//! names as written here), unlike the rest of this crate's domain types.

use serde::{Deserialize, Serialize};

/// The longest CPU profile or trace one request may ask for: an hour, as Nomad allows.
pub const MAX_PROFILE_SECONDS: u64 = 3600;

/// Why a profile request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRequestError {
    /// `seconds` is above [`MAX_PROFILE_SECONDS`].
    SecondsTooLarge(u64),
}

impl std::fmt::Display for ProfileRequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The HTTP API's error text (spec §9 / `caravan_http::pprof`), word for word.
            ProfileRequestError::SecondsTooLarge(_) => {
                write!(f, "seconds must be at most {MAX_PROFILE_SECONDS}")
            }
        }
    }
}

impl std::error::Error for ProfileRequestError {}

/// A validated profile request: `seconds` is at most [`MAX_PROFILE_SECONDS`].
///
/// Built with [`ProfileRequest::new`] or decoded from JSON (which validates the same way); other
/// crates cannot build one with a struct literal (`#[non_exhaustive]`). The fields stay public
/// for reading; code that assigns to them afterwards should call [`ProfileRequest::validate`]
/// again (the agent's profiler does, before it starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProfileRequestWire")]
#[non_exhaustive]
pub struct ProfileRequest {
    /// `cmdline`, `profile`, `trace`, or a named profile.
    pub name: String,
    /// Duration for `profile` and `trace`, at most [`MAX_PROFILE_SECONDS`] (the HTTP API turns
    /// an absent or non-positive value into 1).
    pub seconds: u64,
    /// Non-zero: text output for named profiles (`2`: more detail).
    pub debug: i64,
    /// Positive: collect garbage first (`heap`).
    pub gc: i64,
}

/// The JSON shape, before validation.
#[derive(Deserialize)]
struct ProfileRequestWire {
    name: String,
    seconds: u64,
    debug: i64,
    gc: i64,
}

impl TryFrom<ProfileRequestWire> for ProfileRequest {
    type Error = ProfileRequestError;

    fn try_from(w: ProfileRequestWire) -> Result<Self, Self::Error> {
        ProfileRequest::new(w.name, w.seconds, w.debug, w.gc)
    }
}

impl ProfileRequest {
    /// A request, refused when `seconds` is above [`MAX_PROFILE_SECONDS`].
    pub fn new(
        name: impl Into<String>,
        seconds: u64,
        debug: i64,
        gc: i64,
    ) -> Result<ProfileRequest, ProfileRequestError> {
        let request = ProfileRequest {
            name: name.into(),
            seconds,
            debug,
            gc,
        };
        request.validate()?;
        Ok(request)
    }

    /// Checks the rules again (for a request whose public fields were changed after it was
    /// built).
    pub fn validate(&self) -> Result<(), ProfileRequestError> {
        if self.seconds > MAX_PROFILE_SECONDS {
            return Err(ProfileRequestError::SecondsTooLarge(self.seconds));
        }
        Ok(())
    }
}

/// A monitor stream's options as the HTTP layer validated them, for relaying to another agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorRequest {
    /// `log_level` as given (empty: `info`).
    pub log_level: String,
    /// JSON log lines.
    pub log_json: bool,
    /// Plain text instead of JSON frames.
    pub plain: bool,
    /// `@caller` / file:line in lines.
    pub include_location: bool,
}

/// A `/v1/agent/monitor/export` request as the HTTP layer validated it, for serving here or
/// relaying to another server (spec §12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    /// Export the agent's log file (`log_file`).
    pub on_disk: bool,
    /// Keep streaming what the journal adds (journald mode only).
    pub follow: bool,
    /// Plain text instead of JSON frames.
    pub plain: bool,
    /// How far back the journal is read (journald mode; the log file is read whole).
    #[serde(with = "nanos")]
    pub logs_since: std::time::Duration,
    /// The systemd unit whose journal is exported; empty in log-file mode.
    pub service_name: String,
}

/// The default `logs_since`: 72 hours, as in Nomad.
pub const DEFAULT_LOGS_SINCE: std::time::Duration = std::time::Duration::from_secs(72 * 3600);

mod nanos {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        u64::deserialize(d).map(std::time::Duration::from_nanos)
    }
}

/// Checks a journald `service_name` as Nomad does (`monitor.ScanServiceName`): at most 255
/// bytes, containing `nomad`, a known unit suffix after the last `.` if there is one, and a
/// unit name of word characters, `\`, `.`, `_`, `-` with an optional `@instance`. The error is
/// Nomad's text (`service name too long`, `service name must include 'nomad`, `invalid
/// suffix`, `<prefix> does not meet systemd conventions`).
///
/// The check is what keeps the name safe to hand to `journalctl` as one argument.
pub fn scan_service_name(input: &str) -> Result<(), String> {
    const SUFFIXES: [&str; 11] = [
        "service",
        "socket",
        "device",
        "mount",
        "automount",
        "swap",
        "target",
        "path",
        "timer",
        "slice",
        "scope",
    ];
    if input.len() > 255 {
        return Err("service name too long".into());
    }
    if !input.contains("nomad") {
        return Err("service name must include 'nomad".into());
    }
    let parts: Vec<&str> = input.split('.').collect();
    let prefix = match parts.split_last() {
        Some((suffix, rest)) if !rest.is_empty() => {
            if !SUFFIXES.contains(suffix) {
                return Err("invalid suffix".into());
            }
            rest.concat()
        }
        _ => input.to_string(),
    };
    // `^[\w\\._-]*(@[\w\\._-]+)?$`, Go's `\w` being ASCII word characters.
    let unit_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '\\' | '.' | '-');
    let safe = match prefix.split_once('@') {
        None => prefix.chars().all(unit_char),
        Some((unit, instance)) => {
            unit.chars().all(unit_char) && !instance.is_empty() && instance.chars().all(unit_char)
        }
    };
    if safe {
        Ok(())
    } else {
        Err(format!("{prefix} does not meet systemd conventions"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_checked_as_nomad_does() {
        for good in [
            "nomad",
            "nomad.service",
            "nomad-client.service",
            "nomad@a.service",
            "my_nomad.socket",
            "nomad.client.service",
        ] {
            assert_eq!(scan_service_name(good), Ok(()), "{good}");
        }
        let bad = [
            (
                &*"n".repeat(250).replace('n', "nomad"),
                "service name too long",
            ),
            ("consul.service", "service name must include 'nomad"),
            ("nomad.client", "invalid suffix"),
            (
                "nomad;rm -rf.service",
                "nomad;rm -rf does not meet systemd conventions",
            ),
            ("nomad@.service", "nomad@ does not meet systemd conventions"),
            ("nomad@a@b", "nomad@a@b does not meet systemd conventions"),
            ("nomad $(x)", "nomad $(x) does not meet systemd conventions"),
        ];
        for (name, want) in bad {
            assert_eq!(scan_service_name(name), Err(want.to_string()), "{name}");
        }
    }

    #[test]
    fn export_requests_travel_as_json() {
        let r = ExportRequest {
            on_disk: true,
            follow: false,
            plain: true,
            logs_since: DEFAULT_LOGS_SINCE,
            service_name: String::new(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"logs_since\":259200000000000"), "{text}");
        assert_eq!(serde_json::from_str::<ExportRequest>(&text).unwrap(), r);
    }

    #[test]
    fn decoding_a_profile_with_seconds_above_the_bound_fails_with_the_http_text() {
        let e = serde_json::from_str::<ProfileRequest>(
            r#"{"name":"profile","seconds":18446744073709551615,"debug":0,"gc":0}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("seconds must be at most 3600"),
            "{e}"
        );
        let e = serde_json::from_str::<ProfileRequest>(
            r#"{"name":"trace","seconds":3601,"debug":0,"gc":0}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("seconds must be at most 3600"),
            "{e}"
        );
    }

    #[test]
    fn decoding_within_the_bound_round_trips() {
        for seconds in [0, 1, MAX_PROFILE_SECONDS] {
            let r = ProfileRequest::new("cmdline", seconds, 2, 1).unwrap();
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(
                text,
                format!(r#"{{"name":"cmdline","seconds":{seconds},"debug":2,"gc":1}}"#)
            );
            assert_eq!(serde_json::from_str::<ProfileRequest>(&text).unwrap(), r);
        }
    }

    #[test]
    fn the_constructor_and_validate_apply_the_bound() {
        assert_eq!(
            ProfileRequest::new("profile", MAX_PROFILE_SECONDS + 1, 0, 0),
            Err(ProfileRequestError::SecondsTooLarge(
                MAX_PROFILE_SECONDS + 1
            ))
        );
        assert_eq!(
            ProfileRequestError::SecondsTooLarge(u64::MAX).to_string(),
            "seconds must be at most 3600"
        );
        let mut r = ProfileRequest::new("profile", 1, 0, 0).unwrap();
        r.seconds = u64::MAX;
        assert!(r.validate().is_err());
    }
}
