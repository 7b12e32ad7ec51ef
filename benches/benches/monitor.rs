//! Cost of one log event with 0, 1 and 10 monitor subscribers, against a plain disabled event in
//! the same run.

use std::hint::black_box;

use caravan_http::monitor::{MonitorHub, SubscribeOptions, Subscription};
use criterion::{Criterion, criterion_group, criterion_main};
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

fn bench_events(c: &mut Criterion) {
    // Baseline: an event below the only layer's level.
    let baseline = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::ERROR));
    tracing::subscriber::with_default(baseline, || {
        c.bench_function("log event: disabled, no monitor layer", |b| {
            b.iter(|| tracing::debug!(target: "http", path = black_box("/v1/agent/self"), "request complete"))
        });
    });
    for subscribers in [0usize, 1, 10] {
        let hub = MonitorHub::new();
        let stack = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::ERROR))
            .with(hub.layer());
        tracing::subscriber::with_default(stack, || {
            let mut subs: Vec<Subscription> = (0..subscribers)
                .map(|_| {
                    hub.subscribe(SubscribeOptions {
                        level: Some(Level::DEBUG),
                        json: false,
                        include_location: false,
                    })
                })
                .collect();
            c.bench_function(&format!("log event: {subscribers} debug subscribers"), |b| {
                b.iter(|| {
                    tracing::debug!(target: "http", path = black_box("/v1/agent/self"), "request complete");
                    for s in &mut subs {
                        while s.lines.try_recv().is_ok() {}
                    }
                })
            });
        });
    }
}

criterion_group!(benches, bench_events);
criterion_main!(benches);
