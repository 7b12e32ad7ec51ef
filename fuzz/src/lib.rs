//! Fuzz targets for everything Caravan reads from outside, one function each. Each states its
//! invariant in its documentation; a violated one panics, so an engine reports it as a crash.
//!
//! The same functions run under two engines: `cargo fuzz` (libFuzzer, nightly: the binaries in
//! `fuzz_targets/`, built with the `libfuzzer` feature) and this crate's own stable engine
//! (`src/main.rs`: the committed corpus replayed, then random mutations of it for a time budget),
//! which is what `cargo xtask ci` runs. `cargo xtask fuzz [--secs N]` picks the engine.

pub mod cluster;
pub mod gossip;
pub mod http_api;
pub mod parsers;
pub mod raft;
pub mod rpc;
pub mod rpc_methods;

use std::sync::OnceLock;

pub use cluster::cluster;
pub use gossip::gossip;
pub use http_api::http_api;
pub use parsers::{acl_policy, config_hcl, config_json, duration};
pub use raft::raft;
pub use rpc::rpc;
pub use rpc_methods::rpc_methods;

/// The largest input the stable engine makes; libFuzzer is run with `-max_len` of the same.
pub const MAX_INPUT: usize = 64 * 1024;

/// One target: its name (the `fuzz_targets/` binary's and the corpus directory's) and function.
pub struct Target {
    /// The name.
    pub name: &'static str,
    /// The function; panics when its invariant does not hold.
    pub run: fn(&[u8]),
    /// Inputs built with the real encoders, for a corpus to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "config_hcl",
        run: config_hcl,
        seeds: seeds::config_hcl,
    },
    Target {
        name: "config_json",
        run: config_json,
        seeds: seeds::config_json,
    },
    Target {
        name: "acl_policy",
        run: acl_policy,
        seeds: seeds::acl_policy,
    },
    Target {
        name: "duration",
        run: duration,
        seeds: seeds::duration,
    },
    Target {
        name: "http_api",
        run: http_api,
        seeds: seeds::http_api,
    },
    Target {
        name: "gossip",
        run: gossip,
        seeds: gossip::seeds,
    },
    Target {
        name: "rpc",
        run: rpc,
        seeds: rpc::seeds,
    },
    Target {
        name: "rpc_methods",
        run: rpc_methods,
        seeds: rpc_methods::seeds,
    },
    Target {
        name: "raft",
        run: raft,
        seeds: raft::seeds,
    },
    Target {
        name: "cluster",
        run: cluster,
        seeds: cluster::seeds,
    },
];

/// Finds a target by name.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The runtime the async targets block on (built once per process).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("no tokio runtime: {e}"),
        }
    })
}

/// Seed inputs of the text and HTTP targets.
mod seeds {
    fn texts(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    pub fn config_hcl() -> Vec<Vec<u8>> {
        texts(&[
            "data_dir = \"/var/lib/caravan\"\nbind_addr = \"0.0.0.0\"\nregion = \"eu\"\n\
             server {\n  enabled = true\n  bootstrap_expect = 3\n  server_join {\n    \
             retry_join = [\"10.0.0.2:4648\"]\n    retry_interval = \"15s\"\n  }\n}\n\
             client {\n  enabled = true\n  meta { \"rack\" = \"r1\" }\n}\n",
            "acl { enabled = true }\nports { http = 4646 rpc = 4647 serf = 4648 }\n\
             addresses { http = \"127.0.0.1\" }\nadvertise { rpc = \"10.0.0.1:4647\" }\n",
            "log_level = \"DEBUG\"\nlimits {\n  http_max_conns_per_client = 10\n  \
             https_handshake_timeout = \"5s\"\n}\ntelemetry {\n  collection_interval = \"1s\"\n  \
             prometheus_metrics = true\n}\nserver {\n  heartbeat_grace = \"10s\"\n  \
             encrypt = \"AAAAAAAAAAAAAAAAAAAAAA==\"\n}\n",
            "tls {\n  http = true\n  rpc = true\n  ca_file = \"ca.pem\"\n}\n\
             consul {\n  address = \"127.0.0.1:8500\"\n}\nvault { enabled = false }\n",
        ])
    }

    pub fn config_json() -> Vec<Vec<u8>> {
        texts(&[
            r#"{"region": "eu", "server": {"enabled": true, "server_join": {"retry_join": ["10.0.0.2:4648"]}}}"#,
            r#"{"acl": {"enabled": true}, "client": {"enabled": true, "servers": ["127.0.0.1:4647"], "meta": {"a": "b"}}, "ports": {"http": 5646}}"#,
            r#"{"server": [{"enabled": true}, {"num_schedulers": 2}], "log_json": true, "leave_on_interrupt": true}"#,
        ])
    }

    pub fn acl_policy() -> Vec<Vec<u8>> {
        texts(&[
            "agent { policy = \"read\" }\nnode { policy = \"write\" }\nnamespace \"default\" {\n  \
             policy = \"read\"\n  capabilities = [\"read-job\", \"submit-job\"]\n}\n",
            "operator {\n  policy = \"deny\"\n}\nquota { policy = \"read\" }\n\
             host_volume \"v\" { policy = \"write\" }\nplugin { policy = \"list\" }\n",
            "namespace \"*\" {\n  policy = \"scale\"\n  variables {\n    path \"a\" { capabilities = [\"read\"] }\n  }\n}\n",
        ])
    }

    pub fn duration() -> Vec<Vec<u8>> {
        texts(&[
            "1h30m",
            "1.5h",
            "300ms",
            "-0",
            "0",
            "2us",
            "7µs",
            "1h2m3.000004005s",
            "+5s",
            "9223372036854775807ns",
        ])
    }

    /// `[method][flags][route][suffix \0 query \0 headers \0 body]` for many endpoints.
    pub fn http_api() -> Vec<Vec<u8>> {
        let route = |path: &str| {
            super::http_api::ROUTES
                .iter()
                .position(|r| *r == path)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(0)
        };
        let req = |method: u8, flags: u8, path: &str, parts: [&str; 4]| {
            let mut out = vec![method, flags, route(path)];
            out.extend_from_slice(parts.join("\0").as_bytes());
            out
        };
        const GET: u8 = 0;
        const PUT: u8 = 1;
        const POST: u8 = 2;
        const DELETE: u8 = 3;
        const HEAD: u8 = 4;
        vec![
            req(GET, 0, "/v1/agent/self", ["", "pretty", "", ""]),
            req(GET, 1, "/v1/agent/members", ["", "stale", "", ""]),
            req(
                PUT,
                1,
                "/v1/agent/join",
                ["", "address=127.0.0.1:4648", "", ""],
            ),
            req(
                PUT,
                1,
                "/v1/agent/force-leave",
                ["", "node=x&prune=true", "", ""],
            ),
            req(
                PUT,
                1,
                "/v1/agent/servers",
                ["", "address=127.0.0.1:4647", "", ""],
            ),
            req(
                POST,
                1,
                "/v1/agent/schedulers/config",
                [
                    "",
                    "",
                    "",
                    r#"{"num_schedulers":1,"enabled_schedulers":["service","_core"]}"#,
                ],
            ),
            req(GET, 2, "/v1/agent/health", ["", "type=server", "", ""]),
            req(
                GET,
                1,
                "/v1/agent/host",
                ["", "server_id=fuzz.global", "", ""],
            ),
            req(
                GET,
                1,
                "/v1/agent/monitor",
                ["", "log_level=debug&plain=true", "", ""],
            ),
            req(
                GET,
                1,
                "/v1/agent/monitor/export",
                ["", "on_disk=true", "", ""],
            ),
            req(
                GET,
                1,
                "/v1/agent/pprof/",
                ["goroutine", "seconds=1&debug=1", "", ""],
            ),
            req(GET, 1, "/v1/jobs", ["", "prefix=w&index=1&wait=1s", "", ""]),
            req(
                PUT,
                1,
                "/v1/jobs",
                [
                    "",
                    "",
                    "Content-Type: application/json",
                    r#"{"Job":{"ID":"web","Name":"web","Type":"service","Datacenters":["dc1"],"TaskGroups":[{"Name":"g","Count":1,"Tasks":[{"Name":"t","Driver":"raw_exec","Resources":{"CPU":100,"MemoryMB":64}}]}]}}"#,
                ],
            ),
            req(GET, 1, "/v1/job/", ["web/allocations", "", "", ""]),
            req(DELETE, 1, "/v1/job/", ["web", "purge=true", "", ""]),
            req(GET, 1, "/v1/evaluation/", ["e1", "", "", ""]),
            req(GET, 1, "/v1/node/", ["n1/allocations", "", "", ""]),
            req(GET, 1, "/v1/operator/snapshot", ["", "", "", ""]),
            req(
                PUT,
                1,
                "/v1/operator/snapshot",
                ["", "", "", "\u{2}\0\0\0\0\0\0\0"],
            ),
            req(GET, 1, "/v1/operator/raft/configuration", ["", "", "", ""]),
            req(GET, 0, "/v1/metrics", ["", "format=prometheus", "", ""]),
            req(GET, 16, "/v1/status/leader", ["", "region=global", "", ""]),
            req(
                PUT,
                8,
                "/v1/acl/bootstrap",
                [
                    "",
                    "",
                    "",
                    r#"{"BootstrapSecret":"aaaaaaaa-0000-4000-8000-00000000000f"}"#,
                ],
            ),
            req(
                PUT,
                9,
                "/v1/acl/policy/",
                [
                    "readers",
                    "",
                    "",
                    r#"{"Name":"readers","Description":"d","Rules":"node { policy = \"read\" }"}"#,
                ],
            ),
            req(
                PUT,
                9,
                "/v1/acl/token",
                [
                    "",
                    "",
                    "",
                    r#"{"Name":"n","Type":"client","Policies":["readers"]}"#,
                ],
            ),
            req(GET, 10, "/v1/acl/token/self", ["", "", "", ""]),
            req(GET, 9, "/v1/acl/tokens", ["", "", "", ""]),
            req(GET, 11, "/v1/acl/policies", ["", "", "", ""]),
            req(GET, 0, "/v1/agent/keyring/", ["list", "", "", ""]),
            req(GET, 1, "/v1/nodes/heartbeats", ["", "pretty", "", ""]),
            req(GET, 11, "/v1/nodes/heartbeats", ["", "", "", ""]),
            req(
                GET,
                1,
                "/v1/operator/autopilot/health",
                ["", "stale=true", "", ""],
            ),
            req(GET, 10, "/v1/operator/autopilot/health", ["", "", "", ""]),
            req(GET, 0, "/ui/", ["", "", "", ""]),
            req(GET, 16, "/ui/", ["app.js", "", "", ""]),
            req(HEAD, 0, "/ui/", ["app.css", "", "", ""]),
            req(GET, 0, "/ui/", ["../Cargo.toml", "", "", ""]),
            req(POST, 0, "/ui/", ["index.html", "", "", "x"]),
            req(GET, 0, "/ui", ["", "", "", ""]),
            req(GET, 0, "/", ["", "", "", ""]),
        ]
    }
}

/// Codecs for the round-trip checks' own tests.
#[cfg(test)]
pub(crate) mod test_codecs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// A value whose encoding says one more than it holds: it decodes, but decoding what it
    /// encodes to gives another value (the bug a round trip exists to catch).
    #[derive(Debug, PartialEq)]
    pub struct Lossy(pub u8);

    impl Serialize for Lossy {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u8(self.0.wrapping_add(1))
        }
    }

    impl<'de> Deserialize<'de> for Lossy {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lossy, D::Error> {
            u8::deserialize(d).map(Lossy)
        }
    }

    /// Whether `f` panics (its message printed as usual).
    pub fn panics(f: impl FnOnce()) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
    }
}
