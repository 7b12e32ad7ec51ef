//! Serf's member model on top of foca's Alive/Suspect/Down: `alive`, `leaving`, `left`, `failed`,
//! driven by foca's notifications, intents and an explicit clock.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use std::time::Duration;

use hashbrown::HashTable;

use caravan_agent_core::member::MemberStatus;

use crate::identity::NodeId;
use crate::wire::{IntentKind, IntentMsg};

/// One member as the table knows it: two words, in a table every member holds for every member
/// (N² entries in a pool of N).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its identity.
    pub id: NodeId,
    /// When the status last changed: node clock, whole seconds rounded up (4 bytes where a
    /// `Duration` takes 16; 136 years of uptime). Only reaping reads it, against timeouts of
    /// hours, which it may pass up to a second late.
    pub since_s: u32,
    /// Its Serf status.
    pub status: MemberStatus,
}

fn seconds(t: Duration) -> u32 {
    let whole = t.as_secs() + u64::from(t.subsec_nanos() > 0);
    u32::try_from(whole).unwrap_or(u32::MAX)
}

/// What applying an intent did.
#[derive(Debug, PartialEq, Eq)]
pub enum IntentEffect {
    /// Nothing (stale, or a state it does not change).
    None,
    /// The status changed.
    Changed,
    /// The member was removed (prune); foca should forget this identity too.
    Pruned(NodeId),
    /// The intent is about a member the table does not know.
    Unknown,
}

/// Members by name. Entries are found by hashing the name their identity carries, so the table
/// stores no second copy of it (a pool of N holds N² entries).
#[derive(Default)]
pub struct MemberTable {
    entries: HashTable<Entry>,
    hasher: DefaultHashBuilder,
    /// Lamport time of the last intent applied, for the members that had one (few: leaves,
    /// force-leaves, refutations), so entries need not carry it.
    ltimes: HashMap<Box<str>, u64>,
    /// Members by status ([`status_slot`]), kept in step with every change so counting is O(1).
    counts: [usize; 5],
    /// Entries removed so far (pruned, reaped, renamed away): while it has not moved, every
    /// member foca lists active is still in the table (see [`MemberTable::removals`]).
    removals: u64,
}

fn status_slot(status: MemberStatus) -> usize {
    match status {
        MemberStatus::None => 0,
        MemberStatus::Alive => 1,
        MemberStatus::Leaving => 2,
        MemberStatus::Left => 3,
        MemberStatus::Failed => 4,
    }
}

impl std::fmt::Debug for MemberTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl MemberTable {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Entry> {
        let hash = self.hash(name);
        self.entries.find_mut(hash, |e| e.id.name() == name)
    }

    /// One member moved from `old` to `new` (`None`: absent).
    fn recount(&mut self, old: Option<MemberStatus>, new: Option<MemberStatus>) {
        if let Some(old) = old {
            let slot = &mut self.counts[status_slot(old)];
            *slot = slot.saturating_sub(1);
        }
        if let Some(new) = new {
            self.counts[status_slot(new)] += 1;
        }
    }

    /// A member is up (new, back, or restarted with a new identity).
    pub fn up(&mut self, id: NodeId, now: Duration) {
        let hash = self.hash(id.name());
        let hasher = &self.hasher;
        let slot = self.entries.entry(
            hash,
            |e| e.id.name() == id.name(),
            |e| hasher.hash_one(e.id.name()),
        );
        let old = match slot {
            hashbrown::hash_table::Entry::Occupied(mut known) => {
                let entry = known.get_mut();
                let old = entry.status;
                entry.id = id;
                entry.status = MemberStatus::Alive;
                entry.since_s = seconds(now);
                Some(old)
            }
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(Entry {
                    id,
                    status: MemberStatus::Alive,
                    since_s: seconds(now),
                });
                None
            }
        };
        self.recount(old, Some(MemberStatus::Alive));
    }

    /// foca declared an identity down: `left` if it announced a leave, else `failed`. A stale
    /// identity (replaced by a restart) changes nothing.
    pub fn down(&mut self, id: &NodeId, now: Duration) -> Option<MemberStatus> {
        let entry = self.get_mut(id.name())?;
        if entry.id != *id {
            return None;
        }
        let status = match entry.status {
            MemberStatus::Leaving | MemberStatus::Left => MemberStatus::Left,
            _ => MemberStatus::Failed,
        };
        let old = entry.status;
        if old != status {
            entry.status = status;
            entry.since_s = seconds(now);
            self.recount(Some(old), Some(status));
        }
        Some(status)
    }

    /// Applies a join or leave intent.
    pub fn intent(&mut self, msg: &IntentMsg, now: Duration) -> IntentEffect {
        let Some(status) = self.get(&msg.name).map(|e| e.status) else {
            return IntentEffect::Unknown;
        };
        let last = self.ltimes.get(msg.name.as_str()).copied().unwrap_or(0);
        if msg.ltime <= last {
            return IntentEffect::None;
        }
        if msg.kind == IntentKind::Leave && msg.prune {
            let gone = self.remove(&msg.name).map(|e| e.id);
            return gone.map_or(IntentEffect::None, IntentEffect::Pruned);
        }
        self.ltimes.insert(msg.name.as_str().into(), msg.ltime);
        let next = match (msg.kind, status) {
            (IntentKind::Leave, MemberStatus::Alive) => MemberStatus::Leaving,
            (IntentKind::Leave, MemberStatus::Failed) => MemberStatus::Left,
            (IntentKind::Join, MemberStatus::Leaving) => MemberStatus::Alive,
            _ => return IntentEffect::None,
        };
        let Some(entry) = self.get_mut(&msg.name) else {
            return IntentEffect::Unknown;
        };
        let old = entry.status;
        entry.status = next;
        entry.since_s = seconds(now);
        self.recount(Some(old), Some(next));
        IntentEffect::Changed
    }

    /// Removes failed members older than `reconnect` and left ones older than `tombstone`.
    pub fn reap(&mut self, now: Duration, reconnect: Duration, tombstone: Duration) -> Vec<NodeId> {
        let expired = |e: &Entry| {
            let age = now.saturating_sub(Duration::from_secs(u64::from(e.since_s)));
            match e.status {
                MemberStatus::Failed => age >= reconnect,
                MemberStatus::Left => age >= tombstone,
                _ => false,
            }
        };
        let mut gone = Vec::new();
        let mut gone_status = Vec::new();
        self.entries.retain(|e| {
            let keep = !expired(e);
            if !keep {
                gone.push(e.id.clone());
                gone_status.push(e.status);
            }
            keep
        });
        self.removals += gone_status.len() as u64;
        for status in gone_status {
            self.recount(Some(status), None);
        }
        for id in &gone {
            self.ltimes.remove(id.name());
        }
        gone
    }

    /// Removes a member at once.
    pub fn remove(&mut self, name: &str) -> Option<Entry> {
        let hash = self.hash(name);
        let found = self.entries.find_entry(hash, |e| e.id.name() == name);
        let gone = found.ok().map(|entry| entry.remove().0);
        if let Some(e) = &gone {
            self.removals += 1;
            self.recount(Some(e.status), None);
            self.ltimes.remove(name);
        }
        gone
    }

    /// How many entries have been removed so far (by [`MemberTable::remove`] and
    /// [`MemberTable::reap`]). Entries are only added by [`MemberTable::up`], which every member
    /// foca brings up goes through, so a member foca lists can be missing here only after a
    /// removal: a caller that saw the table complete at one count need not look again until it
    /// moves.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Looks a member up by name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.find(self.hash(name), |e| e.id.name() == name)
    }

    /// Every member.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// How many members have `status` (O(1): counts are kept in step with every change).
    pub fn count(&self, status: MemberStatus) -> usize {
        self.counts[status_slot(status)]
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_two_words() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    fn id(name: &str, generation: u64) -> NodeId {
        NodeId::new("127.0.0.1:1".parse().unwrap(), name, generation)
    }

    fn leave(name: &str, ltime: u64, prune: bool) -> IntentMsg {
        IntentMsg {
            name: name.into(),
            ltime,
            kind: IntentKind::Leave,
            prune,
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn failure_then_force_leave_then_reap() {
        let mut t = MemberTable::default();
        t.up(id("a", 1), T);
        assert_eq!(t.down(&id("a", 1), T), Some(MemberStatus::Failed));
        assert_eq!(t.intent(&leave("a", 1, false), T), IntentEffect::Changed);
        assert_eq!(t.get("a").unwrap().status, MemberStatus::Left);
        assert!(t.reap(T * 10, T * 100, T * 100).is_empty());
        assert_eq!(t.reap(T * 200, T * 100, T * 100), vec![id("a", 1)]);
        assert!(t.is_empty());
    }

    #[test]
    fn graceful_leave_is_left_not_failed() {
        let mut t = MemberTable::default();
        t.up(id("a", 1), T);
        assert_eq!(t.intent(&leave("a", 5, false), T), IntentEffect::Changed);
        assert_eq!(t.get("a").unwrap().status, MemberStatus::Leaving);
        assert_eq!(t.down(&id("a", 1), T), Some(MemberStatus::Left));
        // Stale intents change nothing.
        assert_eq!(t.intent(&leave("a", 4, false), T), IntentEffect::None);
    }

    #[test]
    fn refutation_and_restart() {
        let mut t = MemberTable::default();
        t.up(id("a", 1), T);
        t.intent(&leave("a", 2, false), T);
        let join = IntentMsg {
            kind: IntentKind::Join,
            ..leave("a", 3, false)
        };
        assert_eq!(t.intent(&join, T), IntentEffect::Changed);
        assert_eq!(t.get("a").unwrap().status, MemberStatus::Alive);
        t.down(&id("a", 1), T);
        // A stale identity's down does not touch the restarted member.
        t.up(id("a", 2), T);
        assert_eq!(t.down(&id("a", 1), T), None);
        assert_eq!(t.get("a").unwrap().status, MemberStatus::Alive);
    }

    #[test]
    fn counts_follow_every_change() {
        let mut t = MemberTable::default();
        let recount = |t: &MemberTable, status| t.iter().filter(|e| e.status == status).count();
        let check = |t: &MemberTable| {
            for status in [
                MemberStatus::Alive,
                MemberStatus::Leaving,
                MemberStatus::Left,
                MemberStatus::Failed,
            ] {
                assert_eq!(t.count(status), recount(t, status), "{status:?}");
            }
        };
        for name in ["a", "b", "c", "d"] {
            t.up(id(name, 1), T);
        }
        t.up(id("a", 2), T);
        check(&t);
        t.down(&id("b", 1), T);
        t.intent(&leave("c", 1, false), T);
        check(&t);
        t.down(&id("c", 1), T);
        t.intent(&leave("b", 2, false), T);
        check(&t);
        t.intent(&leave("d", 1, false), T);
        t.remove("a");
        check(&t);
        t.reap(T * 1000, T, T);
        check(&t);
        assert_eq!(t.count(MemberStatus::Leaving), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn prune_removes_and_unknown_is_reported() {
        let mut t = MemberTable::default();
        t.up(id("a", 1), T);
        t.down(&id("a", 1), T);
        assert_eq!(
            t.intent(&leave("a", 1, true), T),
            IntentEffect::Pruned(id("a", 1))
        );
        assert!(t.get("a").is_none());
        assert_eq!(t.intent(&leave("zz", 1, false), T), IntentEffect::Unknown);
    }
}
