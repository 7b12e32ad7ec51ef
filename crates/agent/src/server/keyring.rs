//! The gossip keyring of the whole pool (`/v1/agent/keyring/*`): the server that takes an
//! operator's request asks every alive server of the pool, itself included, over
//! `Keyring.Operation`, and gathers their replies as Serf gathers its key query's.

use std::time::Duration;

use caravan_agent_core::keyring::{KeyringAnswer, KeyringOp, MemberKeyReply, check_rotation};
use caravan_agent_core::member::{MemberStatus, ServerInfo, regions_in, servers_in};
use caravan_rpc::method as m;
use caravan_rpc::{Call, Refusal, Reply};

use super::ServerRole;
use crate::rpc::{decode, reply};

/// How long one member may take to answer.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(5);

impl ServerRole {
    /// The alive servers of every region in the pool.
    fn pool_servers(&self) -> Vec<ServerInfo> {
        let members = self.gossip.snapshot().members.to_vec();
        regions_in(&members)
            .iter()
            .flat_map(|region| servers_in(&members, region))
            .filter(|s| s.status == MemberStatus::Alive)
            .collect()
    }

    /// This member's part of an operation.
    async fn keyring_here(&self, op: &KeyringOp) -> MemberKeyReply {
        match &self.keyring {
            Some(keyring) => keyring.apply(&self.gossip, op).await,
            None => MemberKeyReply::of(
                op,
                Err(caravan_agent_core::keyring::KeyringError::NoEncryption {
                    list: matches!(op, KeyringOp::List),
                }),
            ),
        }
    }

    /// `Keyring.Operation`: a server of the pool asks this one to apply its part.
    pub async fn keyring_member(&self, call: &Call) -> Result<Reply, Refusal> {
        let op: KeyringOp = decode(&call.body)?;
        // Checked again here, whoever sent it.
        op.key().map_err(|e| Refusal::bad_request(e.to_string()))?;
        reply(&self.keyring_here(&op).await)
    }
}

impl ServerRole {
    /// Asks every server in `servers` (this one directly) to apply `op`.
    async fn ask_pool(
        &self,
        servers: &[ServerInfo],
        op: &KeyringOp,
    ) -> Vec<(String, Result<MemberKeyReply, String>)> {
        let me = self.config().member_name();
        let asks = servers.iter().map(|s| {
            let me = &me;
            async move {
                let reply = if &s.name == me {
                    Ok(self.keyring_here(op).await)
                } else {
                    self.rpc
                        .call(s.rpc, m::KEYRING_OPERATION, None, op, MEMBER_TIMEOUT)
                        .await
                };
                if let Err(e) = &reply {
                    tracing::warn!(target: "agent", member = %s.name, op = op.name(), error = %e, "keyring operation not answered");
                }
                (s.name.clone(), reply)
            }
        });
        futures::future::join_all(asks).await
    }
}

impl caravan_http::GossipKeyring for ServerRole {
    async fn keyring(&self, op: KeyringOp) -> Result<KeyringAnswer, String> {
        let servers = self.pool_servers();
        // A `use` or `remove` that some member could not follow would split the pool: ask
        // first, change nothing unless every member can.
        if matches!(op, KeyringOp::Use(_) | KeyringOp::Remove(_)) {
            let lists = self.ask_pool(&servers, &KeyringOp::List).await;
            check_rotation(&op, &lists)?;
        }
        let mut answer = KeyringAnswer::asking(servers.len());
        for (name, reply) in self.ask_pool(&servers, &op).await {
            answer.add(&name, reply);
        }
        answer.finish()
    }
}
