//! Recording on the hot path through the `metrics` facade into caravan-http's recorder: a
//! counter increment and a histogram sample through kept handles (what hot paths do; the
//! issue's bound is 50 ns each), and a counter looked up by name and labels each time (what
//! the HTTP layer does per request).

use caravan_http::metrics::MetricsSink;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use metrics::{Key, Label, Level, Metadata, Recorder};

fn record(c: &mut Criterion) {
    let sink = MetricsSink::new();
    let meta = Metadata::new("bench", Level::INFO, None);
    let counter = sink.register_counter(&Key::from_name("nomad.bench.counter"), &meta);
    let histogram = sink.register_histogram(
        &Key::from_parts(
            "nomad.bench.sample",
            vec![Label::new("route", "/v1/agent/health")],
        ),
        &meta,
    );
    c.bench_function("metrics/counter_increment", |b| {
        b.iter(|| counter.increment(black_box(1)))
    });
    c.bench_function("metrics/histogram_record", |b| {
        b.iter(|| histogram.record(black_box(1.25)))
    });
    let key = Key::from_parts(
        "nomad.http.requests",
        vec![
            Label::new("route", "/v1/agent/health"),
            Label::new("code", "200"),
        ],
    );
    c.bench_function("metrics/counter_by_key", |b| {
        b.iter(|| sink.register_counter(black_box(&key), &meta).increment(1))
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
