//! The scheduler's whole path in the replicated state machine, as every server runs it for each
//! evaluation (`caravan_cluster::store::Store::process`: the capacity snapshot, the job's running
//! allocations, bin-packing, recording the placements), on a cluster of 5,000 nodes already
//! holding 50,000 allocations; and, in the same run, the same placement by `bin_pack` alone on
//! a prebuilt snapshot, the baseline the ratio is taken against. A client's read of its own
//! node's allocations (what its blocking query answers) is timed too.

use std::hint::black_box;

use caravan_agent_core::jobs::{Job, JobType, Node, Task, TaskGroup};
use caravan_agent_core::query::StateQuery;
use caravan_cluster::store::Store;
use caravan_sched::placement::{Ask, Nodes, Picker, bin_pack};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const NODES: usize = 5_000;
const EXISTING_JOBS: usize = 5_000;
const PER_JOB: u32 = 10;

fn node(i: usize) -> Node {
    Node {
        id: format!("node-{i:05}"),
        name: format!("node-{i}"),
        datacenter: "dc1".into(),
        node_class: String::new(),
        meta: Default::default(),
        cpu: 1_000_000,
        memory_mb: 1_000_000,
        status: "ready".into(),
        down_since: None,
        secret_id: format!("secret-{i}"),
        attributes: Default::default(),
        create_index: 0,
        modify_index: 0,
    }
}

fn job(id: &str, ty: JobType, count: u32) -> Job {
    Job {
        id: id.into(),
        name: id.into(),
        job_type: ty,
        priority: 50,
        datacenters: vec!["dc1".into()],
        groups: vec![TaskGroup {
            name: "g".into(),
            count,
            tasks: vec![Task {
                name: "t".into(),
                driver: "exec".into(),
                cpu: 10,
                memory_mb: 10,
            }],
        }],
        stop: false,
        status: String::new(),
        create_index: 0,
        modify_index: 0,
        version: 0,
    }
}

/// A store with the cluster and its existing allocations; returns it and the next log index.
fn loaded() -> (Store, u64) {
    let s = Store::default();
    let mut index = 1;
    for i in 0..NODES {
        s.reseed(index, index);
        s.upsert_node(index, node(i));
        index += 1;
    }
    for j in 0..EXISTING_JOBS {
        s.reseed(index, index);
        let w = s.register(index, job(&format!("old-{j}"), JobType::Service, PER_JOB));
        index += 1;
        s.reseed(index, index);
        s.process(index, &w.eval.id, 86_400, 0).expect("placed");
        index += 1;
    }
    (s, index)
}

fn store(c: &mut Criterion) {
    let (s, mut index) = loaded();
    let mut g = c.benchmark_group("store process (5,000 nodes, 50,000 allocations)");
    g.throughput(Throughput::Elements(u64::from(PER_JOB)));
    let mut n = 0u64;
    g.bench_function("register + place a 10-allocation job", |b| {
        b.iter(|| {
            n += 1;
            s.reseed(index, index);
            let w = s.register(index, job(&format!("new-{n}"), JobType::Service, PER_JOB));
            index += 1;
            s.reseed(index, index);
            black_box(s.process(index, &w.eval.id, 86_400, 0).expect("placed"));
            index += 1;
        })
    });
    // The baseline: the same placement by bin_pack alone, its snapshot prebuilt (untimed).
    let mut picker = Picker::new(7);
    g.bench_function("bin_pack alone (baseline)", |b| {
        b.iter_batched(
            || {
                let mut nodes = Nodes::default();
                for i in 0..NODES {
                    nodes.push(&format!("node-{i:05}"), "dc1", 1_000_000, 1_000_000);
                }
                nodes
            },
            |mut nodes| {
                let ask = Ask {
                    cpu: 10,
                    memory_mb: 10,
                };
                black_box(bin_pack(
                    &mut nodes,
                    &["dc1".to_string()],
                    ask,
                    PER_JOB as usize,
                    &mut picker,
                ))
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("client allocation read (5,000 nodes, 50,000 allocations)");
    g.throughput(Throughput::Elements(1));
    let q = StateQuery::NodeAllocations("node-02500".into());
    g.bench_function("one node's allocations", |b| {
        b.iter(|| black_box(s.query(&q)))
    });
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
