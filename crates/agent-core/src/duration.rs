//! Go-syntax durations (`1h30m`, `1.5h`, `300ms`, `-2s`), as Nomad's config files and flags use.
//!
//! Go's `time.ParseDuration` accepts a sign, then one or more `<decimal number><unit>` pairs with units
//! `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`. A bare `0` is valid. Rust's [`Duration`] cannot be
//! negative, so [`parse_go_duration`] rejects negative values other than zero.

use std::time::Duration;

use crate::CoreError;

/// Parses a Go-syntax duration string.
///
/// ```
/// use caravan_agent_core::duration::parse_go_duration;
/// use std::time::Duration;
/// assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_go_duration("1h30m10s").unwrap(), Duration::from_secs(5410));
/// assert!(parse_go_duration("98seconds").is_err());
/// ```
pub fn parse_go_duration(text: &str) -> Result<Duration, CoreError> {
    let bad = |why: &str| CoreError::Duration(format!("time: {why} in duration \"{text}\""));
    let mut rest = text;
    let negative = rest.starts_with('-');
    if let Some(r) = rest.strip_prefix('-').or_else(|| rest.strip_prefix('+')) {
        rest = r;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("invalid duration"));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (value_nanos, after) = parse_component(rest).map_err(|why| bad(&why))?;
        total_nanos = total_nanos
            .checked_add(value_nanos)
            .ok_or_else(|| bad("invalid duration"))?;
        rest = after;
    }
    if total_nanos > i64::MAX as u128 {
        return Err(bad("invalid duration"));
    }
    if negative && total_nanos != 0 {
        return Err(CoreError::Duration(format!(
            "negative duration \"{text}\" is not allowed"
        )));
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// Parses one `<number><unit>` pair; returns its value in nanoseconds and the remaining text.
fn parse_component(text: &str) -> Result<(u128, &str), String> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number = &text[..number_end];
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err("invalid duration".into());
    }
    let after_number = &text[number_end..];
    let unit_end = after_number
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(after_number.len());
    let unit = &after_number[..unit_end];
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "" => return Err("missing unit".into()),
        other => return Err(format!("unknown unit \"{other}\"")),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| "invalid duration".to_string())?
    };
    let mut nanos = whole
        .checked_mul(unit_nanos)
        .ok_or_else(|| "invalid duration".to_string())?;
    let mut scale = unit_nanos;
    for digit in frac.bytes().take(30) {
        scale /= 10;
        nanos += u128::from(digit - b'0') * scale;
    }
    Ok((nanos, &after_number[unit_end..]))
}

/// Formats a duration as Go's `Duration.String()` does (`1h30m0s`, `1.5s`, `300ms`, `0s`).
///
/// ```
/// use caravan_agent_core::duration::format_go_duration;
/// use std::time::Duration;
/// assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
/// assert_eq!(format_go_duration(Duration::from_millis(300)), "300ms");
/// ```
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let secs = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `value / scale` as a decimal with trailing zeros trimmed.
fn fraction(value: u128, scale: u128) -> String {
    let whole = value / scale;
    let rem = value % scale;
    if rem == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_forms() {
        let cases = [
            ("0", 0),
            ("1ns", 1),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("300ms", 300_000_000),
            ("30s", 30_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("1h30m", 5_400_000_000_000),
            (".5s", 500_000_000),
            ("2.s", 2_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0s", 0),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_go_duration(text).unwrap(),
                Duration::from_nanos(nanos),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_bad_forms() {
        for text in ["", "1", "s", "1x", "98seconds", "1.2.3s", "-", "-1s", "1d"] {
            assert!(parse_go_duration(text).is_err(), "{text} should fail");
        }
        assert_eq!(
            parse_go_duration("98seconds").unwrap_err().to_string(),
            "time: unknown unit \"seconds\" in duration \"98seconds\""
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(
            format_go_duration(Duration::from_secs(72 * 3600)),
            "72h0m0s"
        );
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(format_go_duration(Duration::from_secs(61)), "1m1s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..(i64::MAX as u64)) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)).unwrap(), d);
        }
    }
}
