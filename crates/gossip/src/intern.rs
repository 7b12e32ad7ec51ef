//! A process-wide set of shared values, so equal values decoded anywhere in the process (by any
//! node a process runs) are one allocation: identities ([`crate::identity::NodeId`]) and tag
//! messages. The set is [`SHARDS`] tables by hash, each behind its own lock, so threads decoding
//! at once (the simulator runs nodes on every core) seldom wait on each other. Values nobody
//! else holds any more are swept, amortised O(1).

use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::Mutex;

/// Tables of an [`Interner`].
const SHARDS: usize = 16;

/// A set of shared `T`s, found by a hash the caller computes with [`Interner::hasher`].
pub(crate) struct Interner<T> {
    shards: [Mutex<Shard<T>>; SHARDS],
    hasher: DefaultHashBuilder,
}

struct Shard<T> {
    values: HashTable<Arc<T>>,
    /// Size after the last sweep; the next sweep comes when the table has doubled.
    swept_at: usize,
}

impl<T> Interner<T> {
    pub(crate) fn new() -> Interner<T> {
        Interner {
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    values: HashTable::new(),
                    swept_at: 0,
                })
            }),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The hasher every hash given to this set is computed with.
    pub(crate) fn hasher(&self) -> &DefaultHashBuilder {
        &self.hasher
    }

    /// The shard a hash falls in: middle bits (a table uses the low ones for its buckets and
    /// the top seven for its control bytes).
    fn shard(&self, hash: u64) -> &Mutex<Shard<T>> {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The shared value with this hash that `eq` accepts, if the set holds one.
    pub(crate) fn find(&self, hash: u64, eq: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        self.shard(hash)
            .lock()
            .values
            .find(hash, |v| eq(v))
            .cloned()
    }

    /// The shared value with this hash that `eq` accepts for `key`, or else `make(key)`, shared
    /// from now on (`rehash` gives a held value's hash when the table grows). Nothing is made
    /// when the set holds the value already.
    pub(crate) fn get_or_insert<K>(
        &self,
        hash: u64,
        key: K,
        eq: impl Fn(&T, &K) -> bool,
        make: impl FnOnce(K) -> T,
        rehash: impl Fn(&T) -> u64,
    ) -> Arc<T> {
        let mut shard = self.shard(hash).lock();
        if let Some(known) = shard.values.find(hash, |v| eq(v, &key)) {
            return known.clone();
        }
        // Forget values nobody holds any more (restarted members' old generations, older tag
        // versions); nobody can take a new hold on one meanwhile: that goes through this lock.
        if shard.values.len() >= 2 * shard.swept_at.max(512) {
            shard.values.retain(|v| Arc::strong_count(v) > 1);
            shard.swept_at = shard.values.len();
        }
        let shared = Arc::new(make(key));
        shard
            .values
            .insert_unique(hash, shared.clone(), |v| rehash(v));
        shared
    }

    /// Values held, over every shard.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().values.len()).sum()
    }
}
