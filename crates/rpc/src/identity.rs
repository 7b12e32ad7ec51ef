//! Who a peer is: how a server decides a caller's [`Role`] ([`Trust`]), and how a caller proves
//! its own ([`Dial`]).
//!
//! | transport | proof | role |
//! |---|---|---|
//! | mutual TLS | certificate for `server.<region>.nomad` | [`Role::Server`] |
//! | mutual TLS | certificate for `client.<region>.nomad` | [`Role::Client`] |
//! | mutual TLS | any other certificate of the CA | [`Role::Anonymous`] |
//! | Noise `NNpsk0` | the server key (HKDF of the gossip key) | [`Role::Server`] |
//! | Noise `NN` | none (encrypted, unauthenticated) | [`Role::Anonymous`] |
//!
//! A server with neither TLS nor a key that runs without ACLs may be told to trust everyone
//! ([`Trust::open`]): every caller is then a server, as every Nomad server is without TLS. That is
//! for clusters that chose to run unprotected; the agent warns about it.

use std::net::SocketAddr;
use std::sync::Arc;

use hkdf::Hkdf;
use sha2::Sha256;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ServerConfig};

/// What a caller may do, by what it proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Proved nothing: public and user-acting methods only.
    Anonymous,
    /// A client agent: also client methods.
    Client,
    /// A server of this region: every method.
    Server,
}

/// How a peer proved its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A TLS certificate; the name that gave the role, if any.
    Certificate(Option<String>),
    /// The Noise handshake with the server key.
    ServerKey,
    /// An unauthenticated Noise handshake.
    Nothing,
    /// The server trusts everyone ([`Trust::open`]).
    OpenCluster,
}

/// The other side of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// What it may do.
    pub role: Role,
    /// How it proved it.
    pub proof: Proof,
}

/// A 32-byte key that proves a server.
pub type ServerKey = [u8; 32];

/// The server key derived from a gossip `encrypt` key (16, 24 or 32 bytes): HKDF-SHA256 with a
/// fixed salt and purpose, so the gossip key itself never serves as an RPC key.
pub fn server_key(gossip_key: &[u8]) -> ServerKey {
    let hk = Hkdf::<Sha256>::new(Some(b"caravan-rpc"), gossip_key);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32), so expand cannot fail.
    let _ = hk.expand(b"server key v1", &mut out);
    out
}

/// A short public name of a server key, sent in the clear so a server holding several keys
/// (during a key rotation) knows which one a caller uses. It reveals nothing about the key.
pub fn key_id(key: &ServerKey) -> [u8; 8] {
    let hk = Hkdf::<Sha256>::new(Some(b"caravan-rpc"), key);
    let mut out = [0u8; 8];
    let _ = hk.expand(b"key id v1", &mut out);
    out
}

/// The server keys a process holds, shared by its listener ([`Trust`]) and its dialer
/// ([`Dial`]) and changed live while the gossip key rotates: new connections dial with the first
/// key (the primary), the listener accepts any key held, and a key no longer held authenticates
/// nothing new; the connections it authenticated end once their calls in flight are done (the
/// listener's side) or are no longer reused (the dialer's side). Cheap to clone; clones share.
#[derive(Clone)]
pub struct ServerKeys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    keys: parking_lot::RwLock<Vec<ServerKey>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKeys({} keys)", self.inner.keys.read().len())
    }
}

impl ServerKeys {
    /// Keys held, primary first.
    pub fn new(keys: Vec<ServerKey>) -> ServerKeys {
        ServerKeys {
            inner: Arc::new(KeysInner {
                keys: parking_lot::RwLock::new(keys),
                changed: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    /// Replaces the keys (primary first); connections made with a key no longer held end.
    pub fn set(&self, keys: Vec<ServerKey>) {
        *self.inner.keys.write() = keys;
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The key new connections dial with.
    pub fn primary(&self) -> Option<ServerKey> {
        self.inner.keys.read().first().copied()
    }

    /// Whether the key named `id` is held.
    pub fn holds(&self, id: &[u8; 8]) -> bool {
        self.by_id(id).is_some()
    }

    pub(crate) fn by_id(&self, id: &[u8; 8]) -> Option<ServerKey> {
        self.inner
            .keys
            .read()
            .iter()
            .find(|k| &key_id(k) == id)
            .copied()
    }

    /// A receiver that changes whenever the keys do.
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }
}

/// TLS material for the server side: the configuration (which must verify client
/// certificates against the CA) and the region whose role names count.
#[derive(Clone)]
pub struct ServerTls {
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
}

/// How a server decides who its callers are.
#[derive(Clone)]
pub struct Trust {
    pub(crate) region: String,
    pub(crate) keys: ServerKeys,
    pub(crate) tls: Option<ServerTls>,
    pub(crate) open: bool,
}

impl Trust {
    /// Servers prove themselves with `key` (Noise); everyone else is anonymous.
    pub fn with_server_key(region: &str, key: ServerKey) -> Trust {
        Trust::with_server_keys(region, ServerKeys::new(vec![key]))
    }

    /// Servers prove themselves with any of `keys`, which may change while the listener runs.
    pub fn with_server_keys(region: &str, keys: ServerKeys) -> Trust {
        Trust {
            region: region.to_string(),
            keys,
            tls: None,
            open: false,
        }
    }

    /// Mutual TLS only: roles come from certificate names.
    pub fn with_tls(region: &str, config: Arc<ServerConfig>) -> Trust {
        Trust {
            region: region.to_string(),
            keys: ServerKeys::new(Vec::new()),
            tls: Some(ServerTls { config }),
            open: false,
        }
    }

    /// Nobody can prove anything: every caller is anonymous.
    pub fn anonymous(region: &str) -> Trust {
        Trust {
            region: region.to_string(),
            keys: ServerKeys::new(Vec::new()),
            tls: None,
            open: false,
        }
    }

    /// Every caller is treated as a server (clusters without TLS, key or ACLs, as Nomad allows).
    pub fn open(region: &str) -> Trust {
        Trust {
            open: true,
            ..Trust::anonymous(region)
        }
    }

    /// The role a verified certificate chain's end entity gives.
    pub(crate) fn role_of_certificate(&self, cert: Option<&CertificateDer<'_>>) -> Peer0 {
        let Some(cert) = cert else {
            return (Role::Anonymous, Proof::Certificate(None));
        };
        for (role, kind) in [(Role::Server, "server"), (Role::Client, "client")] {
            let name = format!("{kind}.{}.nomad", self.region);
            if certificate_names(cert, &name) {
                return (role, Proof::Certificate(Some(name)));
            }
        }
        (Role::Anonymous, Proof::Certificate(None))
    }
}

pub(crate) type Peer0 = (Role, Proof);

/// Whether `cert` names `name` exactly among its subject alternative DNS names. A wildcard
/// (`*.global.nomad`) does not give a role: roles are granted by exact names only.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = tokio_rustls::rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        return false;
    };
    let valid = tokio_rustls::rustls::client::verify_server_name(&parsed, &server_name).is_ok();
    let exact = webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.valid_dns_names().any(|n| n.eq_ignore_ascii_case(name)));
    valid && exact
}

/// How a caller connects and what it proves.
#[derive(Clone, Default)]
pub struct Dial {
    pub(crate) keys: Option<ServerKeys>,
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Dial {
    /// Proves nothing (Noise `NN`: encrypted, anonymous).
    pub fn anonymous() -> Dial {
        Dial::default()
    }

    /// Proves a server with `key` (Noise `NNpsk0`); the other side must hold it too.
    pub fn with_server_key(key: ServerKey) -> Dial {
        Dial::with_server_keys(ServerKeys::new(vec![key]))
    }

    /// Proves a server with the primary of `keys` at the time of each connect.
    pub fn with_server_keys(keys: ServerKeys) -> Dial {
        Dial {
            keys: Some(keys),
            tls: None,
        }
    }

    /// Mutual TLS: `config` carries our certificate; the server's must be valid for `name`
    /// (`server.<region>.nomad`).
    pub fn with_tls(config: Arc<ClientConfig>, name: ServerName<'static>) -> Dial {
        Dial {
            keys: None,
            tls: Some((config, name)),
        }
    }

    /// The role a server we dialed has proved to us (what our side grants its calls back).
    pub(crate) fn dialed_role(&self) -> Peer0 {
        match (&self.tls, &self.keys) {
            (Some((_, name)), _) => (Role::Server, Proof::Certificate(Some(name.to_str().into()))),
            (None, Some(_)) => (Role::Server, Proof::ServerKey),
            (None, None) => (Role::Anonymous, Proof::Nothing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys_are_derived_not_copied() {
        let a = server_key(&[7u8; 32]);
        assert_ne!(&a[..], &[7u8; 32][..]);
        assert_eq!(a, server_key(&[7u8; 32]));
        assert_ne!(a, server_key(&[8u8; 32]));
        assert_ne!(key_id(&a), key_id(&server_key(&[8u8; 32])));
    }
}
