//! The gossip per-packet hot path: a member receives a probe (decode, apply the sender's state,
//! encode the ack) with member tables of 10, 1,000 and 10,000.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use caravan_gossip::sim::{sim_addr, sim_name};
use caravan_gossip::{Node, NodeConfig, NodeId, NodeTimer};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn id(i: usize) -> NodeId {
    NodeId::new(sim_addr(i), &sim_name(i), 1)
}

fn node(i: usize, members: usize) -> Node {
    let mut cfg = NodeConfig::new(sim_name(i), sim_addr(i), members as u32);
    cfg.generation = 1;
    cfg.tags = None;
    match Node::new(cfg, i as u64, Duration::ZERO) {
        Ok(n) => n,
        Err(e) => panic!("node: {e}"),
    }
}

/// A probe from member 1 to member 0, as bytes on the wire.
fn probe_packet() -> (SocketAddr, Vec<u8>) {
    let mut b = node(1, 2);
    b.learn([id(0)], Duration::ZERO);
    let timers = b.drain().timers;
    for (_, t) in timers {
        if matches!(t, NodeTimer::Foca(foca::Timer::ProbeRandomMember(_))) {
            b.handle_timer(t, Duration::from_secs(1));
            if let Some((_, packet)) = b.drain().packets.into_iter().next() {
                return (sim_addr(1), packet);
            }
        }
    }
    panic!("no probe produced");
}

fn hot_path(c: &mut Criterion) {
    let (from, packet) = probe_packet();
    let mut group = c.benchmark_group("gossip: receive probe, send ack");
    for members in [10usize, 1_000, 10_000] {
        let mut a = node(0, members);
        a.learn((1..members).map(id), Duration::ZERO);
        let _ = a.drain();
        group.bench_with_input(
            BenchmarkId::from_parameter(members),
            &members,
            |bench, _| {
                bench.iter(|| {
                    let _ = a.handle_packet(from, black_box(&packet), Duration::from_secs(2));
                    black_box(a.drain())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
