//! Criterion benchmarks of the HTTP hot paths: encoding `/v1/agent/self`, and routing plus token
//! and query extraction.

use std::hint::black_box;

use caravan_agent_core::config::{AgentConfig, HostFacts, dev_defaults, tree_to_file};
use caravan_agent_core::member::{self, BuildInfo, Member, MemberStatus};
use caravan_http::dto::{ConfigDto, MemberDto, SelfResponse, VersionDto};
use caravan_http::request::{Query, extract_token};
use caravan_http::response::encode_json;
use caravan_http::router::Route;
use criterion::{Criterion, criterion_group, criterion_main};

fn config() -> AgentConfig {
    let host = HostFacts {
        hostname: "bench".into(),
        num_cpus: 8,
        private_ip: "10.0.0.1".parse().expect("ip"),
    };
    let file = tree_to_file(&dev_defaults().tree).expect("dev defaults");
    AgentConfig::resolve(file, true, &host, vec![]).expect("config")
}

fn encode_self(c: &mut Criterion) {
    let config = config();
    let build = BuildInfo {
        version: "0.1.0".into(),
        revision: "abc".into(),
    };
    let member = Member {
        name: config.member_name(),
        addr: Some(config.advertise.serf.ip()),
        port: config.advertise.serf.port(),
        tags: Some(member::server_tags(
            &config,
            "7d8a4c2e-0000-4000-8000-000000000000",
            &build,
        )),
        status: MemberStatus::Alive,
        versions: member::NOMAD_VERSIONS,
    };
    let version = VersionDto::release("0.1.0", "abc");
    let stats: caravan_http::api::Stats = [("runtime", 6), ("client", 3), ("nomad", 5)]
        .into_iter()
        .map(|(k, n)| {
            let m = (0..n)
                .map(|i| (format!("key{i}"), format!("value{i}")))
                .collect();
            (k.to_string(), m)
        })
        .collect();
    for (name, pretty) in [("compact", false), ("pretty", true)] {
        c.bench_function(&format!("self: build DTO + {name} JSON"), |b| {
            b.iter(|| {
                let body = SelfResponse {
                    config: ConfigDto::new(black_box(&config), version.clone()),
                    member: MemberDto::from(black_box(&member)),
                    stats: stats.clone(),
                };
                black_box(encode_json(&body, pretty))
            })
        });
    }
}

fn route_and_token(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        "Bearer 7d8a4c2e-0000-4000-8000-000000000000"
            .parse()
            .expect("header"),
    );
    c.bench_function("route + bearer token + query", |b| {
        b.iter(|| {
            let route = Route::of(black_box("/v1/agent/health"));
            let token = extract_token(black_box(&headers));
            let query = Query::parse(black_box(Some("type=client&type=server&pretty")));
            black_box((route, token, query.pretty()))
        })
    });
    c.bench_function("route: 404 fall-through", |b| {
        b.iter(|| black_box(Route::of(black_box("/v1/agent/self/extra"))))
    });
}

criterion_group!(benches, encode_self, route_and_token);
criterion_main!(benches);
