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

/// A server as its gossip tags ([`server_tags`]) describe it. Tags are claims anyone on the
/// gossip port could make; a cluster confirms a server over authenticated RPC before trusting
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Member name (`name.region`).
    pub name: String,
    /// Server ID (tag `id`).
    pub id: String,
    /// RPC address (tags `rpc_addr` and `port`).
    pub rpc: std::net::SocketAddr,
    /// Gossip status.
    pub status: MemberStatus,
    /// Its `bootstrap_expect` (tag `expect`; 0 when not set).
    pub expect: u32,
}

/// The servers of `region` among gossip members: members tagged `role=nomad` in that region
/// whose `id`, `rpc_addr` and `port` tags are present and well formed.
pub fn servers_in(members: &[Member], region: &str) -> Vec<ServerInfo> {
    members
        .iter()
        .filter_map(|m| {
            let tags = m.tags.as_ref()?;
            let tag = |k: &str| tags.get(k).map(String::as_str);
            if tag("role") != Some("nomad") || tag("region") != Some(region) {
                return None;
            }
            let ip: std::net::IpAddr = tag("rpc_addr")?.parse().ok()?;
            let port: u16 = tag("port")?.parse().ok()?;
            Some(ServerInfo {
                name: m.name.clone(),
                id: tag("id")?.to_string(),
                rpc: std::net::SocketAddr::new(ip, port),
                status: m.status,
                expect: tag("expect").and_then(|e| e.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The regions that have servers among gossip members, sorted (Nomad's `/v1/regions`).
pub fn regions_in(members: &[Member]) -> Vec<String> {
    let regions: std::collections::BTreeSet<String> = members
        .iter()
        .filter_map(|m| {
            let tags = m.tags.as_ref()?;
            (tags.get("role").map(String::as_str) == Some("nomad"))
                .then(|| tags.get("region").cloned())
                .flatten()
        })
        .collect();
    regions.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_from_tags() {
        let member = |name: &str, tags: &[(&str, &str)]| Member {
            name: name.into(),
            status: MemberStatus::Alive,
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Member::none()
        };
        let good = [
            ("role", "nomad"),
            ("region", "global"),
            ("id", "abc"),
            ("rpc_addr", "127.0.0.1"),
            ("port", "4647"),
            ("expect", "3"),
        ];
        let without = |key: &str| -> Vec<(&str, &str)> {
            good.iter().copied().filter(|(k, _)| *k != key).collect()
        };
        let with = |key: &'static str, value: &'static str| -> Vec<(&str, &str)> {
            let mut t = without(key);
            t.push((key, value));
            t
        };
        let check = |tags: Vec<(&str, &str)>, want: Option<(&str, u32)>| {
            let got = servers_in(&[member("s.global", &tags)], "global");
            let got = got.first().map(|s| (s.rpc.to_string(), s.expect));
            assert_eq!(got, want.map(|(a, e)| (a.to_string(), e)), "{tags:?}");
        };
        check(good.to_vec(), Some(("127.0.0.1:4647", 3)));
        check(without("expect"), Some(("127.0.0.1:4647", 0)));
        check(with("rpc_addr", "::1"), Some(("[::1]:4647", 3)));
        check(with("role", "node"), None);
        check(with("region", "eu"), None);
        check(without("id"), None);
        check(with("port", "99999"), None);
        check(with("rpc_addr", "host.example"), None);
        assert!(servers_in(&[Member::none()], "global").is_empty());
    }
}
