//! Gossip members as Serf (and so Nomad) reports them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::AgentConfig;

/// A member's status, Serf's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    /// Not a member (a client-only agent's zero member).
    None,
    /// Reachable.
    Alive,
    /// Announced a leave that has not completed.
    Leaving,
    /// Left gracefully (or was force-left).
    Left,
    /// Stopped answering without leaving.
    Failed,
}

impl MemberStatus {
    /// The lower-case name on the wire (`alive`).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::None => "none",
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// Protocol version range a member speaks (Serf's `ProtocolMin/Max/Cur` and `DelegateMin/Max/Cur`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// Lowest, highest and current gossip protocol version.
    pub protocol: [u8; 3],
    /// Lowest, highest and current delegate (tag layer) version.
    pub delegate: [u8; 3],
}

/// The versions Nomad 1.x servers report; Caravan reports the same so tooling sees no surprise.
pub const NOMAD_VERSIONS: Versions = Versions {
    protocol: [1, 5, 2],
    delegate: [2, 5, 4],
};

/// One gossip member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `<node_name>.<region>`.
    pub name: String,
    /// Gossip IP; `None` for the zero member.
    pub addr: Option<IpAddr>,
    /// Gossip port.
    pub port: u16,
    /// Serf tags; `None` for the zero member.
    pub tags: Option<BTreeMap<String, String>>,
    /// Status.
    pub status: MemberStatus,
    /// Protocol versions.
    pub versions: Versions,
}

impl Member {
    /// The zero member a client-only agent reports in `/v1/agent/self`.
    pub fn none() -> Member {
        Member {
            name: String::new(),
            addr: None,
            port: 0,
            tags: None,
            status: MemberStatus::None,
            versions: Versions {
                protocol: [0; 3],
                delegate: [0; 3],
            },
        }
    }
}

/// Build facts that go into server tags.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// Version, e.g. `0.1.0`.
    pub version: String,
    /// Source revision.
    pub revision: String,
}

/// Nomad's server tags for this agent (`role`, `region`, `dc`, `build`, `revision`, `vsn`,
/// `raft_vsn`, `id`, `rpc_addr`, `port`, and `expect`/`bootstrap` when set).
pub fn server_tags(
    config: &AgentConfig,
    node_id: &str,
    build: &BuildInfo,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        tags.insert(k.to_string(), v);
    };
    put("role", "nomad".into());
    put("region", config.region.clone());
    put("dc", config.datacenter.clone());
    put("build", build.version.clone());
    put("revision", build.revision.clone());
    put("vsn", "1".into());
    put("raft_vsn", "3".into());
    put("id", node_id.to_string());
    put("rpc_addr", config.advertise.rpc.ip().to_string());
    put("port", config.advertise.rpc.port().to_string());
    if config.server.bootstrap_expect > 0 {
        put("expect", config.server.bootstrap_expect.to_string());
    }
    if config.server.bootstrap_expect == 1 {
        put("bootstrap", "1".into());
    }
    tags
}
