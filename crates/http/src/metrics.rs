//! Telemetry for `/v1/metrics`: a recorder for the `metrics` facade (the crate every part of
//! the agent records through with `metrics::counter!`, `gauge!` and `histogram!`) that keeps
//! each series in atomics, and its two renderings: go-metrics' JSON (`Timestamp`, `Gauges`,
//! `Counters`, `Samples`) and the Prometheus text format.
//!
//! Recording through a handle is an atomic add (counters, gauges) or a few (a histogram sample:
//! count, sum, sum of squares, min, max and one bucket); looking a series up by name takes a
//! read lock, so hot paths keep the handle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use parking_lot::RwLock;
use serde::Serialize;

/// Upper bounds of the Prometheus histogram buckets, in the unit recorded (milliseconds for
/// durations), from 0.1 ms to 10 s.
pub const BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0, 500.0, 1000.0, 10000.0,
];

/// An `f64` in an `AtomicU64`.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> AtomicF64 {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn store(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

/// A counter: the total added, and how many additions made it.
#[derive(Debug, Default)]
struct CounterCell {
    sum: AtomicU64,
    count: AtomicU64,
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.sum.fetch_max(value, Ordering::Relaxed);
    }
}

/// A gauge.
#[derive(Debug, Default)]
struct GaugeCell(AtomicF64);

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.0.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.0.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value);
    }
}

/// A histogram: count, sum, sum of squares, extremes and bucket counts since start.
#[derive(Debug)]
struct HistogramCell {
    count: AtomicU64,
    sum: AtomicF64,
    sum_sq: AtomicF64,
    min: AtomicF64,
    max: AtomicF64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Default for HistogramCell {
    fn default() -> HistogramCell {
        HistogramCell {
            count: AtomicU64::new(0),
            sum: AtomicF64::new(0.0),
            sum_sq: AtomicF64::new(0.0),
            min: AtomicF64::new(f64::INFINITY),
            max: AtomicF64::new(f64::NEG_INFINITY),
            buckets: Default::default(),
        }
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.update(|s| s + value);
        self.sum_sq.update(|s| s + value * value);
        self.min.update(|m| m.min(value));
        self.max.update(|m| m.max(value));
        if let Some(i) = BUCKETS.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Series {
    counters: BTreeMap<Key, Arc<CounterCell>>,
    gauges: BTreeMap<Key, Arc<GaugeCell>>,
    histograms: BTreeMap<Key, Arc<HistogramCell>>,
}

/// The agent's metrics: the `metrics` recorder and what `/v1/metrics` renders. Cheap to clone.
#[derive(Clone, Default)]
pub struct MetricsSink(Arc<RwLock<Series>>);

/// Find or create, holding the write lock only to insert.
fn entry<T: Default>(
    sink: &RwLock<Series>,
    key: &Key,
    pick: impl Fn(&mut Series) -> &mut BTreeMap<Key, Arc<T>>,
    read: impl Fn(&Series) -> Option<Arc<T>>,
) -> Arc<T> {
    if let Some(found) = read(&sink.read()) {
        return found;
    }
    pick(&mut sink.write())
        .entry(key.clone())
        .or_default()
        .clone()
}

impl Recorder for MetricsSink {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(entry(
            &self.0,
            key,
            |s| &mut s.counters,
            |s| s.counters.get(key).cloned(),
        ))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(entry(
            &self.0,
            key,
            |s| &mut s.gauges,
            |s| s.gauges.get(key).cloned(),
        ))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(entry(
            &self.0,
            key,
            |s| &mut s.histograms,
            |s| s.histograms.get(key).cloned(),
        ))
    }
}

/// One gauge in go-metrics' JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GaugeValue {
    /// Dotted name (`nomad.runtime.num_goroutines`).
    pub name: String,
    /// Value.
    pub value: f64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One counter or sample in go-metrics' JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SampledValue {
    /// Dotted name.
    pub name: String,
    /// Observations (for a counter: increments).
    pub count: u64,
    /// Observations per second since start.
    pub rate: f64,
    /// Their sum.
    pub sum: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// `GET /v1/metrics`: go-metrics' `DisplayMetrics` shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricsSummary {
    /// `2006-01-02 15:04:05 -0700 MST` in UTC.
    pub timestamp: String,
    /// Gauges.
    pub gauges: Vec<GaugeValue>,
    /// Points (none).
    pub points: Vec<()>,
    /// Counters.
    pub counters: Vec<SampledValue>,
    /// Samples (histograms).
    pub samples: Vec<SampledValue>,
}

fn labels(key: &Key) -> BTreeMap<String, String> {
    key.labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect()
}

impl MetricsSink {
    /// An empty sink.
    pub fn new() -> MetricsSink {
        MetricsSink::default()
    }

    /// The go-metrics JSON view, at `now` (seconds since the epoch) for an agent up for
    /// `uptime_secs`.
    pub fn summary(&self, timestamp: String, uptime_secs: f64) -> MetricsSummary {
        let s = self.0.read();
        let per_sec = |n: f64| {
            if uptime_secs > 0.0 {
                n / uptime_secs
            } else {
                0.0
            }
        };
        let gauges = s
            .gauges
            .iter()
            .map(|(k, g)| GaugeValue {
                name: k.name().to_string(),
                value: g.0.load(),
                labels: labels(k),
            })
            .collect();
        let counters = s
            .counters
            .iter()
            .map(|(k, c)| {
                let count = c.count.load(Ordering::Relaxed);
                let sum = c.sum.load(Ordering::Relaxed) as f64;
                let mean = if count > 0 { sum / count as f64 } else { 0.0 };
                SampledValue {
                    name: k.name().to_string(),
                    count,
                    rate: per_sec(sum),
                    sum,
                    // Increments are not kept one by one: their mean stands for both ends.
                    min: mean,
                    max: mean,
                    mean,
                    stddev: 0.0,
                    labels: labels(k),
                }
            })
            .collect();
        let samples = s
            .histograms
            .iter()
            .map(|(k, h)| {
                let count = h.count.load(Ordering::Relaxed);
                let sum = h.sum.load();
                let n = count as f64;
                let mean = if count > 0 { sum / n } else { 0.0 };
                let var = if count > 1 {
                    ((h.sum_sq.load() - n * mean * mean) / (n - 1.0)).max(0.0)
                } else {
                    0.0
                };
                let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
                SampledValue {
                    name: k.name().to_string(),
                    count,
                    rate: per_sec(sum),
                    sum,
                    min: finite(h.min.load()),
                    max: finite(h.max.load()),
                    mean,
                    stddev: var.sqrt(),
                    labels: labels(k),
                }
            })
            .collect();
        MetricsSummary {
            timestamp,
            gauges,
            points: Vec::new(),
            counters,
            samples,
        }
    }

    /// The Prometheus text format (0.0.4): dots in names become underscores; counters get
    /// `_total`, histograms `_bucket`, `_sum` and `_count`.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let s = self.0.read();
        let mut out = String::new();
        let name_of = |k: &Key| {
            k.name()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        let label_text = |k: &Key, extra: Option<(&str, String)>| {
            let mut parts: Vec<String> = k
                .labels()
                .map(|l| format!("{}=\"{}\"", l.key(), escape(l.value())))
                .collect();
            if let Some((name, value)) = extra {
                parts.push(format!("{name}=\"{value}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        let mut typed = std::collections::BTreeSet::new();
        let mut head = |out: &mut String, name: &str, kind: &str| {
            if typed.insert(name.to_string()) {
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
        };
        for (k, c) in &s.counters {
            let name = format!("{}_total", name_of(k));
            head(&mut out, &name, "counter");
            let _ = writeln!(
                out,
                "{name}{} {}",
                label_text(k, None),
                c.sum.load(Ordering::Relaxed)
            );
        }
        for (k, g) in &s.gauges {
            let name = name_of(k);
            head(&mut out, &name, "gauge");
            let _ = writeln!(out, "{name}{} {}", label_text(k, None), number(g.0.load()));
        }
        for (k, h) in &s.histograms {
            let name = name_of(k);
            head(&mut out, &name, "histogram");
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let le = Some(("le", number(*bound)));
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", label_text(k, le));
            }
            let count = h.count.load(Ordering::Relaxed);
            let inf = Some(("le", "+Inf".to_string()));
            let _ = writeln!(out, "{name}_bucket{} {count}", label_text(k, inf));
            let _ = writeln!(
                out,
                "{name}_sum{} {}",
                label_text(k, None),
                number(h.sum.load())
            );
            let _ = writeln!(out, "{name}_count{} {count}", label_text(k, None));
        }
        out
    }
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as Prometheus writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// `GET /v1/metrics` (Nomad's `MetricsRequest`): no token needed; `GET` only (`405 Invalid
/// method`); `?format=prometheus` is the text format when `telemetry.prometheus_metrics` is on,
/// else `415 Prometheus is not enabled`; otherwise go-metrics' JSON.
pub(crate) fn endpoint(caps: &crate::app::Caps, ctx: &crate::Ctx) -> crate::Reply {
    crate::only(ctx, &[http::Method::GET])?;
    let (sink, started) = caps.metrics()?;
    if ctx.query.get("format") == Some("prometheus") {
        if !caps.config().telemetry.prometheus_metrics {
            return Err(crate::ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Prometheus is not enabled",
            ));
        }
        let mut resp = http::Response::new(crate::response::full(sink.prometheus()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return Ok(resp);
    }
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let timestamp = now.replace('T', " ").replace('Z', " +0000 UTC");
    let summary = sink.summary(timestamp, started.elapsed().as_secs_f64());
    Ok(crate::response::json(&summary, ctx.query.pretty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders_both_formats() {
        let sink = MetricsSink::new();
        let key = Key::from_parts(
            "nomad.http.request",
            vec![metrics::Label::new("code", "200")],
        );
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let c = sink.register_counter(&Key::from_name("nomad.http.requests"), &meta);
        c.increment(1);
        c.increment(1);
        let h = sink.register_histogram(&key, &meta);
        for v in [1.0, 2.0, 3.0] {
            h.record(v);
        }
        let g = sink.register_gauge(&Key::from_name("nomad.runtime.num_goroutines"), &meta);
        g.set(7.0);
        let s = sink.summary("t".into(), 1.0);
        assert_eq!(s.counters[0].count, 2);
        assert_eq!(s.counters[0].sum, 2.0);
        let h = &s.samples[0];
        assert_eq!(
            (h.count, h.sum, h.min, h.max, h.mean),
            (3, 6.0, 1.0, 3.0, 2.0)
        );
        assert!((h.stddev - 1.0).abs() < 1e-9, "{}", h.stddev);
        assert_eq!(h.labels["code"], "200");
        assert_eq!(s.gauges[0].value, 7.0);
        let text = sink.prometheus();
        assert!(
            text.contains(
                "# TYPE nomad_http_requests_total counter\nnomad_http_requests_total 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("nomad_http_request_bucket{code=\"200\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("nomad_http_request_bucket{code=\"200\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("nomad_http_request_sum{code=\"200\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("nomad_runtime_num_goroutines 7\n"), "{text}");
    }
}
