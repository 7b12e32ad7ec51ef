//! What a node knows about its members beyond foca's own view: the member table, tags and intents
//! from custom broadcasts, and the Lamport clock. foca's broadcast handler and the
//! [`crate::Node`] share it behind one lock, so the handler can check an item against the member
//! it claims to be about.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::GossipError;
use crate::identity::NodeId;
use crate::intern::Interner;
use crate::table::MemberTable;
use crate::wire::{Broadcast, BroadcastKey, IntentMsg, Origin, TagsMsg};

/// How far ahead of the local Lamport clock a peer's intent may be; one further ahead is ignored.
///
/// The clock only moves when an intent is issued (a leave, a force-leave, a refutation), by one
/// each time, and every intent is broadcast to the whole pool, so a node is behind the pool by the
/// number of intents it missed: a few, or a few thousand after a long partition. 2^20 is far more
/// than any real pool issues, while a forger needs 2^44 accepted intents, each received in turn,
/// to walk a clock to `u64::MAX`: refutations (`ltime + 1`) always stay possible.
pub const MAX_LTIME_AHEAD: u64 = 1 << 20;

/// How far ahead of what a member last said (in its current generation) its tags version may
/// be; a version further ahead is ignored. A member bumps its version once per tag change, so a
/// node can only miss as many versions as the member made changes, far below 2^20; a forger
/// cannot set a version the real member could never overtake.
pub const MAX_TAGS_VERSION_AHEAD: u64 = 1 << 20;

/// Tag messages kept while the member they are about is not in the table yet (its alive update
/// usually rides in the same packet and reaches the table just after). Beyond this, such tags
/// are dropped; [`crate::Node`] pulls a member's tags when it comes up without them.
pub const MAX_PENDING_TAGS: usize = 64;

/// Intents about members the table does not list (a leave that overtook the join, a refutation
/// from a pruned member) kept beyond one intent per listed member. Beyond this, intents about
/// unknown names are dropped; the node's own intents are always kept. Orphans are swept on every
/// reap.
pub const MAX_ORPHAN_INTENTS: usize = 256;

/// Tags and intents by member name, the member table, the Lamport clock, and new items the node
/// has yet to apply.
#[derive(Debug, Default)]
pub struct Knowledge {
    /// Serf's view of every member, by name.
    pub table: MemberTable,
    /// Latest tags per member.
    pub tags: TagsTable,
    /// Bumped whenever `tags` changes (so drivers republish at once).
    pub tags_version: u64,
    /// With [`Knowledge::track_tags`], the members whose tags changed since the node last took
    /// them (at most every listed or just-removed member).
    pub tags_changed: Option<std::collections::HashSet<String>>,
    /// Latest intent per member.
    pub intents: HashMap<String, IntentMsg>,
    /// Lamport clock: at least every intent time accepted; never wraps.
    pub ltime: u64,
    /// Intents learned since the node last looked.
    pub fresh_intents: Vec<IntentMsg>,
    /// Tags about members not in the table yet, with the address they came from when pushed
    /// directly (at most [`MAX_PENDING_TAGS`]).
    pub pending_tags: Vec<(Option<SocketAddr>, TagsMsg)>,
    /// Tags and intents ignored as forged, stale-generation or too far ahead.
    pub rejected: u64,
    /// The table's removal count ([`MemberTable::removals`]) when the tags were last swept: tags
    /// are only ever taken for listed members, so until a member leaves the table there are
    /// none to sweep.
    swept_at: Option<u64>,
}

impl Knowledge {
    /// Knowledge that lists only `me`, alive.
    pub fn new(me: NodeId, now: std::time::Duration) -> Knowledge {
        let mut k = Knowledge::default();
        k.table.up(me, now);
        k
    }

    /// The Lamport time of a new local intent: one past the clock, saturating.
    pub fn next_ltime(&self) -> u64 {
        self.ltime.saturating_add(1)
    }

    /// Moves the clock towards a member's clock (from its member list), by at most
    /// [`MAX_LTIME_AHEAD`] at a time: a node that joins late, or missed intents, catches up
    /// with the pool in a few exchanges, and a forger gains nothing an intent would not give.
    pub fn witness_ltime(&mut self, theirs: u64) {
        let cap = self.ltime.saturating_add(MAX_LTIME_AHEAD);
        self.ltime = self.ltime.max(theirs.min(cap));
    }

    /// Whether `msg` may replace what is known about its member: the member is listed, the
    /// message carries the generation of its current identity, and its version is newer than,
    /// but not far ahead of, the last one that generation said.
    fn tags_acceptable(&self, msg: &TagsMsg) -> bool {
        let Some(entry) = self.table.get(&msg.name) else {
            return false;
        };
        if entry.id.generation() != msg.generation {
            return false;
        }
        match self.tags.get(&msg.name) {
            Some(known) if known.generation == msg.generation => {
                msg.version > known.version && msg.version - known.version <= MAX_TAGS_VERSION_AHEAD
            }
            _ => msg.version <= MAX_TAGS_VERSION_AHEAD,
        }
    }

    /// [`Knowledge::learn_tags`] for a shared message ([`intern_tags`]): nothing is copied when
    /// it is accepted.
    pub fn learn_shared_tags(&mut self, msg: Arc<TagsMsg>) -> bool {
        // (Not acceptable when the member is not listed: learn_tags holds those.)
        if !self.tags_acceptable(&msg) {
            return self.learn_tags(TagsMsg::clone(&msg));
        }
        self.note_tags(&msg.name);
        self.tags.insert_shared(msg);
        self.tags_version += 1;
        true
    }

    /// Records tags about a listed member; `true` when they were accepted as news. Tags about a
    /// member not listed yet are kept aside (see [`Knowledge::resolve_pending_tags`]).
    pub fn learn_tags(&mut self, msg: TagsMsg) -> bool {
        if self.table.get(&msg.name).is_none() {
            self.hold_tags(None, msg);
            return false;
        }
        if !self.tags_acceptable(&msg) {
            if !self.tags.get(&msg.name).is_some_and(|k| *k == msg) {
                self.rejected += 1;
            }
            return false;
        }
        self.note_tags(&msg.name);
        self.tags.insert(msg);
        self.tags_version += 1;
        true
    }

    /// Keeps tags about a member not listed yet, pushed from `from` (or relayed when `None`).
    pub fn hold_tags(&mut self, from: Option<SocketAddr>, msg: TagsMsg) {
        if self.pending_tags.len() < MAX_PENDING_TAGS {
            self.pending_tags.push((from, msg));
        } else {
            self.rejected += 1;
        }
    }

    /// Learns the held tags whose member is now listed (from its own address when pushed);
    /// drops the rest.
    pub fn resolve_pending_tags(&mut self) {
        for (from, msg) in std::mem::take(&mut self.pending_tags) {
            let Some(entry) = self.table.get(&msg.name) else {
                continue;
            };
            if from.is_some_and(|from| from != crate::node::canonical(entry.id.addr())) {
                self.rejected += 1;
                continue;
            }
            self.learn_tags(msg);
        }
    }

    /// Records an intent; `true` when it is newer than what was known about that member. An
    /// intent from a peer more than [`MAX_LTIME_AHEAD`] ahead of the clock is ignored, and so is
    /// one about an unlisted member once [`MAX_ORPHAN_INTENTS`] such are kept.
    pub fn learn_intent(&mut self, msg: IntentMsg, local: bool) -> bool {
        if !local && msg.ltime > self.ltime.saturating_add(MAX_LTIME_AHEAD) {
            self.rejected += 1;
            return false;
        }
        self.ltime = self.ltime.max(msg.ltime);
        if let Some(known) = self.intents.get(&msg.name) {
            if known.ltime >= msg.ltime {
                return false;
            }
        } else if !local
            && self.table.get(&msg.name).is_none()
            && self.intents.len() >= self.table.len() + MAX_ORPHAN_INTENTS
        {
            self.rejected += 1;
            return false;
        }
        self.intents.insert(msg.name.clone(), msg.clone());
        self.fresh_intents.push(msg);
        true
    }

    /// Forgets the tags of a member removed from the table (pruned, renamed). Its intent stays
    /// until the next [`Knowledge::sweep`], so late copies of the intent that removed it are
    /// still recognised as old news while they are in flight.
    pub fn forget(&mut self, name: &str) {
        if self.tags.remove(name) {
            self.tags_version += 1;
            self.note_tags(name);
        }
    }

    /// Starts (or stops) recording which members' tags change ([`Knowledge::tags_changed`]).
    pub fn track_tags(&mut self, on: bool) {
        self.tags_changed = on.then(Default::default);
    }

    fn note_tags(&mut self, name: &str) {
        if let Some(changed) = &mut self.tags_changed {
            changed.insert(name.to_string());
        }
    }

    /// Drops tags and intents about members the table no longer lists (run on every reap, so
    /// what a reaped or pruned member left behind goes within one reap interval).
    ///
    /// The tags are looked at only when the table has lost a member since they were last swept
    /// (one look-up per member otherwise, on every reap of every node: 8 % of a 10,000-member
    /// pool's profile).
    pub fn sweep(&mut self) {
        let table = &self.table;
        let removals = table.removals();
        if self.swept_at != Some(removals) {
            let before = self.tags.len();
            let changed = &mut self.tags_changed;
            self.tags.retain(|name| {
                let keep = table.get(name).is_some();
                if !keep && let Some(changed) = changed {
                    changed.insert(name.to_string());
                }
                keep
            });
            if self.tags.len() != before {
                self.tags_version += 1;
            }
            self.swept_at = Some(removals);
        }
        self.intents.retain(|name, _| table.get(name).is_some());
    }
}

/// Every member's latest tags a node knows, by name: one pointer per member into the process's
/// set of tag messages ([`intern_tags`]), so the N nodes of a simulated pool that all know a
/// member's tags share one copy instead of holding N (a copy with a small tag map costs about
/// 800 bytes; N² of them stopped a 3,000-member simulation at 10 GB).
#[derive(Default)]
pub struct TagsTable {
    entries: HashTable<Arc<TagsMsg>>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for TagsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl TagsTable {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The tags known for member `name`.
    pub fn get(&self, name: &str) -> Option<&TagsMsg> {
        self.entries
            .find(self.hash(name), |t| t.name == name)
            .map(|t| &**t)
    }

    /// Whether tags are known for member `name`.
    #[cfg(test)]
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Records `msg` as its member's tags, replacing what was known.
    pub fn insert(&mut self, msg: TagsMsg) {
        self.insert_shared(intern_tags(msg));
    }

    /// Records a shared message ([`intern_tags`]) as its member's tags.
    pub fn insert_shared(&mut self, shared: Arc<TagsMsg>) {
        let hash = self.hash(&shared.name);
        let hasher = &self.hasher;
        match self.entries.entry(
            hash,
            |t| t.name == shared.name,
            |t| hasher.hash_one(t.name.as_str()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut known) => *known.get_mut() = shared,
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(shared);
            }
        }
    }

    /// Forgets member `name`'s tags; whether any were known.
    pub fn remove(&mut self, name: &str) -> bool {
        self.take(name).is_some()
    }

    /// Forgets member `name`'s tags and returns them.
    pub fn take(&mut self, name: &str) -> Option<Arc<TagsMsg>> {
        match self.entries.find_entry(self.hash(name), |t| t.name == name) {
            Ok(known) => Some(known.remove().0),
            Err(_) => None,
        }
    }

    /// Every member's tags, in no order.
    pub fn drain(&mut self) -> impl Iterator<Item = Arc<TagsMsg>> + '_ {
        self.entries.drain()
    }

    /// Keeps the tags of the members for which `keep(name)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|t| keep(&t.name));
    }

    /// Members with known tags.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no member's tags are known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Every tag message some node holds, so equal messages (one member's tags at one version, as
/// every node that knows them holds them) share one allocation.
static TAGS: LazyLock<Interner<TagsMsg>> = LazyLock::new(Interner::new);

/// The process's shared copy of `msg` (made from `msg` if there is none yet).
pub fn intern_tags(msg: TagsMsg) -> Arc<TagsMsg> {
    let hasher = TAGS.hasher();
    TAGS.get_or_insert(
        hasher.hash_one(&msg),
        msg,
        |held, msg| held == msg,
        |msg| msg,
        |held| hasher.hash_one(held),
    )
}

/// The hash the owned form of `msg` has (so the interner finds it without making it).
fn ref_hash(hasher: &impl BuildHasher, msg: &crate::wire::TagsRef<'_>) -> u64 {
    let mut state = hasher.build_hasher();
    let tags = msg.tags.iter().copied();
    crate::wire::hash_tags(&mut state, msg.name, msg.generation, msg.version, tags);
    std::hash::Hasher::finish(&state)
}

/// [`intern_tags`] for a message as it arrived: nothing is allocated when the process holds it
/// already.
pub(crate) fn intern_tags_ref(msg: &crate::wire::TagsRef<'_>) -> Arc<TagsMsg> {
    let hash = ref_hash(TAGS.hasher(), msg);
    TAGS.find(hash, |held| msg.same_as(held))
        .unwrap_or_else(|| intern_tags(msg.to_owned()))
}

/// foca's broadcast handler: decodes items and keeps only news in flight.
pub struct Handler {
    /// Shared with the node.
    pub shared: Arc<Mutex<Knowledge>>,
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = BroadcastKey;
    type Error = GossipError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<BroadcastKey>, GossipError> {
        let local = sender.is_none();
        let origin = if local { Origin::Own } else { Origin::Relayed };
        let mut k = self.shared.lock();
        // Tags (postcard's variant 0), read in place: a copy of what this node holds already
        // (every node hears each member's tags from several relays) costs no allocation, and
        // news is shared with the process's copy (`intern_tags_ref`).
        // A member's version is bumped on every change of its tags, so the same generation and
        // version is the message this node holds: heard again from another relay (nearly every
        // copy a node hears), it is not news, decided from the message's head alone (neither
        // the tags are read nor the held ones compared). A forged message reusing a held
        // version is dropped here too, uncounted (it would not have been accepted either).
        if let Some((&0, rest)) = data.split_first()
            && !local
            && let Ok((head, _)) = postcard::take_from_bytes::<crate::wire::TagsHead<'_>>(rest)
            && k.tags.get(head.name).is_some_and(|known| {
                known.generation == head.generation && known.version == head.version
            })
        {
            return Ok(None);
        }
        if let Some((&0, rest)) = data.split_first()
            && let Ok(t) = postcard::from_bytes::<crate::wire::TagsRef<'_>>(rest)
        {
            if !local && k.tags.get(t.name).is_some_and(|known| t.same_as(known)) {
                return Ok(None);
            }
            let key = BroadcastKey::Tags(t.name.to_string(), t.generation, t.version, origin);
            let shared = intern_tags_ref(&t);
            return Ok((k.learn_shared_tags(shared) || local).then_some(key));
        }
        Ok(match Broadcast::decode(data)? {
            Broadcast::Tags(t) => {
                let key = BroadcastKey::Tags(t.name.clone(), t.generation, t.version, origin);
                // Our own tags are always (re)sent; others' only when they are news.
                (k.learn_tags(t) || local).then_some(key)
            }
            Broadcast::Intent(i) => {
                let key = BroadcastKey::Intent(i.name.clone(), i.ltime);
                (k.learn_intent(i, local) || local).then_some(key)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IntentKind;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn id(name: &str, generation: u64) -> NodeId {
        NodeId::new("127.0.0.1:9".parse().unwrap(), name, generation)
    }

    fn tags(name: &str, generation: u64, version: u64) -> TagsMsg {
        TagsMsg {
            name: name.into(),
            generation,
            version,
            tags: BTreeMap::from([("v".into(), version.to_string())]),
        }
    }

    fn leave(name: &str, ltime: u64) -> IntentMsg {
        IntentMsg {
            name: name.into(),
            ltime,
            kind: IntentKind::Leave,
            prune: false,
        }
    }

    #[test]
    fn the_next_local_ltime_saturates() {
        let mut k = Knowledge::new(id("me", 1), Duration::ZERO);
        assert_eq!(k.next_ltime(), 1);
        k.ltime = u64::MAX;
        assert_eq!(k.next_ltime(), u64::MAX);
    }

    #[test]
    fn tags_need_the_current_generation_and_a_near_version() {
        let mut k = Knowledge::new(id("a", 5), Duration::ZERO);
        assert!(k.learn_tags(tags("a", 5, 1)));
        assert!(!k.learn_tags(tags("a", 6, 2)), "another generation");
        assert!(
            !k.learn_tags(tags("a", 5, 2 + MAX_TAGS_VERSION_AHEAD)),
            "far ahead"
        );
        assert!(k.learn_tags(tags("a", 5, 1 + MAX_TAGS_VERSION_AHEAD)));
        assert_eq!(k.rejected, 2);
        // Unknown members' tags wait until the member is listed.
        assert!(!k.learn_tags(tags("b", 1, 1)));
        assert_eq!(k.pending_tags.len(), 1);
        k.table.up(id("b", 1), Duration::ZERO);
        k.resolve_pending_tags();
        assert_eq!(k.tags.get("b").map(|t| t.version), Some(1));
    }

    #[test]
    fn nodes_that_know_the_same_tags_share_one_copy() {
        let mut a = Knowledge::new(id("a", 1), Duration::ZERO);
        let mut b = Knowledge::new(id("b", 1), Duration::ZERO);
        for k in [&mut a, &mut b] {
            k.table.up(id("c", 1), Duration::ZERO);
            assert!(k.learn_tags(tags("c", 1, 1)));
        }
        let shared = |k: &Knowledge| {
            k.tags
                .entries
                .find(k.tags.hash("c"), |t| t.name == "c")
                .unwrap()
                .clone()
        };
        assert!(Arc::ptr_eq(&shared(&a), &shared(&b)));
        // A newer version replaces the member's entry; another member's tags are apart.
        assert!(a.learn_tags(tags("c", 1, 2)));
        assert_eq!(a.tags.get("c").map(|t| t.version), Some(2));
        assert_eq!(b.tags.get("c").map(|t| t.version), Some(1));
        assert_eq!(a.tags.len(), 1);
        assert!(a.tags.remove("c") && !a.tags.remove("c"));
        assert!(a.tags.is_empty());
    }

    #[test]
    fn a_message_as_it_arrives_finds_the_shared_copy() {
        let msg = TagsMsg {
            name: "x".into(),
            generation: 3,
            version: 4,
            tags: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
        };
        let shared = intern_tags(msg.clone());
        let bytes = postcard::to_stdvec(&msg).unwrap();
        let arrived: crate::wire::TagsRef = postcard::from_bytes(&bytes).unwrap();
        let hasher = std::hash::RandomState::new();
        assert_eq!(ref_hash(&hasher, &arrived), hasher.hash_one(&msg));
        assert!(arrived.same_as(&msg));
        assert!(Arc::ptr_eq(&shared, &intern_tags_ref(&arrived)));
        // One the process does not hold yet is made, whole.
        let newer = TagsMsg {
            version: 5,
            ..msg.clone()
        };
        let bytes = postcard::to_stdvec(&newer).unwrap();
        let arrived: crate::wire::TagsRef = postcard::from_bytes(&bytes).unwrap();
        let made = intern_tags_ref(&arrived);
        assert_eq!(*made, newer);
        assert!(Arc::ptr_eq(&made, &intern_tags(newer)));
    }

    /// The handler's in-place reading of tags broadcasts: news once, a copy heard again is
    /// not news (nor counted as rejected), a newer version is news, an older one is rejected.
    #[test]
    fn a_tags_broadcast_heard_again_is_not_news() {
        use foca::BroadcastHandler;
        let shared = Arc::new(Mutex::new(Knowledge::new(id("a", 1), Duration::ZERO)));
        shared.lock().table.up(id("c", 1), Duration::ZERO);
        let mut handler = Handler {
            shared: shared.clone(),
        };
        let sender = id("b", 1);
        let bytes = |version| Broadcast::Tags(tags("c", 1, version)).encode().unwrap();
        let mut hear = |version| {
            handler
                .receive_item(&bytes(version), Some(&sender))
                .unwrap()
        };
        assert_eq!(
            hear(1),
            Some(BroadcastKey::Tags("c".into(), 1, 1, Origin::Relayed))
        );
        assert_eq!(hear(1), None);
        assert_eq!(shared.lock().rejected, 0);
        assert_eq!(
            hear(2),
            Some(BroadcastKey::Tags("c".into(), 1, 2, Origin::Relayed))
        );
        assert_eq!(hear(1), None);
        assert_eq!(shared.lock().rejected, 1);
        assert_eq!(shared.lock().tags.get("c").map(|t| t.version), Some(2));
        // Intents still go the general way.
        let intent = Broadcast::Intent(leave("c", 1)).encode().unwrap();
        assert!(
            handler
                .receive_item(&intent, Some(&sender))
                .unwrap()
                .is_some()
        );
    }

    /// A copy of held tags is told from its head (member, generation, version) alone: one
    /// whose tags part does not even decode is not news and not an error.
    #[test]
    fn a_copy_of_held_tags_is_told_from_its_head_alone() {
        use foca::BroadcastHandler;
        let shared = Arc::new(Mutex::new(Knowledge::new(id("a", 1), Duration::ZERO)));
        shared.lock().table.up(id("c", 1), Duration::ZERO);
        let mut handler = Handler {
            shared: shared.clone(),
        };
        let sender = id("b", 1);
        let whole = Broadcast::Tags(tags("c", 1, 1)).encode().unwrap();
        assert!(
            handler
                .receive_item(&whole, Some(&sender))
                .unwrap()
                .is_some()
        );
        // The head, then a tags part cut short.
        let head = postcard::to_stdvec(&("c", 1u64, 1u64)).unwrap();
        let cut = [&[0u8][..], &head, &[5u8]].concat();
        assert_eq!(handler.receive_item(&cut, Some(&sender)).unwrap(), None);
        // The same cut message at a version not held is read whole, and fails to decode.
        let head = postcard::to_stdvec(&("c", 1u64, 2u64)).unwrap();
        let cut = [&[0u8][..], &head, &[5u8]].concat();
        assert!(handler.receive_item(&cut, Some(&sender)).is_err());
        assert_eq!(shared.lock().tags.get("c").map(|t| t.version), Some(1));
    }

    /// A sweep reads the tags only when the table lost a member since the last one: tags put
    /// in behind the table's back (which the node never does) stay until a removal.
    #[test]
    fn tags_are_swept_only_after_the_table_lost_a_member() {
        let mut k = Knowledge::new(id("a", 1), Duration::ZERO);
        k.table.up(id("b", 1), Duration::ZERO);
        k.sweep();
        k.tags.insert(tags("ghost", 1, 1));
        k.sweep();
        assert!(k.tags.contains_key("ghost"), "swept without a removal");
        assert!(k.table.remove("b").is_some());
        k.sweep();
        assert!(!k.tags.contains_key("ghost"), "not swept after a removal");
    }

    #[test]
    fn far_future_intents_are_ignored() {
        let mut k = Knowledge::new(id("a", 1), Duration::ZERO);
        k.table.up(id("b", 1), Duration::ZERO);
        assert!(!k.learn_intent(leave("b", u64::MAX), false));
        assert!(!k.learn_intent(leave("b", MAX_LTIME_AHEAD + 1), false));
        assert_eq!(k.ltime, 0);
        assert!(k.learn_intent(leave("b", MAX_LTIME_AHEAD), false));
        assert_eq!(k.ltime, MAX_LTIME_AHEAD);
    }

    #[test]
    fn orphan_intents_are_bounded_and_swept() {
        let mut k = Knowledge::new(id("a", 1), Duration::ZERO);
        for i in 0..MAX_ORPHAN_INTENTS * 2 {
            k.learn_intent(leave(&format!("ghost{i}"), 1), false);
        }
        assert!(k.intents.len() <= 1 + MAX_ORPHAN_INTENTS);
        k.sweep();
        assert!(k.intents.is_empty());
    }
}
