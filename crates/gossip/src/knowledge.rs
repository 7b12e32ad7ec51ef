//! What a node has learned from custom broadcasts (tags and intents), shared between foca's
//! broadcast handler and the [`crate::Node`] that reads it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::GossipError;
use crate::identity::NodeId;
use crate::wire::{Broadcast, BroadcastKey, IntentMsg, TagsMsg};

/// Tags and intents by member name, the Lamport clock, and new items the node has yet to apply.
#[derive(Debug, Default)]
pub struct Knowledge {
    /// Latest tags per member.
    pub tags: HashMap<String, TagsMsg>,
    /// Bumped whenever `tags` changes (so drivers republish at once).
    pub tags_version: u64,
    /// Latest intent per member.
    pub intents: HashMap<String, IntentMsg>,
    /// Lamport clock: at least every intent time seen.
    pub ltime: u64,
    /// Intents learned since the node last looked.
    pub fresh_intents: Vec<IntentMsg>,
}

impl Knowledge {
    /// Records tags; `true` when they are newer than what was known.
    pub fn learn_tags(&mut self, msg: TagsMsg) -> bool {
        match self.tags.get(&msg.name) {
            Some(known) if !msg.newer_than(known) => false,
            _ => {
                self.tags.insert(msg.name.clone(), msg);
                self.tags_version += 1;
                true
            }
        }
    }

    /// Records an intent; `true` when it is newer than what was known about that member.
    pub fn learn_intent(&mut self, msg: IntentMsg) -> bool {
        self.ltime = self.ltime.max(msg.ltime);
        match self.intents.get(&msg.name) {
            Some(known) if known.ltime >= msg.ltime => false,
            _ => {
                self.intents.insert(msg.name.clone(), msg.clone());
                self.fresh_intents.push(msg);
                true
            }
        }
    }
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
        let mut k = self.shared.lock();
        Ok(match Broadcast::decode(data)? {
            Broadcast::Tags(t) => {
                let key = BroadcastKey::Tags(t.name.clone(), t.generation, t.version);
                // Our own tags are always (re)sent; others' only when they are news.
                (k.learn_tags(t) || local).then_some(key)
            }
            Broadcast::Intent(i) => {
                let key = BroadcastKey::Intent(i.name.clone(), i.ltime);
                k.learn_intent(i).then_some(key)
            }
        })
    }
}
