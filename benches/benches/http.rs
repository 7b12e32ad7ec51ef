//! Criterion benchmarks of the HTTP hot paths, through the whole application a request takes
//! ([`App::handle`]: body read, routing, query and token extraction, the handler, JSON, headers):
//! `/v1/agent/self`, `/v1/agent/health` with a bearer token and a query, and a 404. The figures
//! against a real socket and a bare hyper baseline come from `cargo xtask bench http` (wrk).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use caravan_agent_core::config::{AgentConfig, HostFacts, dev_defaults, tree_to_file};
use caravan_agent_core::member::{self, BuildInfo, Member, MemberStatus};
use caravan_http::dto::VersionDto;
use caravan_http::{AgentInfo, App, Stats};
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};

fn config() -> AgentConfig {
    let host = HostFacts {
        hostname: "bench".into(),
        num_cpus: 8,
        private_ip: "10.0.0.1".parse().expect("ip"),
    };
    let file = tree_to_file(&dev_defaults().tree).expect("dev defaults");
    AgentConfig::resolve(file, true, &host, vec![]).expect("config")
}

/// A server's facts as `/v1/agent/self` shows them.
struct Agent {
    config: AgentConfig,
    member: Member,
    stats: Stats,
}

impl AgentInfo for Agent {
    fn config(&self) -> &AgentConfig {
        &self.config
    }
    fn version(&self) -> VersionDto {
        VersionDto::release("0.1.0", "abc")
    }
    fn member(&self) -> Member {
        self.member.clone()
    }
    fn stats(&self) -> Stats {
        self.stats.clone()
    }
    fn server_health(&self) -> Result<(), String> {
        Ok(())
    }
    fn client_health(&self) -> Result<(), String> {
        Ok(())
    }
}

fn agent() -> Agent {
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
    let stats: Stats = [("runtime", 6), ("client", 3), ("nomad", 5)]
        .into_iter()
        .map(|(k, n)| {
            let m = (0..n)
                .map(|i| (format!("key{i}"), format!("value{i}")))
                .collect();
            (k.to_string(), m)
        })
        .collect();
    Agent {
        config,
        member,
        stats,
    }
}

fn whole_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = App::builder(Arc::new(agent())).build().expect("app");
    let cases = [
        ("GET /v1/agent/self", "/v1/agent/self"),
        ("GET /v1/agent/self?pretty", "/v1/agent/self?pretty"),
        (
            "GET /v1/agent/health + bearer token + query",
            "/v1/agent/health?type=client&type=server&pretty",
        ),
        ("GET 404 fall-through", "/v1/agent/self/extra"),
    ];
    for (name, uri) in cases {
        c.bench_function(&format!("app: {name}"), |b| {
            b.iter(|| {
                let req = http::Request::get(black_box(uri))
                    .header(
                        http::header::AUTHORIZATION,
                        "Bearer 7d8a4c2e-0000-4000-8000-000000000000",
                    )
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                runtime.block_on(async {
                    let resp = app.handle(req).await;
                    let body = resp.into_body().collect().await.expect("body");
                    black_box(body.to_bytes())
                })
            })
        });
    }
}

criterion_group!(benches, whole_path);
criterion_main!(benches);
