//! Token resolution on a server with 10,000 tokens (target: ≤ 1 µs per request), against the
//! constant-time scan over every token it replaced, in the same run; and the cost of keeping
//! the index in step with one ACL write, against rebuilding it.

use std::hint::black_box;

use caravan_agent_core::acl::{AclIndex, AclTable, AclWrite, Token, TokenType};
use criterion::{Criterion, criterion_group, criterion_main};

const TOKENS: usize = 10_000;

fn secret(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

const KEY: [u8; 32] = [5; 32];

fn accessor(i: usize) -> String {
    format!("{i:08x}-1111-4000-8000-{i:012x}")
}

fn policy(rules: &str) -> AclWrite {
    AclWrite::PolicyUpsert {
        name: "p".into(),
        description: String::new(),
        rules: rules.into(),
    }
}

fn table() -> AclTable {
    let mut table = AclTable::new(KEY);
    let rules = "agent {\n  policy = \"read\"\n}\nnode {\n  policy = \"write\"\n}\n";
    table.apply(1, &policy(rules)).expect("policy");
    for i in 0..TOKENS {
        let token = Token {
            accessor_id: accessor(i),
            secret_id: secret(i),
            name: format!("t{i}"),
            token_type: if i % 2 == 0 {
                TokenType::Client
            } else {
                TokenType::Management
            },
            policies: if i % 2 == 0 {
                vec!["p".into()]
            } else {
                Vec::new()
            },
            global: false,
            create_time: String::new(),
            create_index: 0,
            modify_index: 0,
        };
        let at = i as u64 + 2;
        table
            .apply(at, &AclWrite::TokenCreate { token })
            .expect("token");
    }
    table
}

fn bench_resolve(c: &mut Criterion) {
    let table = table();
    let state = table.state().clone();
    let index = AclIndex::build(&state, KEY);
    let wanted = secret(TOKENS / 2);
    let unknown = secret(TOKENS + 7);
    c.bench_function("resolve token: index, 10,000 tokens, known", |b| {
        b.iter(|| index.resolve(black_box(Some(&wanted))))
    });
    c.bench_function("resolve token: index, 10,000 tokens, unknown", |b| {
        b.iter(|| index.resolve(black_box(Some(&unknown))))
    });
    c.bench_function("resolve token: constant-time scan, 10,000 tokens", |b| {
        b.iter(|| {
            let secret = black_box(&wanted);
            let mut found = None;
            for t in state.tokens.values() {
                if caravan_agent_core::acl::secrets_equal(&t.secret_id, secret) {
                    found = Some(t);
                }
            }
            found.map(|t| state.acl_for(t))
        })
    });
    c.bench_function(
        "ACL write: policy change kept in step, 10,000 tokens",
        |b| {
            let mut table = table.clone();
            let mut at = state.index;
            b.iter(|| {
                at += 1;
                table.apply(at, black_box(&policy("agent { policy = \"write\" }")))
            })
        },
    );
    c.bench_function("ACL write: rebuild the whole index, 10,000 tokens", |b| {
        b.iter(|| AclIndex::build(black_box(&state), KEY))
    });
}

criterion_group!(benches, bench_resolve);
criterion_main!(benches);
