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

    /// Applies `op` to this member: the gossip layer first (which checks it), then the file and
    /// the RPC keys. A file that cannot be written fails the operation (the running keys have
    /// changed: the reply says so, and a retry writes it again).
    pub async fn apply(&self, gossip: &Gossip, op: &KeyringOp) -> MemberKeyReply {
        let _one = self.changing.lock().await;
        let list = match gossip.keyring(op.clone()).await {
            Ok(list) => list,
            Err(GossipError::Keyring(e)) => return MemberKeyReply::of(op, Err(e)),
            Err(e) => return failure(e.to_string()),
        };
        let changed = *self.list.lock() != list;
        if changed {
            // The running keys change whatever happens to the file.
            self.rpc.set(derived(&list));
            *self.list.lock() = list.clone();
            if let Some(Err(e)) = self.file.as_ref().map(|path| write_file(path, &list)) {
                tracing::error!(target: "agent", error = %e, "keyring changed but not saved");
                return failure(format!("keyring changed but not saved: {e}"));
            }
            tracing::info!(target: "agent", keys = list.keys().len(), "gossip keyring changed");
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
