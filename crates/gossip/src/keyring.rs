//! The keys a member seals and opens packets with: the primary seals, every key held opens, so a
//! pool can rotate its key without a partition (install everywhere, then use, then remove). The
//! rules are [`caravan_agent_core::keyring::KeyList`]'s; this adds a cipher per key.

use caravan_agent_core::keyring::{GossipKey, KeyList, KeyringError, KeyringOp};

use crate::GossipError;
use crate::wire::Cipher;

/// A [`KeyList`] with a cipher for each key.
pub struct Keyring {
    list: KeyList,
    /// One per key of `list`, in the same order.
    ciphers: Vec<Cipher>,
}

impl Keyring {
    /// A keyring holding `list`'s keys.
    pub fn new(list: KeyList) -> Result<Keyring, GossipError> {
        let ciphers = list
            .keys()
            .iter()
            .map(|k| Cipher::new(k.bytes()))
            .collect::<Result<_, _>>()?;
        Ok(Keyring { list, ciphers })
    }

    /// A keyring from a primary key and further accepted keys (raw bytes).
    pub fn from_keys(primary: &[u8], others: &[Vec<u8>]) -> Result<Keyring, GossipError> {
        let bad = |e: KeyringError| match e {
            KeyringError::BadSize(n) => GossipError::BadKey(n),
            other => GossipError::Encode(other.to_string()),
        };
        let mut list = KeyList::new(GossipKey::from_bytes(primary).map_err(bad)?);
        for k in others {
            let key = GossipKey::from_bytes(k).map_err(bad)?;
            list.apply(&KeyringOp::Install(key.to_base64()))
                .map_err(bad)?;
        }
        Keyring::new(list)
    }

    /// The keys, primary first.
    pub fn list(&self) -> &KeyList {
        &self.list
    }

    /// Seals a packet with the primary key.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, GossipError> {
        self.ciphers.first().ok_or(GossipError::Crypto)?.seal(plain)
    }

    /// Opens a packet sealed with any key held (the primary tried first).
    pub fn open(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.ciphers.iter().find_map(|c| c.open(packet))
    }

    /// Applies a keyring operation; `Ok(true)` when the keys changed.
    pub fn apply(&mut self, op: &KeyringOp) -> Result<bool, KeyringError> {
        let mut next = self.list.clone();
        if !next.apply(op)? {
            return Ok(false);
        }
        // Keys in `next` passed GossipKey's size check, so every cipher builds.
        let ciphers = next
            .keys()
            .iter()
            .map(|k| Cipher::new(k.bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| KeyringError::BadSize(0))?;
        self.list = next;
        self.ciphers = ciphers;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: u8) -> String {
        GossipKey::from_bytes(&[b; 32]).unwrap().to_base64()
    }

    #[test]
    fn a_rotation_keeps_old_and_new_members_talking() {
        let mut a = Keyring::from_keys(&[1; 32], &[]).unwrap();
        let mut b = Keyring::from_keys(&[1; 32], &[]).unwrap();
        // Install on both, switch `a` first: `b` (still sealing with key 1) and `a` (sealing
        // with key 2) open each other's packets.
        a.apply(&KeyringOp::Install(b64(2))).unwrap();
        b.apply(&KeyringOp::Install(b64(2))).unwrap();
        a.apply(&KeyringOp::Use(b64(2))).unwrap();
        assert_eq!(b.open(&a.seal(b"x").unwrap()).as_deref(), Some(&b"x"[..]));
        assert_eq!(a.open(&b.seal(b"y").unwrap()).as_deref(), Some(&b"y"[..]));
        // Once key 1 is removed from `a`, `a` no longer opens what key 1 sealed.
        b.apply(&KeyringOp::Use(b64(2))).unwrap();
        let old = Keyring::from_keys(&[1; 32], &[]).unwrap();
        a.apply(&KeyringOp::Remove(b64(1))).unwrap();
        assert!(a.open(&old.seal(b"z").unwrap()).is_none());
        assert!(b.open(&old.seal(b"z").unwrap()).is_some());
    }

    #[test]
    fn a_refused_operation_changes_nothing() {
        let mut a = Keyring::from_keys(&[1; 32], &[vec![2; 16]]).unwrap();
        assert_eq!(
            a.apply(&KeyringOp::Remove(b64(1))),
            Err(KeyringError::RemovePrimary)
        );
        assert_eq!(a.list().keys().len(), 2);
        assert!(Keyring::from_keys(&[1; 5], &[]).is_err());
    }
}
