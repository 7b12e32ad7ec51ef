/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
//! Caravan fork: the case for the fork's changes (`patches/`), stock foca
//! 2.0.0 (the dev-dependency `foca-stock`) against this fork, in one run.
//! `Foca::apply_many` of 100 updates about known members (an incarnation
//! bump each, as a refutation wave or an anti-entropy list brings), into a
//! member list of 1,000 and of 10,000:
//! - `known`: without broadcasting them (what a member-list exchange does):
//!   stock foca finds each member by scanning the list, the fork through its
//!   address index;
//! - `broadcast`: broadcasting them, as updates learned from gossip are,
//!   into a backlog that already holds one update per member (a pool that
//!   has just formed): stock foca also scans the backlog for the entry each
//!   new update replaces, the fork's keyed backlog looks it up.
//!
//! Run: `cd vendor/foca && cargo bench --features std,postcard-codec`.

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Id(u32);

/// The bench for one foca crate (`foca`, the fork, or `foca_stock`), as a
/// module with its `Identity` impl.
macro_rules! bench_crate {
    ($name:ident, $krate:ident, $label:literal) => {
        mod $name {
            use super::*;
            use $krate::{
                AccumulatingRuntime, Config, Foca, Identity, Member, PostcardCodec, State,
            };

            impl Identity for Id {
                type Addr = u32;

                fn renew(&self) -> Option<Self> {
                    None
                }

                fn addr(&self) -> u32 {
                    self.0
                }

                fn win_addr_conflict(&self, _adversary: &Self) -> bool {
                    false
                }
            }

            pub fn bench(c: &mut Criterion) {
                for broadcast in [false, true] {
                    let what = if broadcast { "broadcast" } else { "known" };
                    let mut group = c.benchmark_group(format!(
                        "foca apply_many of 100 members, {what}: {}",
                        $label
                    ));
                    for members in [1_000u32, 10_000] {
                        let config =
                            Config::new_lan(NonZeroU32::new(members).unwrap_or(NonZeroU32::MIN));
                        let mut foca =
                            Foca::new(Id(0), config, StdRng::seed_from_u64(1), PostcardCodec);
                        let mut rt = AccumulatingRuntime::new();
                        let all = (1..members).map(|i| Member::new(Id(i), 0, State::Alive));
                        if let Err(e) = foca.apply_many(all, broadcast, &mut rt) {
                            panic!("seeding {members} members: {e}");
                        }
                        while rt.to_notify().is_some() {}
                        let mut incarnation = 0u16;
                        group.bench_with_input(
                            BenchmarkId::from_parameter(members),
                            &members,
                            |bench, &members| {
                                bench.iter(|| {
                                    incarnation = incarnation.wrapping_add(1);
                                    // 100 members spread over the whole list.
                                    let updates = (0..100u32).map(|k| {
                                        let id = 1 + k * (members - 1) / 100;
                                        Member::new(Id(id), incarnation, State::Alive)
                                    });
                                    let result = foca.apply_many(updates, broadcast, &mut rt);
                                    while rt.to_notify().is_some() {}
                                    black_box(result)
                                })
                            },
                        );
                    }
                    group.finish();
                }
            }
        }
    };
}

bench_crate!(stock, foca_stock, "stock foca 2.0.0");
bench_crate!(fork, foca, "Caravan's fork");

criterion_group!(benches, stock::bench, fork::bench);
criterion_main!(benches);
