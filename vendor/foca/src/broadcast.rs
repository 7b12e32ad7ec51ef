/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::hash::Hash;
use hashbrown::{DefaultHashBuilder, HashMap};

use bytes::BufMut;

/// A type capable of decoding a (associated) broadcast from a buffer
/// and deciding whether to keep disseminating it for other members
/// of the cluster (when it's new information) or to discard it (when
/// its outdated/stale).
pub trait BroadcastHandler<T> {
    /// A unique identifier for the broadcasts this handler manages
    ///
    /// It should be able to compare itself against an arbitrary number
    /// of other [`Self::Key`] instances and decide wether it
    /// replaces it or not so conflicting/stale information isn't
    /// disseminated.
    type Key: Invalidates;

    /// The error type that `receive_item` may emit. Will be wrapped
    /// by [`crate::Error::CustomBroadcast`].
    type Error: core::error::Error + Send + Sync + 'static;

    /// Decodes a [`Self::Key`] from a buffer and either discards
    /// it or tells Foca to persist and disseminate it.
    ///
    /// `Sender` is `None` when you're adding broadcast data directly,
    /// via [`crate::Foca::add_broadcast`], otherwise it will be the
    /// address of the member that sent the data. Notice that Foca
    /// doesn't track the origin of packets- if you need it you
    /// have to add it to the data you're broadcasting.
    ///
    /// When you receive a broadcast you have to decide whether it's
    /// new information that needs to be disseminated (`Ok(Some(...))`)
    /// or not (`Ok(None)`).
    ///
    /// Always yielding `Some(...)` is wrong because Foca will never
    /// know when to stop sending this information to other members.
    ///
    /// Example: Assume your custom broadcast is a simple Set-Key-Value
    /// operation. When you receive it you should check if your map
    /// contains the Key-Value pair; If it didn't, you yield
    /// `Some`, otherwise the operation is stale, so you yield `None`.
    ///
    /// The `data` parameter is the exact data provided to
    /// [`crate::Foca::add_broadcast`]. When Foca receives N custom
    /// broadcasts at once, this gets called N times.
    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&T>,
    ) -> Result<Option<Self::Key>, Self::Error>;

    /// Decides whether Foca should add broadcast data to the message
    /// it's about to send to active member `T`.
    ///
    /// Normally when Foca sends a message it always tries to include
    /// custom broadcasts alongside the information it actually
    /// cares about; This allows implementations to override this
    /// logic with something else.
    ///
    /// Example: You are running a heterogeneous cluster and some nodes
    /// are always very busy and you'd rather they never have to deal
    /// with the extra cpu/bandwidth cost of receiving/sending
    /// your custom broadcasts.
    ///
    /// Returning `true` tells Foca to proceed as it would normally,
    /// including broadcasts in the messages it sends when it can.
    ///
    /// Returning `false` tells Foca to not include such broadcasts
    /// in the message. It does *not* prevent the message from being
    /// sent, just keeps Foca from attaching extra data to them.
    fn should_add_broadcast_data(&self, _member: &T) -> bool {
        true
    }
}

/// A type that's able to look at another and decide wether it's
/// newer/fresher (i.e. invalidates) than it.
///
/// As you send/receive broadcasts, Foca will hold them for a while
/// as it disseminates the data to other cluster members. This trait
/// helps with replacing data that hasn't been fully disseminated
/// yet but you already know it's stale.
///
/// Example: Assume a versioned broadcast like `{key,version,...}`;
/// After you receive `{K, 0, ...}` and keep it, Foca will be
/// disseminating it. Soon after you receive `{K, 1, ...}` which
/// is a newer version for this broadcast. This trait enables
/// Foca to immediately stop disseminating the previous version,
/// even if it hasn't sent it to everyone it can yet.
pub trait Invalidates {
    /// When `item.invalidates(&other)` it means that Foca will
    /// keep `item` and discard `other` from its dissemination
    /// backlog.
    fn invalidates(&self, other: &Self) -> bool;

    /// Caravan fork: the slot an item holds in the backlog, when items
    /// have one: a new item then replaces the pending item with the same
    /// slot in O(1) (as a [`KeyedBroadcasts`], bounded like the cluster
    /// updates' backlog) instead of being checked against every pending
    /// item with [`Invalidates::invalidates`]. Only an item that is news
    /// should be handed to Foca with a slot, since it replaces what is
    /// pending there unconditionally. Two items whose slots collide
    /// replace each other: a slot should be a good hash of what tells
    /// items apart. `None` (the default) keeps the stock behaviour.
    fn slot(&self) -> Option<u64> {
        None
    }

    /// Caravan fork: how many times this item is transmitted, given
    /// [`crate::Config::max_transmissions`] (which it returns by default).
    /// Items that have another way to reach every member (a periodic
    /// re-broadcast, a pull on demand) can spread with fewer: an epidemic
    /// whose every relay sends `k` copies reaches all but about `e^-k` of
    /// the members, while its cost grows with `k` times the square of the
    /// pool's size.
    fn max_transmissions(&self, configured: core::num::NonZeroU8) -> core::num::NonZeroU8 {
        configured
    }
}

impl Invalidates for &[u8] {
    fn invalidates(&self, other: &Self) -> bool {
        self.eq(other)
    }
}

pub(crate) struct Broadcasts<V> {
    flip: alloc::collections::BinaryHeap<Entry<V>>,
    flop: alloc::collections::BinaryHeap<Entry<V>>,
}

impl<T> Broadcasts<T>
where
    T: Invalidates,
{
    pub(crate) fn new() -> Self {
        Self {
            flip: Default::default(),
            flop: Default::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.flip.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.flip.is_empty()
    }

    pub(crate) fn add_or_replace(&mut self, item: T, data: Vec<u8>, max_tx: usize) {
        debug_assert!(max_tx > 0);
        self.flip.retain(|node| !item.invalidates(&node.item));
        self.flip.push(Entry {
            remaining_tx: max_tx,
            item,
            data,
        });
    }

    // Caravan fork: only the tests use it; updates go through KeyedBroadcasts.
    #[cfg(test)]
    pub(crate) fn fill(&mut self, mut buffer: impl BufMut, max_items: usize) -> usize {
        if self.flip.is_empty() {
            return 0;
        }
        debug_assert!(self.flop.is_empty());

        let mut num_taken = 0;
        let mut remaining = max_items;

        while buffer.has_remaining_mut() && remaining > 0 {
            let Some(mut node) = self.flip.pop() else {
                break;
            };
            debug_assert!(node.remaining_tx > 0);

            if buffer.remaining_mut() >= node.data.len() {
                num_taken += 1;
                remaining -= 1;

                buffer.put_slice(&node.data);
                node.remaining_tx -= 1;
            }

            if node.remaining_tx > 0 {
                self.flop.push(node);
            }
        }

        self.flip.append(&mut self.flop);

        num_taken
    }

    pub(crate) fn fill_with_len_prefix(
        &mut self,
        mut buffer: impl BufMut,
        max_items: usize,
    ) -> usize {
        if self.flip.is_empty() {
            return 0;
        }
        debug_assert!(self.flop.is_empty());

        let mut num_taken = 0;
        let mut remaining = max_items;

        while buffer.has_remaining_mut() && remaining > 0 {
            let Some(mut node) = self.flip.pop() else {
                break;
            };
            debug_assert!(node.remaining_tx > 0);

            if buffer.remaining_mut() >= node.data.len() + 2 {
                num_taken += 1;
                remaining -= 1;

                debug_assert!(u16::try_from(node.data.len()).is_ok());
                buffer.put_u16(node.data.len() as u16);
                buffer.put_slice(&node.data);
                node.remaining_tx -= 1;
            }

            if node.remaining_tx > 0 {
                self.flop.push(node);
            }
        }

        self.flip.append(&mut self.flop);

        num_taken
    }
}

/// Caravan fork: the backlog of cluster updates, where an update replaces
/// the pending one for the same key (address).
///
/// [`Broadcasts::add_or_replace`] scans the whole backlog to drop what a new
/// item invalidates, and [`Broadcasts::fill`] keeps popping items that do not
/// fit until the backlog is exhausted. When thousands of members join at
/// once both make every packet cost O(backlog). Here the live entry per key
/// is tracked in a map and replaced entries are dropped lazily (compacted
/// away when they outnumber live ones), and a fill gives up after
/// [`MAX_MISSES`] items in a row that do not fit.
///
/// Entries sit in one bucket per number of transmissions left (a bucket
/// queue: that number is small, at most `max_transmissions`), so taking the
/// next item to send and putting it back cost O(1) instead of a heap's
/// O(log backlog), and so does finding the item closest to done. The backlog
/// holds at most [`MAX_UPDATES_BACKLOG`] live items: beyond that, the one
/// with the fewest transmissions left (the one a fill would send last) is
/// dropped, as Serf prunes its queues to a `MaxQueueDepth` by dropping the
/// oldest messages. Without a bound, a node of a pool where thousands join
/// at once keeps one item per member for every transmission it still owes,
/// and goes on sending them (to members that have long learned them
/// elsewhere) for minutes after the joins end.
pub(crate) struct KeyedBroadcasts<K> {
    /// `lanes[l][r]`: entries of lane `l` ([`NORMAL`] or [`URGENT`]) with `r`
    /// transmissions left (bucket 0 unused).
    lanes: [Vec<VecDeque<KeyedEntry<K>>>; 2],
    /// Entries stored in the buckets, replaced ones included.
    stored: usize,
    /// Taken entries on their way back to a bucket, during a fill.
    flop: Vec<(usize, KeyedEntry<K>)>,
    live: HashMap<K, Live, DefaultHashBuilder>,
    next_seq: u64,
    /// Caravan fork: transmissions the live entries still owe (the sum of
    /// their `left`), at most [`MAX_PENDING_TRANSMISSIONS`].
    pending: usize,
}

/// The live entry of a key: its sequence number (older entries of the key
/// are stale) and the transmissions it has left.
struct Live {
    seq: u64,
    left: usize,
}

/// The lane of ordinary items.
const NORMAL: usize = 0;
/// Caravan fork: the lane a fill drains first, and the bound drops from last
/// (see [`KeyedBroadcasts::add_or_replace_urgent`]).
const URGENT: usize = 1;

/// How many items in a row may not fit before a fill stops looking.
pub(crate) const MAX_MISSES: usize = 16;

/// Caravan fork: most live items a [`KeyedBroadcasts`] backlog holds: about
/// 20 full packets of updates, each owed `max_transmissions` times, which
/// drain in seconds. A pool of up to 1,024 members never reaches it (the
/// backlog holds at most one item per member); in a storm of thousands of
/// joins, what it drops has been sent the most already.
pub(crate) const MAX_UPDATES_BACKLOG: usize = 1024;

/// Caravan fork: most transmissions a [`KeyedBroadcasts`] backlog owes: about
/// a hundred full packets of updates, which a member sends within some
/// fifteen seconds. Beyond, as beyond [`MAX_UPDATES_BACKLOG`], what has been
/// sent the most is dropped. [`MAX_UPDATES_BACKLOG`] items owing
/// `max_transmissions` each (24 at 10,000 members then) kept every member of a
/// simulated 10,000-member pool sending full packets of updates that every
/// receiver knew for minutes after a join storm (each costing its receivers
/// a look-up per update); an item is dropped only after most of its
/// transmissions (a burst of news leaves the items sent least, the newest).
pub(crate) const MAX_PENDING_TRANSMISSIONS: usize = 4 * MAX_UPDATES_BACKLOG;

struct KeyedEntry<K> {
    data: Vec<u8>,
    key: K,
    seq: u64,
}

impl<K: Hash + Eq + Clone> KeyedBroadcasts<K> {
    pub(crate) fn new() -> Self {
        Self {
            lanes: [Vec::new(), Vec::new()],
            stored: 0,
            flop: Vec::new(),
            live: HashMap::default(),
            next_seq: 0,
            pending: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn is_live(live: &HashMap<K, Live, DefaultHashBuilder>, entry: &KeyedEntry<K>) -> bool {
        live.get(&entry.key).is_some_and(|l| l.seq == entry.seq)
    }

    pub(crate) fn add_or_replace(&mut self, key: K, data: Vec<u8>, max_tx: usize) {
        self.add(key, data, max_tx, NORMAL);
    }

    /// Caravan fork: [`Self::add_or_replace`] in the urgent lane, which a
    /// fill drains before the other and the bound drops from only when the
    /// other is empty. The cluster updates that keep the failure detector
    /// right (a suspicion, a member down, a refutation) go there: while
    /// thousands of members join, every packet is full of their
    /// introductions, each sent once and buried by newer ones, and a
    /// suspicion that travelled with them reached the suspect too late to
    /// be refuted (healthy members were declared down in the middle of
    /// a join storm).
    pub(crate) fn add_or_replace_urgent(&mut self, key: K, data: Vec<u8>, max_tx: usize) {
        self.add(key, data, max_tx, URGENT);
    }

    fn add(&mut self, key: K, data: Vec<u8>, max_tx: usize, lane: usize) {
        debug_assert!(max_tx > 0);
        let max_tx = max_tx.max(1);
        self.next_seq += 1;
        let seq = self.next_seq;
        let fresh = Live { seq, left: max_tx };
        if let Some(old) = self.live.insert(key.clone(), fresh) {
            self.pending -= old.left;
        }
        self.pending += max_tx;
        let buckets = &mut self.lanes[lane];
        if buckets.len() <= max_tx {
            buckets.resize_with(max_tx + 1, VecDeque::new);
        }
        buckets[max_tx].push_back(KeyedEntry { data, key, seq });
        self.stored += 1;
        while (self.live.len() > MAX_UPDATES_BACKLOG || self.pending > MAX_PENDING_TRANSMISSIONS)
            && self.drop_closest_to_done()
        {}
        if self.stored > 2 * self.live.len() + 64 {
            let live = &self.live;
            for bucket in self.lanes.iter_mut().flatten() {
                bucket.retain(|e| Self::is_live(live, e));
                Self::trim(bucket);
            }
            self.stored = self.live.len();
        }
    }

    /// Drops the live entry with the fewest transmissions left (the oldest
    /// of those), with the replaced entries found on the way; from the
    /// urgent lane only when the other holds none.
    fn drop_closest_to_done(&mut self) -> bool {
        for lane in [NORMAL, URGENT] {
            for bucket in self.lanes[lane].iter_mut().skip(1) {
                while let Some(entry) = bucket.pop_front() {
                    self.stored -= 1;
                    if Self::is_live(&self.live, &entry) {
                        if let Some(gone) = self.live.remove(&entry.key) {
                            self.pending -= gone.left;
                        }
                        Self::trim(bucket);
                        return true;
                    }
                }
            }
        }
        false
    }

    pub(crate) fn fill(&mut self, mut buffer: impl BufMut, max_items: usize) -> usize {
        if self.live.is_empty() {
            return 0;
        }
        debug_assert!(self.flop.is_empty());

        let mut num_taken = 0;
        let mut remaining = max_items;
        let mut misses = 0;

        // The urgent lane first. In a lane, most transmissions left first;
        // within a bucket, the newest first.
        for lane in [URGENT, NORMAL] {
            let buckets = &mut self.lanes[lane];
            let mut lowest = buckets.len();
            'buckets: for left in (1..buckets.len()).rev() {
                lowest = left;
                while buffer.has_remaining_mut() && remaining > 0 && misses < MAX_MISSES {
                    let Some(entry) = buckets[left].pop_back() else {
                        continue 'buckets;
                    };
                    let Some(live) = self.live.get_mut(&entry.key).filter(|l| l.seq == entry.seq)
                    else {
                        self.stored -= 1;
                        continue;
                    };
                    if buffer.remaining_mut() >= entry.data.len() {
                        num_taken += 1;
                        remaining -= 1;
                        misses = 0;
                        buffer.put_slice(&entry.data);
                        live.left -= 1;
                        self.pending -= 1;
                        if left > 1 {
                            self.flop.push((left - 1, entry));
                        } else {
                            self.stored -= 1;
                            self.live.remove(&entry.key);
                        }
                    } else {
                        misses += 1;
                        self.flop.push((left, entry));
                    }
                }
                break;
            }

            // Back in their buckets, where the next fill finds them first
            // among those with as many transmissions left.
            for (left, entry) in self.flop.drain(..).rev() {
                buckets[left].push_back(entry);
            }
            for bucket in buckets.iter_mut().skip(lowest) {
                Self::trim(bucket);
            }
        }

        num_taken
    }

    /// Gives back most of a bucket's room once it holds far fewer items than
    /// it has room for: every item passes through every bucket on its way to
    /// done, so a bucket kept at its largest size would hold a whole backlog's
    /// room (one per transmission count: 20 to 30 times the bound), and a
    /// simulated 2,000-member pool kept gigabytes of such room after it formed.
    /// An empty bucket keeps room for at most 8 items.
    fn trim(bucket: &mut VecDeque<KeyedEntry<K>>) {
        if bucket.capacity() > 8 && bucket.len() < bucket.capacity() / 4 {
            bucket.shrink_to(bucket.len() * 2);
        }
    }
}

#[derive(Debug, Clone)]
struct Entry<T> {
    remaining_tx: usize,
    // XXX could be Bytes, or keep a pool in parent
    data: Vec<u8>,
    // ignored for eq/ord. sorting is unstable
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.remaining_tx
            .cmp(&other.remaining_tx)
            .then_with(|| self.data.len().cmp(&other.data.len()))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    struct Key(&'static str);

    impl Invalidates for Key {
        fn invalidates(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    #[test]
    fn piggyback_behaviour() {
        let max_tx = 5;
        let mut piggyback = Broadcasts::new();

        assert!(piggyback.is_empty(), "Piggyback starts empty");

        piggyback.add_or_replace(Key("AA"), b"AAabc".to_vec(), max_tx);

        assert_eq!(1, piggyback.len());

        piggyback.add_or_replace(Key("AA"), b"AAcba".to_vec(), max_tx);

        assert_eq!(
            1,
            piggyback.len(),
            "add_or_replace with same key should replace"
        );

        let mut buf = Vec::new();

        for _i in 0..max_tx {
            buf.clear();
            let num_items = piggyback.fill(&mut buf, usize::MAX);
            assert_eq!(1, num_items);
            assert_eq!(
                b"AAcba",
                &buf[..],
                "Should transmit an item at most max_tx times"
            );
        }

        assert!(
            piggyback.is_empty(),
            "Should remove item after being used max_tx times"
        );
    }

    // Caravan fork: the keyed backlog replaces, expires and fills like the
    // generic one, and stops after MAX_MISSES items that do not fit.
    #[test]
    fn keyed_backlog_replaces_expires_and_fills() {
        let mut backlog = KeyedBroadcasts::new();
        backlog.add_or_replace("a", b"a-old".to_vec(), 2);
        backlog.add_or_replace("b", b"b".to_vec(), 2);
        backlog.add_or_replace("a", b"a-new".to_vec(), 2);
        assert_eq!(2, backlog.len());

        let mut sent = Vec::new();
        for _ in 0..3 {
            let mut buf = Vec::new();
            let n = backlog.fill(&mut buf, usize::MAX);
            sent.push((n, buf));
        }
        assert_eq!(sent[0].0, 2);
        assert_eq!(sent[1].0, 2);
        assert_eq!(sent[2].0, 0, "each item goes out max_tx times");
        assert!(
            !sent[0].1.windows(5).any(|w| w == b"a-old"),
            "replaced item never sent"
        );
        assert!(backlog.is_empty());

        for i in 0..1000u32 {
            backlog.add_or_replace("big", alloc::vec![0u8; 100], 1);
            backlog.add_or_replace("many", i.to_be_bytes().to_vec(), 1);
        }
        assert_eq!(2, backlog.len());
        assert!(backlog.stored < 200, "replaced entries are compacted away");

        let mut full = KeyedBroadcasts::new();
        for i in 0..100u32 {
            full.add_or_replace(i, alloc::vec![0u8; 10], 1);
        }
        let mut buf = bytes::BufMut::limit(Vec::new(), 5);
        assert_eq!(0, full.fill(&mut buf, usize::MAX));
        assert_eq!(100, full.len(), "nothing lost when nothing fits");
    }

    // Caravan fork: past MAX_UPDATES_BACKLOG live items, those with the
    // fewest transmissions left go first.
    #[test]
    fn keyed_backlog_is_bounded_and_drops_what_is_closest_to_done() {
        let mut backlog = KeyedBroadcasts::new();
        for i in 0..10u32 {
            backlog.add_or_replace(i, alloc::vec![1u8], 1);
        }
        for i in 10..(MAX_UPDATES_BACKLOG as u32 + 10) {
            backlog.add_or_replace(i, alloc::vec![3u8], 3);
        }
        assert_eq!(MAX_UPDATES_BACKLOG, backlog.len());
        assert!((0..10u32).all(|i| !backlog.live.contains_key(&i)));
        let mut buf = Vec::new();
        let n = backlog.fill(&mut buf, usize::MAX);
        assert_eq!(n, MAX_UPDATES_BACKLOG);
        assert!(buf.iter().all(|&b| b == 3), "only the kept items are sent");
    }

    // Caravan fork: past MAX_PENDING_TRANSMISSIONS owed, what has been sent
    // the most goes first, whatever the number of items.
    #[test]
    fn keyed_backlog_owes_a_bounded_number_of_transmissions() {
        let mut backlog = KeyedBroadcasts::new();
        let owed = |b: &KeyedBroadcasts<u32>| b.live.values().map(|l| l.left).sum::<usize>();
        for i in 0..100u32 {
            backlog.add_or_replace(i, alloc::vec![1u8], 10);
        }
        // Send each of them once: they owe 9 each now.
        let mut buf = Vec::new();
        assert_eq!(100, backlog.fill(&mut buf, usize::MAX));
        for i in 100..1000u32 {
            backlog.add_or_replace(i, alloc::vec![2u8], 10);
        }
        assert_eq!(backlog.pending, owed(&backlog));
        assert!(
            backlog.pending <= MAX_PENDING_TRANSMISSIONS,
            "{}",
            backlog.pending
        );
        assert_eq!(MAX_PENDING_TRANSMISSIONS / 10, backlog.len());
        assert!(
            (0..100u32).all(|i| !backlog.live.contains_key(&i)),
            "the items sent already go first"
        );
        assert!(backlog.live.contains_key(&999), "the newest stays");
        // Replacing an item counts what it owed no more.
        backlog.add_or_replace(999, alloc::vec![3u8], 2);
        assert_eq!(backlog.pending, owed(&backlog));
        let mut sent = 0;
        while !backlog.is_empty() {
            let mut buf = Vec::new();
            sent += backlog.fill((&mut buf).limit(1400), usize::MAX);
        }
        assert_eq!(sent, (MAX_PENDING_TRANSMISSIONS / 10 - 1) * 10 + 2);
        assert_eq!(0, backlog.pending);
    }

    // Caravan fork: the urgent lane is sent before items with more
    // transmissions left and newer than it, and the bound drops it last.
    #[test]
    fn keyed_backlog_sends_urgent_items_first_and_drops_them_last() {
        let mut backlog = KeyedBroadcasts::new();
        backlog.add_or_replace_urgent(0u32, alloc::vec![9u8], 2);
        for i in 1..=(MAX_UPDATES_BACKLOG as u32 + 10) {
            backlog.add_or_replace(i, alloc::vec![1u8], 3);
        }
        assert_eq!(MAX_UPDATES_BACKLOG, backlog.len());
        assert!(backlog.live.contains_key(&0), "the urgent item was dropped");
        for _ in 0..2 {
            let mut buf = Vec::new();
            assert_eq!(3, backlog.fill(&mut buf, 3));
            assert_eq!(buf, [9, 1, 1], "the urgent item goes first");
        }
        let mut buf = Vec::new();
        backlog.fill(&mut buf, 3);
        assert_eq!(buf, [1, 1, 1], "sent as many times as asked");
        // Replacing an urgent item with an ordinary one moves it.
        backlog.add_or_replace_urgent(7u32, alloc::vec![8u8], 1);
        backlog.add_or_replace(7u32, alloc::vec![2u8], 1);
        let mut buf = Vec::new();
        backlog.fill(&mut buf, 1);
        assert_eq!(buf, [1], "the replaced urgent item is not sent");
    }

    #[test]
    fn keyed_backlog_gives_back_the_room_of_drained_buckets() {
        let mut backlog = KeyedBroadcasts::new();
        for i in 0..1000u32 {
            backlog.add_or_replace(i, alloc::vec![7u8; 20], 4);
        }
        // Drain it a packet at a time: every item passes through every bucket.
        let mut sent = 0;
        while !backlog.is_empty() {
            let mut buf = Vec::new();
            sent += backlog.fill((&mut buf).limit(1400), usize::MAX);
        }
        assert_eq!(sent, 1000 * 4);
        let buckets = &backlog.lanes[NORMAL];
        let room: usize = buckets.iter().map(VecDeque::capacity).sum();
        assert!(
            room <= 8 * buckets.len(),
            "{room} slots kept by {} empty buckets",
            buckets.len()
        );
    }

    #[test]
    fn fill_does_nothing_if_buffer_full() {
        let mut piggyback = Broadcasts::new();
        piggyback.add_or_replace(Key("a "), b"a super long value".to_vec(), 1);

        let buf = bytes::BytesMut::new();
        let mut limited = buf.limit(5);

        let num_items = piggyback.fill(&mut limited, usize::MAX);

        assert_eq!(0, num_items);
        assert_eq!(5, limited.remaining_mut());
        assert_eq!(1, piggyback.len());
    }

    #[test]
    fn piggyback_consumes_largest_first() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("00"), b"00hi".to_vec(), max_tx);
        piggyback.add_or_replace(Key("01"), b"01hello".to_vec(), max_tx);
        piggyback.add_or_replace(Key("02"), b"02hey".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, usize::MAX);

        assert_eq!(3, num_items);
        assert_eq!(b"01hello02hey00hi", &buf[..]);
    }

    #[test]
    fn highest_max_tx_is_consumed_first() {
        let mut piggyback = Broadcasts::new();

        // 3 items, same byte size, distinct max_tx
        piggyback.add_or_replace(Key("10"), b"100".to_vec(), 1);
        piggyback.add_or_replace(Key("20"), b"200".to_vec(), 2);
        piggyback.add_or_replace(Key("30"), b"300".to_vec(), 3);

        let mut buf = Vec::new();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200100", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300200", &buf[..]);

        buf.clear();
        piggyback.fill(&mut buf, usize::MAX);
        assert_eq!(b"300", &buf[..]);

        assert_eq!(0, piggyback.len());
    }

    #[test]
    fn piggyback_respects_limit() {
        let max_tx = 10;
        let mut piggyback = Broadcasts::new();

        piggyback.add_or_replace(Key("fo"), b"foo".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"bar".to_vec(), max_tx);
        piggyback.add_or_replace(Key("ba"), b"baz".to_vec(), max_tx);

        let mut buf = Vec::new();
        let num_items = piggyback.fill(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = piggyback.fill(&mut buf, 2);
        assert_eq!(2, num_items);
    }

    #[test]
    fn fill_with_len_prefix() {
        let mut bcs = Broadcasts::new();

        bcs.add_or_replace(Key("fo"), b"foo".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"barr".to_vec(), 10);
        bcs.add_or_replace(Key("ba"), b"bazz".to_vec(), 10);

        let mut buf = Vec::new();
        let num_items = bcs.fill_with_len_prefix(&mut buf, 0);

        assert_eq!(0, num_items);
        assert!(buf.is_empty());

        let num_items = bcs.fill_with_len_prefix(&mut buf, 2);
        assert_eq!(2, num_items);

        use bytes::Buf;
        let mut buf = &buf[..];
        assert_eq!(4, buf.get_u16());
        assert_eq!(&b"bazz"[..], &buf[..4]);
        buf.advance(4);
        assert_eq!(3, buf.get_u16());
        assert_eq!(&b"foo"[..], &buf[..3]);
        buf.advance(3);
        assert!(buf.is_empty());
    }
}
