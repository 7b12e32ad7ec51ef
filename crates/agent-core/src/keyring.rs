//! The gossip keyring, as Serf and memberlist keep it: the keys a member accepts, the first of
//! them (the primary) the one it seals with; the operations of `/v1/agent/keyring/*` and of
//! `caravan operator gossip keyring` with memberlist's rules and texts; the `serf.keyring` file
//! format (a JSON array of base64 keys, primary first); and how one answer is gathered from every
//! member's reply, with Serf's counts and error text.
//!
//! One type ([`KeyList`]) holds the rules, so the HTTP door, the agent RPC and the gossip layer
//! cannot disagree on what a valid key or a valid change is.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The key lengths AES accepts: AES-128, -192 and -256.
pub const KEY_SIZES: [usize; 3] = [16, 24, 32];

/// The most keys a keyring holds (a rotation needs two; a few more leave room for mistakes, and
/// every datagram may be tried against each of them).
pub const MAX_KEYS: usize = 16;

/// What is wrong with a keyring operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringError {
    /// The key is not base64 (the decoder's text).
    NotBase64(String),
    /// The key is not 16, 24 or 32 bytes long.
    BadSize(usize),
    /// `use` of a key that was never installed.
    NotInstalled,
    /// `remove` of the primary key.
    RemovePrimary,
    /// An install beyond [`MAX_KEYS`].
    Full,
    /// The member runs without encryption: it has no keyring (`list` is true for the list
    /// operation, which Serf words differently).
    NoEncryption {
        /// Whether the operation was `list`.
        list: bool,
    },
    /// A keyring file could not be read.
    File(String),
}

impl std::fmt::Display for KeyringError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyringError::NotBase64(e) => write!(f, "Invalid key: {e}"),
            KeyringError::BadSize(_) => write!(f, "key size must be 16, 24 or 32 bytes"),
            KeyringError::NotInstalled => write!(f, "Requested key is not in the keyring"),
            KeyringError::RemovePrimary => write!(f, "Removing the primary key is not allowed"),
            KeyringError::Full => write!(f, "the keyring holds {MAX_KEYS} keys already"),
            KeyringError::NoEncryption { list: true } => {
                write!(f, "Keyring is empty (encryption not enabled)")
            }
            KeyringError::NoEncryption { list: false } => {
                write!(f, "No keyring to modify (encryption not enabled)")
            }
            KeyringError::File(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for KeyringError {}

/// A gossip key: 16, 24 or 32 bytes, checked when made. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(Vec<u8>);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKey({} bytes)", self.0.len())
    }
}

impl GossipKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<GossipKey, KeyringError> {
        if KEY_SIZES.contains(&bytes.len()) {
            Ok(GossipKey(bytes.to_vec()))
        } else {
            Err(KeyringError::BadSize(bytes.len()))
        }
    }

    /// A key from its standard base64 text (as `encrypt` and the keyring API take it; like
    /// Go's `StdEncoding`, no whitespace). A decoding error names the offset, never a byte of
    /// the text.
    pub fn from_base64(text: &str) -> Result<GossipKey, KeyringError> {
        use base64::DecodeError as E;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| {
                let at = match e {
                    E::InvalidByte(at, _) | E::InvalidLastSymbol(at, _) => at,
                    E::InvalidLength(len) => len,
                    E::InvalidPadding => text.len(),
                };
                KeyringError::NotBase64(format!("illegal base64 data at input byte {at}"))
            })?;
        GossipKey::from_bytes(&bytes)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The standard base64 text.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }
}

/// One keyring operation. Its `Debug` names the operation, never the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringOp {
    /// Which keys the member holds.
    List,
    /// Accept this key too.
    Install(String),
    /// Seal with this (installed) key from now on.
    Use(String),
    /// Stop accepting this key (not the primary).
    Remove(String),
}

impl std::fmt::Debug for KeyringOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl KeyringOp {
    /// The operation's name (`list`, `install`, `use`, `remove`).
    pub fn name(&self) -> &'static str {
        match self {
            KeyringOp::List => "list",
            KeyringOp::Install(_) => "install",
            KeyringOp::Use(_) => "use",
            KeyringOp::Remove(_) => "remove",
        }
    }

    /// The operation named by the last part of `/v1/agent/keyring/<op>`, with the request's key
    /// text (ignored by `list`); `None` for another name.
    pub fn from_name(name: &str, key: String) -> Option<KeyringOp> {
        Some(match name {
            "list" => KeyringOp::List,
            "install" => KeyringOp::Install(key),
            "use" => KeyringOp::Use(key),
            "remove" => KeyringOp::Remove(key),
            _ => return None,
        })
    }

    /// The key the operation names, checked (`None` for `list`).
    pub fn key(&self) -> Result<Option<GossipKey>, KeyringError> {
        match self {
            KeyringOp::List => Ok(None),
            KeyringOp::Install(k) | KeyringOp::Use(k) | KeyringOp::Remove(k) => {
                GossipKey::from_base64(k).map(Some)
            }
        }
    }
}

/// The keys one member accepts, primary first; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    keys: Vec<GossipKey>,
}

impl KeyList {
    /// A keyring holding only `primary`.
    pub fn new(primary: GossipKey) -> KeyList {
        KeyList {
            keys: vec![primary],
        }
    }

    /// The keys, primary first.
    pub fn keys(&self) -> &[GossipKey] {
        &self.keys
    }

    /// The key packets are sealed with.
    pub fn primary(&self) -> &GossipKey {
        &self.keys[0]
    }

    /// Applies `op` (memberlist's rules: installing a held key or removing an absent one changes
    /// nothing); `Ok(true)` when the keys changed.
    pub fn apply(&mut self, op: &KeyringOp) -> Result<bool, KeyringError> {
        let Some(key) = op.key()? else {
            return Ok(false);
        };
        let at = self.keys.iter().position(|k| *k == key);
        match (op, at) {
            (KeyringOp::Install(_), Some(_)) | (KeyringOp::Remove(_), None) => Ok(false),
            (KeyringOp::Install(_), None) if self.keys.len() >= MAX_KEYS => Err(KeyringError::Full),
            (KeyringOp::Install(_), None) => {
                self.keys.push(key);
                Ok(true)
            }
            (KeyringOp::Use(_), None) => Err(KeyringError::NotInstalled),
            (KeyringOp::Use(_), Some(i)) => {
                self.keys.swap(0, i);
                Ok(i != 0)
            }
            (KeyringOp::Remove(_), Some(0)) => Err(KeyringError::RemovePrimary),
            (KeyringOp::Remove(_), Some(i)) => {
                self.keys.remove(i);
                Ok(true)
            }
            (KeyringOp::List, _) => Ok(false),
        }
    }

    /// The `serf.keyring` file's text: a JSON array of base64 keys, primary first.
    pub fn to_file(&self) -> String {
        let texts: Vec<String> = self.keys.iter().map(GossipKey::to_base64).collect();
        serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())
    }

    /// Reads a `serf.keyring` file's text (`origin` names it in errors, never a key).
    pub fn from_file(origin: &str, text: &str) -> Result<KeyList, KeyringError> {
        let bad = |what: String| KeyringError::File(format!("{origin}: {what}"));
        let texts: Vec<String> =
            serde_json::from_str(text).map_err(|e| bad(format!("not a JSON list of keys: {e}")))?;
        if texts.is_empty() {
            return Err(bad("no keys".into()));
        }
        if texts.len() > MAX_KEYS {
            return Err(bad(format!("more than {MAX_KEYS} keys")));
        }
        let mut keys = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            let key = GossipKey::from_base64(t).map_err(|e| bad(format!("key {i}: {e}")))?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(KeyList { keys })
    }
}

/// One member's answer to a keyring operation (Serf's `nodeKeyResponse`). Its `Debug` counts
/// the keys rather than showing them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberKeyReply {
    /// Whether the operation succeeded on the member.
    pub result: bool,
    /// Why not (or a note).
    pub message: String,
    /// The keys the member holds, base64 (for `list`).
    pub keys: Vec<String>,
}

impl std::fmt::Debug for MemberKeyReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberKeyReply")
            .field("result", &self.result)
            .field("message", &self.message)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl MemberKeyReply {
    /// The reply for `outcome` of `op` on a member holding `keys` after it.
    pub fn of(op: &KeyringOp, outcome: Result<&KeyList, KeyringError>) -> MemberKeyReply {
        match outcome {
            Ok(list) => MemberKeyReply {
                result: true,
                message: String::new(),
                keys: match op {
                    KeyringOp::List => list.keys().iter().map(GossipKey::to_base64).collect(),
                    _ => Vec::new(),
                },
            },
            Err(e) => MemberKeyReply {
                result: false,
                message: e.to_string(),
                keys: Vec::new(),
            },
        }
    }
}

/// The pool's answer, gathered from every member's reply (Serf's `KeyResponse`). Its `Debug`
/// counts the keys rather than showing them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyringAnswer {
    /// Messages by member name (failures, and notes from successes).
    pub messages: BTreeMap<String, String>,
    /// For `list`: each key and how many members hold it.
    pub keys: BTreeMap<String, usize>,
    /// Members asked.
    pub num_nodes: usize,
    /// Members that answered.
    pub num_resp: usize,
    /// Members that answered with a failure.
    pub num_err: usize,
}

impl std::fmt::Debug for KeyringAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringAnswer")
            .field("messages", &self.messages)
            .field("keys", &self.keys.len())
            .field("num_nodes", &self.num_nodes)
            .field("num_resp", &self.num_resp)
            .field("num_err", &self.num_err)
            .finish()
    }
}

impl KeyringAnswer {
    /// An answer about to gather the replies of `members` members.
    pub fn asking(members: usize) -> KeyringAnswer {
        KeyringAnswer {
            num_nodes: members,
            ..KeyringAnswer::default()
        }
    }

    /// Counts `member`'s reply; a member that could not be reached answers `Err` with why.
    pub fn add(&mut self, member: &str, reply: Result<MemberKeyReply, String>) {
        match reply {
            Ok(r) => {
                self.num_resp = self.num_resp.saturating_add(1);
                if !r.result {
                    self.num_err = self.num_err.saturating_add(1);
                }
                if !r.message.is_empty() {
                    self.messages.insert(member.to_string(), r.message);
                }
                for k in r.keys.into_iter().take(MAX_KEYS) {
                    let n = self.keys.entry(k).or_default();
                    *n = n.saturating_add(1);
                }
            }
            Err(why) => {
                self.messages.insert(member.to_string(), why);
            }
        }
    }

    /// The answer, or Serf's error when some member failed (`N/M nodes reported failure`) or
    /// did not answer (`N/M nodes reported success`).
    pub fn finish(self) -> Result<KeyringAnswer, String> {
        if self.num_err != 0 {
            return Err(format!(
                "{}/{} nodes reported failure",
                self.num_err, self.num_nodes
            ));
        }
        if self.num_resp != self.num_nodes {
            return Err(format!(
                "{}/{} nodes reported success",
                self.num_resp.saturating_sub(self.num_err),
                self.num_nodes
            ));
        }
        Ok(self)
    }
}

/// Whether `op` may go to the pool, given every member's `list` reply: a `use` only when every
/// member holds the key, a `remove` only when no member seals with it, and neither while some
/// member does not answer. Serf sends them regardless; a member left behind would then seal
/// with a key the others no longer open (or the reverse) and drop out of the pool, and with the
/// RPC keys derived from the gossip keys, out of Raft too. `install` and `list` always may.
pub fn check_rotation(
    op: &KeyringOp,
    lists: &[(String, Result<MemberKeyReply, String>)],
) -> Result<(), String> {
    let (verb, key) = match op {
        KeyringOp::Use(k) => ("use", k),
        KeyringOp::Remove(k) => ("remove", k),
        KeyringOp::List | KeyringOp::Install(_) => return Ok(()),
    };
    let key = GossipKey::from_base64(key).map_err(|e| e.to_string())?;
    let n = lists.len();
    let is_key = |text: &String| GossipKey::from_base64(text).is_ok_and(|k| k == key);
    let mut silent = 0usize;
    let mut blocking = 0usize;
    for (_, reply) in lists {
        match reply {
            Err(_) => silent += 1,
            // A member without a keyring fails the operation itself, with Serf's text.
            Ok(r) if !r.result => {}
            Ok(r) => {
                let blocks = match op {
                    KeyringOp::Use(_) => !r.keys.iter().any(is_key),
                    _ => r.keys.first().is_some_and(is_key),
                };
                blocking += usize::from(blocks);
            }
        }
    }
    if silent > 0 {
        return Err(format!(
            "cannot {verb} the key: {silent}/{n} nodes did not answer"
        ));
    }
    match (op, blocking) {
        (_, 0) => Ok(()),
        (KeyringOp::Use(_), b) => Err(format!(
            "cannot use the key: {b}/{n} nodes do not hold it (install it first)"
        )),
        (_, b) => Err(format!(
            "cannot remove the key: it is the primary key on {b}/{n} nodes (use another first)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        GossipKey::from_bytes(&[b; 32]).unwrap().to_base64()
    }

    /// Applies `ops` in order to a keyring holding `key(1)`; each step's expected outcome, then
    /// the keys (as their first byte) at the end.
    fn check(ops: &[(KeyringOp, Result<bool, &str>)], expected: &[u8]) {
        let mut list = KeyList::new(GossipKey::from_bytes(&[1; 32]).unwrap());
        for (op, want) in ops {
            let got = list.apply(op).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_string), "{op:?}");
        }
        let firsts: Vec<u8> = list.keys().iter().map(|k| k.bytes()[0]).collect();
        assert_eq!(firsts, expected);
    }

    #[test]
    fn operations_follow_memberlists_rules() {
        use KeyringOp::*;
        check(&[(List, Ok(false))], &[1]);
        check(&[(Install(key(2)), Ok(true))], &[1, 2]);
        check(
            &[(Install(key(2)), Ok(true)), (Install(key(2)), Ok(false))],
            &[1, 2],
        );
        check(
            &[(Install(key(2)), Ok(true)), (Use(key(2)), Ok(true))],
            &[2, 1],
        );
        check(&[(Use(key(1)), Ok(false))], &[1]);
        check(
            &[(Use(key(3)), Err("Requested key is not in the keyring"))],
            &[1],
        );
        check(
            &[(
                Remove(key(1)),
                Err("Removing the primary key is not allowed"),
            )],
            &[1],
        );
        check(&[(Remove(key(9)), Ok(false))], &[1]);
        check(
            &[
                (Install(key(2)), Ok(true)),
                (Use(key(2)), Ok(true)),
                (Remove(key(1)), Ok(true)),
            ],
            &[2],
        );
        check(
            &[(
                Install("AAAA".into()),
                Err("key size must be 16, 24 or 32 bytes"),
            )],
            &[1],
        );
        check(
            &[(
                Install("not base64!".into()),
                Err("Invalid key: illegal base64 data at input byte 3"),
            )],
            &[1],
        );
    }

    #[test]
    fn the_keyring_is_bounded() {
        let mut list = KeyList::new(GossipKey::from_bytes(&[0; 16]).unwrap());
        for b in 1..MAX_KEYS as u8 {
            assert_eq!(list.apply(&KeyringOp::Install(key(b))), Ok(true));
        }
        assert_eq!(
            list.apply(&KeyringOp::Install(key(200))),
            Err(KeyringError::Full)
        );
    }

    #[test]
    fn the_file_round_trips_and_names_no_key_in_errors() {
        let mut list = KeyList::new(GossipKey::from_bytes(&[1; 32]).unwrap());
        list.apply(&KeyringOp::Install(key(2))).unwrap();
        let text = list.to_file();
        assert_eq!(KeyList::from_file("f", &text).unwrap(), list);
        let secret = key(3);
        let bad = format!("[\"{secret}\", \"{}\"]", "AAAA");
        let e = KeyList::from_file("/d/serf.keyring", &bad)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/d/serf.keyring: key 1: key size must be 16, 24 or 32 bytes"
        );
        assert!(!e.contains(&secret));
        for (text, want) in [("[]", "f: no keys"), ("{}", "f: not a JSON list of keys")] {
            let e = KeyList::from_file("f", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn answers_count_as_serf_does() {
        let ok = |keys: &[&str]| {
            Ok(MemberKeyReply {
                result: true,
                message: String::new(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
            })
        };
        let mut a = KeyringAnswer::asking(3);
        a.add("s1", ok(&["k1", "k2"]));
        a.add("s2", ok(&["k1"]));
        a.add("s3", ok(&["k1"]));
        let a = a.finish().unwrap();
        assert_eq!(a.keys, BTreeMap::from([("k1".into(), 3), ("k2".into(), 1)]));
        assert!(a.messages.is_empty());

        let mut b = KeyringAnswer::asking(3);
        b.add("s1", ok(&[]));
        b.add(
            "s2",
            Ok(MemberKeyReply {
                result: false,
                message: "Requested key is not in the keyring".into(),
                keys: vec![],
            }),
        );
        b.add("s3", Err("timed out".into()));
        assert_eq!(
            b.clone().finish().unwrap_err(),
            "1/3 nodes reported failure"
        );
        assert_eq!(b.messages.len(), 2);

        let mut c = KeyringAnswer::asking(2);
        c.add("s1", ok(&[]));
        c.add("s2", Err("connection refused".into()));
        assert_eq!(c.finish().unwrap_err(), "1/2 nodes reported success");
    }

    #[test]
    fn a_rotation_step_waits_for_every_member() {
        let holding = |keys: &[u8]| {
            Ok(MemberKeyReply {
                result: true,
                message: String::new(),
                keys: keys.iter().map(|b| key(*b)).collect(),
            })
        };
        let check_ = |op: KeyringOp,
                      replies: Vec<Result<MemberKeyReply, String>>,
                      want: Result<(), &str>| {
            let lists: Vec<_> = replies
                .into_iter()
                .enumerate()
                .map(|(i, r)| (format!("s{i}"), r))
                .collect();
            assert_eq!(
                check_rotation(&op, &lists),
                want.map_err(str::to_string),
                "{op:?}"
            );
        };
        use KeyringOp::*;
        check_(
            Use(key(2)),
            vec![holding(&[1, 2]), holding(&[1, 2])],
            Ok(()),
        );
        check_(
            Use(key(2)),
            vec![holding(&[1, 2]), holding(&[1])],
            Err("cannot use the key: 1/2 nodes do not hold it (install it first)"),
        );
        check_(
            Use(key(2)),
            vec![holding(&[1, 2]), Err("timed out".into())],
            Err("cannot use the key: 1/2 nodes did not answer"),
        );
        check_(
            Remove(key(1)),
            vec![holding(&[2, 1]), holding(&[2, 1])],
            Ok(()),
        );
        check_(
            Remove(key(1)),
            vec![holding(&[2, 1]), holding(&[1, 2]), holding(&[1])],
            Err("cannot remove the key: it is the primary key on 2/3 nodes (use another first)"),
        );
        check_(Install(key(3)), vec![Err("timed out".into())], Ok(()));
        check_(List, vec![Err("timed out".into())], Ok(()));
        // A member without encryption: the operation itself fails there, with Serf's text.
        let plain = Ok(MemberKeyReply::of(
            &List,
            Err(KeyringError::NoEncryption { list: true }),
        ));
        check_(Use(key(2)), vec![holding(&[1, 2]), plain], Ok(()));
    }

    #[test]
    fn keys_never_show_in_debug_or_errors() {
        let k = GossipKey::from_bytes(&[7; 16]).unwrap();
        assert_eq!(format!("{k:?}"), "GossipKey(16 bytes)");
        let text = k.to_base64();
        assert_eq!(format!("{:?}", KeyringOp::Use(text.clone())), "use");
        let reply = MemberKeyReply::of(&KeyringOp::List, Ok(&KeyList::new(k)));
        assert!(!format!("{reply:?}").contains(&text));
        let mut answer = KeyringAnswer::asking(1);
        answer.add("a", Ok(reply));
        assert!(!format!("{answer:?}").contains(&text));
        // A malformed key: the offset, not the bytes.
        let e = GossipKey::from_base64("secretZZ$").unwrap_err().to_string();
        assert_eq!(e, "Invalid key: illegal base64 data at input byte 8");
        let e = GossipKey::from_base64(&format!(" {text}"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "Invalid key: illegal base64 data at input byte 0");
    }
}
