//! A server's gossip keyring on disk and in the RPC layer: loaded from
//! `<data_dir>/server/serf.keyring` (or seeded from `encrypt`, which then writes the file, as
//! Nomad does), and after every change made through the gossip pool written back (0600 in a
//! 0700 directory) and turned into the RPC server keys ([`ServerKeys`], derived by HKDF), so a
//! removed gossip key authenticates no RPC caller either. In dev mode (no `data_dir`) it lives
//! in memory only.

use std::path::{Path, PathBuf};

use caravan_agent_core::config::AgentConfig;
use caravan_agent_core::keyring::{GossipKey, KeyList, KeyringOp, MemberKeyReply};
use caravan_gossip::GossipError;
use caravan_gossip::udp::Gossip;
use caravan_rpc::ServerKeys;
use caravan_rpc::identity::server_key;

/// The keyring file under the data directory (Nomad's path).
pub const KEYRING_FILE: &str = "serf.keyring";

/// A server's keyring: the keys, where they are kept, and the RPC keys derived from them.
pub struct ServerKeyring {
    /// The keys, as the gossip layer holds them after the last change.
    list: parking_lot::Mutex<KeyList>,
    file: Option<PathBuf>,
    /// What the file holds as far as this process knows (written when it differs from `list`,
    /// so a write that failed is retried by the next operation).
    saved: parking_lot::Mutex<Option<KeyList>>,
    rpc: ServerKeys,
    /// One operation at a time: gossip, file and RPC keys change together.
    changing: tokio::sync::Mutex<()>,
}

impl ServerKeyring {
    /// The keyring of a server configured by `config`: `None` without a key (no encryption).
    /// A keyring file wins over `encrypt` (with a warning when both are set and differ).
    pub fn load(config: &AgentConfig) -> Result<Option<ServerKeyring>, String> {
        if !config.server.enabled {
            return Ok(None);
        }
        let file = config
            .data_dir
            .as_ref()
            .map(|d| Path::new(d).join("server").join(KEYRING_FILE));
        let configured = match &config.server.encrypt_key {
            Some(k) => Some(GossipKey::from_bytes(k).map_err(|e| format!("server.encrypt: {e}"))?),
            None => None,
        };
        let from_file = match &file {
            Some(path) => read_file(path)?,
            None => None,
        };
        let list = match (from_file, configured) {
            (Some(list), configured) => {
                if configured.is_some_and(|k| !list.keys().contains(&k)) {
                    tracing::warn!(target: "agent", "the keyring file exists and takes precedence over the `encrypt` key, which it does not hold");
                }
                list
            }
            (None, Some(key)) => {
                let list = KeyList::new(key);
                if let Some(path) = &file {
                    write_file(path, &list)?;
                }
                list
            }
            (None, None) => return Ok(None),
        };
        let rpc = ServerKeys::new(derived(&list));
        Ok(Some(ServerKeyring {
            saved: parking_lot::Mutex::new(file.as_ref().map(|_| list.clone())),
            list: parking_lot::Mutex::new(list),
            file,
            rpc,
            changing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The RPC server keys, shared with the RPC listener and dialer.
    pub fn rpc_keys(&self) -> &ServerKeys {
        &self.rpc
    }

    /// The primary key and the others, raw, for the gossip node.
    pub fn gossip_keys(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        let list = self.list.lock();
        let primary = list.primary().bytes().to_vec();
        let others = list.keys()[1..]
            .iter()
            .map(|k| k.bytes().to_vec())
            .collect();
        (primary, others)
    }

    /// Applies `op` to this member: the gossip layer first (which checks it), then the RPC keys
    /// and the file. A file that cannot be written fails the operation (the running keys have
    /// changed: the reply says so, and the next operation, a retry or a `list`, writes it).
    pub async fn apply(&self, gossip: &Gossip, op: &KeyringOp) -> MemberKeyReply {
        let _one = self.changing.lock().await;
        let list = match gossip.keyring(op.clone()).await {
            Ok(list) => list,
            Err(GossipError::Keyring(e)) => return MemberKeyReply::of(op, Err(e)),
            Err(e) => return failure(e.to_string()),
        };
        if *self.list.lock() != list {
            // The running keys change whatever happens to the file.
            self.rpc.set(derived(&list));
            *self.list.lock() = list.clone();
            tracing::info!(target: "agent", op = op.name(), keys = list.keys().len(), "gossip keyring changed");
        }
        if let Some(path) = &self.file {
            let mut saved = self.saved.lock();
            if saved.as_ref() != Some(&list) {
                if let Err(e) = write_file(path, &list) {
                    tracing::error!(target: "agent", error = %e, "gossip keyring not saved");
                    return failure(format!("keyring changed but not saved: {e}"));
                }
                *saved = Some(list.clone());
            }
        }
        MemberKeyReply::of(op, Ok(&list))
    }
}

/// The reply of a member that could not apply an operation for a reason of its own.
fn failure(message: String) -> MemberKeyReply {
    MemberKeyReply {
        result: false,
        message,
        keys: Vec::new(),
    }
}

/// The RPC server keys of a gossip keyring, primary first.
fn derived(list: &KeyList) -> Vec<caravan_rpc::identity::ServerKey> {
    list.keys().iter().map(|k| server_key(k.bytes())).collect()
}

/// The keyring file, when there is one (its mode set again to 0600: a restored file keeps none
/// of ours).
fn read_file(path: &Path) -> Result<Option<KeyList>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    crate::identity::private_file(path)?;
    KeyList::from_file(&path.display().to_string(), &text)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Writes the keyring file atomically, 0600 in a 0700 directory.
fn write_file(path: &Path, list: &KeyList) -> Result<(), String> {
    crate::identity::write_private_atomically(path, list.to_file().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_gossip::NodeConfig;

    const K1: &str = "rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=";
    const K2: &str = "HD5HAaR4KRF2sOBKR9SH1+eVxyGMzXPAdgQ5j9lHEyk=";

    #[tokio::test]
    async fn a_file_that_could_not_be_written_is_written_by_the_next_operation() {
        let dir = std::env::temp_dir().join(format!("caravan-keyring-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        // A plain file where the keyring's directory should be: no write can succeed (not even
        // as root, which permissions would not stop).
        let blocker = dir.join("server");
        std::fs::write(&blocker, "").unwrap();
        let k1 = GossipKey::from_base64(K1).unwrap();
        let list = KeyList::new(k1.clone());
        let keyring = ServerKeyring {
            saved: parking_lot::Mutex::new(Some(list.clone())),
            rpc: ServerKeys::new(derived(&list)),
            list: parking_lot::Mutex::new(list),
            file: Some(blocker.join(KEYRING_FILE)),
            changing: tokio::sync::Mutex::new(()),
        };
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut cfg = NodeConfig::new("a.global", addr, 1);
        cfg.key = Some(k1.bytes().to_vec());
        let gossip = Gossip::start(cfg, addr).await.unwrap();

        let install = KeyringOp::Install(K2.into());
        let reply = keyring.apply(&gossip, &install).await;
        assert!(!reply.result);
        assert!(
            reply.message.starts_with("keyring changed but not saved: "),
            "{reply:?}"
        );
        assert!(!reply.message.contains(K2));
        // The running keys changed all the same (gossip and RPC agree).
        assert_eq!(keyring.rpc_keys().primary(), Some(server_key(k1.bytes())));
        assert!(
            keyring
                .rpc_keys()
                .holds(&caravan_rpc::identity::key_id(&server_key(
                    GossipKey::from_base64(K2).unwrap().bytes()
                )))
        );
        // Once the directory can be made, a retry (nothing left to change) writes the file.
        std::fs::remove_file(&blocker).unwrap();
        let reply = keyring.apply(&gossip, &install).await;
        assert!(reply.result, "{reply:?}");
        let text = std::fs::read_to_string(blocker.join(KEYRING_FILE)).unwrap();
        assert_eq!(text, format!("[\"{K1}\",\"{K2}\"]"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
