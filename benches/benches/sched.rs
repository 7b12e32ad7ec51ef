//! Scheduling hot paths: broker enqueue→dequeue→ack round trips (one thread, and two threads
//! sharing one broker: only completed round trips count, thread start-up is not timed), placing a
//! 10,000-allocation service job over 5,000 nodes and a system job over 10,000 nodes (the copy of
//! the cluster each placement consumes is made outside the timer), and the time from a pause
//! request to `Paused` for a worker already parked in `dequeue`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use caravan_agent_core::sched::WorkerStatus;
use caravan_sched::SchedError;
use caravan_sched::broker::{BrokerConfig, Eval, EvalBroker};
use caravan_sched::placement::{Ask, Nodes, Picker, bin_pack, one_per_node};
use caravan_sched::workers::{EvalSource, Worker};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

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
    // Two threads started once, before timing, and kept for every sample: a sample hands each
    // its share of the round trips and times until both report them done.
    let pair = Pair::start(Arc::new(EvalBroker::new(BrokerConfig::default())), &types);
    g.bench_function("2 threads", |bench| {
        bench.iter_custom(|iters| pair.run(iters))
    });
    g.finish();
    pair.stop();
}

/// Two threads doing enqueue → dequeue → ack round trips on one broker, on demand.
struct Pair {
    go: Vec<mpsc::Sender<u64>>,
    done: Vec<mpsc::Receiver<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pair {
    fn start(broker: Arc<EvalBroker>, types: &[String]) -> Pair {
        let mut pair = Pair {
            go: Vec::new(),
            done: Vec::new(),
            threads: Vec::new(),
        };
        for t in 0..2u64 {
            let (go_tx, go_rx) = mpsc::channel::<u64>();
            let (done_tx, done_rx) = mpsc::channel::<()>();
            let broker = broker.clone();
            let types = types.to_vec();
            // Prepared like the 1-thread bench's: a round trip costs one clone, not a format!.
            let evals: Vec<Eval> = (0..1024)
                .map(|k| Eval {
                    id: format!("t{t}-{k}"),
                    job_id: format!("t{t}-j{k}"),
                    ..eval(k)
                })
                .collect();
            pair.threads.push(std::thread::spawn(move || {
                let mut k = 0usize;
                while let Ok(n) = go_rx.recv() {
                    for _ in 0..n {
                        broker.enqueue(evals[k % 1024].clone());
                        k += 1;
                        // Every thread enqueues before it dequeues, so an evaluation is always
                        // there or on its way: a dequeue that gives up is a broken broker, not a
                        // round trip to count.
                        let (e, token) = broker
                            .dequeue(&types, Duration::from_secs(5), &|| false)
                            .expect("a dequeue gave up although every enqueue precedes one");
                        broker.ack(&e.id, token).expect("ack");
                    }
                    if done_tx.send(()).is_err() {
                        return;
                    }
                }
            }));
            pair.go.push(go_tx);
            pair.done.push(done_rx);
        }
        pair
    }

    /// Exactly `iters` successful round trips, split between the two threads; the time from
    /// handing them out until both threads are done.
    fn run(&self, iters: u64) -> Duration {
        let shares = [iters - iters / 2, iters / 2];
        let start = Instant::now();
        for (go, n) in self.go.iter().zip(shares) {
            go.send(n).expect("bench thread alive");
        }
        for done in &self.done {
            done.recv().expect("bench thread panicked");
        }
        start.elapsed()
    }

    fn stop(self) {
        drop(self.go);
        for t in self.threads {
            t.join().expect("bench thread panicked");
        }
    }
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
    // Placement changes the nodes' usage, so each iteration gets a fresh copy of the cluster;
    // the copy is made in the untimed setup and dropped after the timer stops.
    let base = cluster(5_000);
    g.bench_function("service: 10,000 allocs over 5,000 nodes", |bench| {
        bench.iter_batched_ref(
            || base.clone(),
            |nodes| {
                let p = bin_pack(
                    nodes,
                    &dcs,
                    Ask {
                        cpu: 500,
                        memory_mb: 256,
                    },
                    10_000,
                    &mut Picker::new(7),
                );
                black_box(p.nodes.len())
            },
            BatchSize::PerIteration,
        )
    });
    let big = cluster(10_000);
    g.bench_function("system: one per node over 10,000 nodes", |bench| {
        bench.iter_batched_ref(
            || big.clone(),
            |nodes| {
                let p = one_per_node(
                    nodes,
                    &dcs,
                    Ask {
                        cpu: 100,
                        memory_mb: 64,
                    },
                );
                assert_eq!(p.nodes.len(), 10_000, "every node takes one");
                black_box(p.nodes.len())
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The worker's source: the broker, plus a count of the cancel checks its dequeues make. A
/// dequeue checks `cancel` with the broker's lock held and keeps the lock until it waits on the
/// broker's condition variable, so once the count has moved and the bench has taken that lock
/// itself, the worker is parked inside `dequeue`.
struct Probe {
    broker: EvalBroker,
    checks: AtomicU64,
}

impl EvalSource for Probe {
    fn dequeue(
        &self,
        types: &[String],
        timeout: Duration,
        cancel: &dyn Fn() -> bool,
    ) -> Option<(Eval, u64)> {
        let counted = || {
            self.checks.fetch_add(1, Ordering::SeqCst);
            cancel()
        };
        self.broker.dequeue(types, timeout, &counted)
    }
    fn ack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        self.broker.ack(eval_id, token)
    }
    fn nack(&self, eval_id: &str, token: u64) -> Result<(), SchedError> {
        self.broker.nack(eval_id, token)
    }
    fn wake_all(&self) {
        self.broker.wake_all()
    }
}

impl Probe {
    /// Returns once the worker has checked `cancel` more than `after` times in all and is
    /// waiting in `dequeue`.
    fn wait_parked(&self, after: u64) {
        while self.checks.load(Ordering::SeqCst) <= after {
            std::hint::spin_loop();
        }
        // Taking the broker's lock waits until the worker has released it, which it does only by
        // waiting for an evaluation (nothing is ever enqueued here).
        black_box(self.broker.stats());
    }
}

fn pause_latency(c: &mut Criterion) {
    let probe = Arc::new(Probe {
        broker: EvalBroker::new(BrokerConfig::default()),
        checks: AtomicU64::new(0),
    });
    let types = vec!["service".to_string(), "_core".to_string()];
    let w = Worker::start(types, probe.clone(), Arc::new(|_e: &Eval| Ok(())));
    // Cancel checks seen before the worker last resumed (none at start).
    let mut resumed_after = 0;
    c.bench_function("pause → Paused (worker waiting to dequeue)", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                probe.wait_parked(resumed_after);
                let start = Instant::now();
                w.pause();
                while w.info().status != WorkerStatus::Paused {
                    std::hint::spin_loop();
                }
                total += start.elapsed();
                // A paused worker makes no checks: the next one after this is the next dequeue's.
                resumed_after = probe.checks.load(Ordering::SeqCst);
                w.resume();
            }
            total
        })
    });
    w.stop();
    w.join();
}

criterion_group!(benches, broker, placement, pause_latency);
criterion_main!(benches);
