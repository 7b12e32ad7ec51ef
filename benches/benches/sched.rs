//! Scheduling hot paths: broker enqueue→dequeue→ack round trips (1 and 2 threads), placing a
//! 10,000-allocation service job over 5,000 nodes, a system job over 10,000 nodes, and the time
//! from a pause request to `Paused`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caravan_agent_core::sched::WorkerStatus;
use caravan_sched::broker::{BrokerConfig, Eval, EvalBroker};
use caravan_sched::placement::{Ask, Nodes, Picker, bin_pack, one_per_node};
use caravan_sched::workers::Worker;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn eval(i: u64) -> Eval {
    Eval {
        id: format!("e{i}"),
        job_id: format!("j{}", i % 1024),
        priority: 50,
        scheduler: "service".into(),
        create_index: i,
    }
}

fn broker(c: &mut Criterion) {
    let types = vec!["service".to_string()];
    let mut g = c.benchmark_group("broker round trip");
    g.throughput(Throughput::Elements(1));
    let b = EvalBroker::new(BrokerConfig::default());
    let evals: Vec<Eval> = (0..1024).map(eval).collect();
    let mut i = 0usize;
    g.bench_function("1 thread", |bench| {
        bench.iter(|| {
            b.enqueue(evals[i % 1024].clone());
            i += 1;
            let (e, token) = b.dequeue(&types, Duration::ZERO, &|| false).expect("ready");
            b.ack(&e.id, token).expect("ack");
        })
    });
    g.bench_function("2 threads", |bench| {
        bench.iter_custom(|iters| {
            let b = Arc::new(EvalBroker::new(BrokerConfig::default()));
            let start = Instant::now();
            let per = iters / 2 + 1;
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    let b = b.clone();
                    let types = types.clone();
                    std::thread::spawn(move || {
                        for k in 0..per {
                            let mut e = eval(k);
                            e.id = format!("t{t}-{k}");
                            e.job_id = format!("t{t}-j{}", k % 512);
                            b.enqueue(e);
                            if let Some((e, token)) =
                                b.dequeue(&types, Duration::from_millis(10), &|| false)
                            {
                                let _ = b.ack(&e.id, token);
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                let _ = h.join();
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn cluster(n: usize) -> Nodes {
    let mut nodes = Nodes::default();
    for i in 0..n {
        nodes.push(&format!("node-{i}"), "dc1", 8000, 16384);
    }
    nodes
}

fn placement(c: &mut Criterion) {
    let dcs = vec!["dc1".to_string()];
    let mut g = c.benchmark_group("placement");
    g.sample_size(20);
    g.throughput(Throughput::Elements(10_000));
    let base = cluster(5_000);
    g.bench_function("service: 10,000 allocs over 5,000 nodes", |bench| {
        bench.iter(|| {
            let mut nodes = base.clone();
            let p = bin_pack(
                &mut nodes,
                &dcs,
                Ask {
                    cpu: 500,
                    memory_mb: 256,
                },
                10_000,
                &mut Picker::new(7),
            );
            black_box(p.nodes.len())
        })
    });
    let big = cluster(10_000);
    g.bench_function("system: one per node over 10,000 nodes", |bench| {
        bench.iter(|| {
            let mut nodes = big.clone();
            black_box(
                one_per_node(
                    &mut nodes,
                    &dcs,
                    Ask {
                        cpu: 100,
                        memory_mb: 64,
                    },
                )
                .nodes
                .len(),
            )
        })
    });
    g.finish();
}

fn pause_latency(c: &mut Criterion) {
    let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
    let types = vec!["service".to_string(), "_core".to_string()];
    let w = Worker::start(types, broker, Arc::new(|_e: &Eval| Ok(())));
    c.bench_function("pause → Paused (worker waiting to dequeue)", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                w.pause();
                while w.info().status != WorkerStatus::Paused {
                    std::hint::spin_loop();
                }
                total += start.elapsed();
                w.resume();
                while w.info().status != WorkerStatus::Started {
                    std::hint::spin_loop();
                }
            }
            total
        })
    });
    w.stop();
    w.join();
}

criterion_group!(benches, broker, placement, pause_latency);
criterion_main!(benches);
