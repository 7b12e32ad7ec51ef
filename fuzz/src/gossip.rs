//! Gossip datagrams and member-list streams through the real [`Node`], with and without a key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use caravan_gossip::foca::{Header, Member};
use caravan_gossip::wire::{
    Broadcast, Cipher, KIND_FOCA, KIND_STATE, KIND_SYNC, KIND_TAGS_PUSH, StateMsg, TagsMsg,
};
use caravan_gossip::{Node, NodeConfig, NodeId, NodeTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The node under test.
const SELF: ([u8; 4], u16) = ([10, 0, 0, 1], 4648);
/// A peer: the source of "member" datagrams (it joins at the start of every input).
const PEER: ([u8; 4], u16) = ([10, 0, 0, 2], 4648);
/// A stranger.
const STRANGER: ([u8; 4], u16) = ([10, 0, 9, 9], 4648);
/// The gossip key of the sealed node.
pub const KEY: [u8; 32] = *b"caravan fuzz gossip key 32 bytes";
/// The most operations one input runs.
const MAX_OPS: usize = 64;
/// Timers fired per timer operation, at most.
const MAX_TIMERS: usize = 64;

/// A node at `addr` (named after it), with or without [`KEY`].
pub fn node(addr: SocketAddr, sealed: bool) -> Node {
    let mut cfg = NodeConfig::new(format!("n{}.global", addr.ip()), addr, 8);
    cfg.tags = Some(BTreeMap::from([("role".to_string(), "nomad".to_string())]));
    cfg.key = sealed.then(|| KEY.to_vec());
    match Node::new(cfg, 7, Duration::from_secs(1)) {
        Ok(node) => node,
        Err(e) => panic!("a gossip node does not start: {e}"),
    }
}

/// Gossip as the UDP driver and the stream acceptor feed it.
///
/// The input is a sequence of operations `[op][len: u16 BE][payload]`. `op & 7` is what
/// arrives: 0 a datagram from the peer's address, 1 a datagram from a stranger's, 2 a member
/// list on a stream the peer opened, 3 the reply to an exchange this node started with the
/// peer, 4 time passing (the node's pending timers fire, 1 s apart). With `op & 8` the
/// operation goes to a node with a gossip key and the payload is sealed with it first, so the
/// decoders behind decryption are reached; with `op & 24 == 16` an unsealed payload goes to the
/// sealed node.
///
/// Invariant: no panic, whatever arrives; a sealed node decodes nothing that is not sealed with
/// its key (its member list and counters other than the drop counters do not move); and every
/// wire message the (plain) payload holds that decodes, encodes back to bytes that decode to the
/// same value (decode → encode → decode round trip, see [`wire_round_trips`]).
pub fn gossip(data: &[u8]) {
    let self_addr = SocketAddr::from(SELF);
    let peer = SocketAddr::from(PEER);
    let stranger = SocketAddr::from(STRANGER);
    let mut open = node(self_addr, false);
    let mut sealed = node(self_addr, true);
    let cipher = match Cipher::new(&KEY) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz key is refused: {e}"),
    };
    let mut now = Duration::from_secs(1);
    let mut rest = data;
    for _ in 0..MAX_OPS {
        let [op, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        now += Duration::from_millis(10);
        wire_round_trips(op & 7, payload);
        let raw_to_sealed = op & 24 == 16;
        let target = if op & 8 != 0 || raw_to_sealed {
            &mut sealed
        } else {
            &mut open
        };
        let payload = if op & 8 != 0 {
            match cipher.seal(payload) {
                Ok(p) => p,
                Err(_) => continue,
            }
        } else {
            payload.to_vec()
        };
        let before = raw_to_sealed.then(|| (target.members(), target.counters()));
        match op & 7 {
            0 => drop(target.handle_packet(peer, &payload, now)),
            1 => drop(target.handle_packet(stranger, &payload, now)),
            2 => drop(target.handle_stream(SocketAddr::new(peer.ip(), 40000), &payload, now)),
            3 => drop(target.handle_stream_reply(peer, &payload, now)),
            4 => fire_timers(target, &mut now),
            _ => {}
        }
        if let Some((members, counters)) = before
            && op & 7 < 4
        {
            let after = target.counters();
            assert_eq!(
                target.members(),
                members,
                "an unsealed payload changed the members"
            );
            assert_eq!(
                (
                    after.malformed,
                    after.spoofed,
                    after.unknown_sender,
                    after.rejected
                ),
                (
                    counters.malformed,
                    counters.spoofed,
                    counters.unknown_sender,
                    counters.rejected
                ),
                "an unsealed payload was decoded by a sealed node"
            );
        }
        let _ = target.drain();
    }
}

/// The round trip of every message a node decodes from `plain` as operation `op` brings it
/// (0 and 1 a datagram, 2 and 3 a stream frame), with the node's framing: a foca packet's
/// header, each member update and each custom broadcast ([`Broadcast`], `[u16 length][item]`
/// after the updates); a pushed [`TagsMsg`]; an anti-entropy sync's entries and clock; a
/// [`StateMsg`] frame. Each must decode, from what it encodes to, to the same value.
pub fn wire_round_trips(op: u8, plain: &[u8]) {
    match (op, plain) {
        (0 | 1, [KIND_FOCA, packet @ ..]) => {
            let Some(after) = round_trip::<Header<NodeId>>("a foca header", packet) else {
                return;
            };
            let [hi, lo, updates @ ..] = after else {
                return;
            };
            let mut rest = updates;
            for _ in 0..u16::from_be_bytes([*hi, *lo]) {
                match round_trip::<Member<NodeId>>("a member update", rest) {
                    Some(next) => rest = next,
                    None => return,
                }
            }
            while let [hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some((item, next)) = tail.split_at_checked(len) else {
                    return;
                };
                if let Ok(b) = Broadcast::decode(item) {
                    let again = b.encode().and_then(|bytes| Broadcast::decode(&bytes));
                    assert_eq!(
                        again.as_ref().ok(),
                        Some(&b),
                        "a broadcast decoded, encoded and decoded again is another"
                    );
                }
                rest = next;
            }
        }
        (0 | 1, [KIND_TAGS_PUSH, msg @ ..]) => {
            round_trip::<TagsMsg>("a tags push", msg);
        }
        (0 | 1, [KIND_SYNC, _want, entries @ ..]) => {
            if let Some(tail) = round_trip::<Vec<(NodeId, u16)>>("a sync's entries", entries) {
                round_trip::<Option<u64>>("a sync's clock", tail);
            }
        }
        (2 | 3, [KIND_STATE, want, msg @ ..]) if *want <= 1 => {
            round_trip::<StateMsg>("a state frame", msg);
        }
        _ => {}
    }
}

/// Decodes a `T` from the front of `bytes` as the node does (postcard); when it decodes, checks
/// that it encodes to bytes that decode to the same value, all of them taken. What followed it.
fn round_trip<'a, T>(what: &str, bytes: &'a [u8]) -> Option<&'a [u8]>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).ok()?;
    let printed = match postcard::to_stdvec(&value) {
        Ok(p) => p,
        Err(e) => panic!("{what} decoded ({value:?}) does not encode: {e}"),
    };
    match postcard::from_bytes::<T>(&printed) {
        Ok(again) => assert_eq!(
            again, value,
            "{what} decoded, encoded and decoded again is another"
        ),
        Err(e) => panic!("{what} decoded ({value:?}) encodes to bytes that do not decode: {e}"),
    }
    Some(rest)
}

/// Fires the timers the node asked for (at most [`MAX_TIMERS`]), advancing the clock.
fn fire_timers(node: &mut Node, now: &mut Duration) {
    let mut timers: Vec<(Duration, NodeTimer)> = node.drain().timers;
    timers.sort_by_key(|(after, _)| *after);
    for (after, timer) in timers.into_iter().take(MAX_TIMERS) {
        *now += after.min(Duration::from_secs(1));
        node.handle_timer(timer, *now);
    }
}

/// Seed inputs: the datagrams a real peer sends when it joins the node, and the list frames
/// of a real exchange, as operations of this target.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sealed in [false, true] {
        let self_addr = SocketAddr::from(SELF);
        let mut joiner = node(SocketAddr::from(PEER), sealed);
        let mut target = node(self_addr, sealed);
        let now = Duration::from_secs(1);
        if joiner.join(self_addr, now).is_err() {
            continue;
        }
        let mut ops = Vec::new();
        let flag = if sealed { 8 } else { 0 };
        let plain = |bytes: &[u8]| -> Vec<u8> {
            if sealed {
                Cipher::new(&KEY)
                    .ok()
                    .and_then(|c| c.open(bytes))
                    .unwrap_or_default()
            } else {
                bytes.to_vec()
            }
        };
        let output = joiner.drain();
        for (to, packet) in &output.packets {
            if *to == self_addr {
                push_op(&mut ops, flag, &plain(packet));
                let _ = target.handle_packet(SocketAddr::from(PEER), packet, now);
            }
        }
        for stream in &output.streams {
            push_op(&mut ops, flag | 2, &plain(&stream.body));
            if let Ok(Some(reply)) = target.handle_stream(
                SocketAddr::new(SocketAddr::from(PEER).ip(), 40000),
                &stream.body,
                now,
            ) {
                push_op(&mut ops, flag | 3, &plain(&reply));
            }
        }
        // The target's answers, as if they came back from the peer.
        for (to, packet) in target.drain().packets {
            if to == SocketAddr::from(PEER) {
                push_op(&mut ops, flag, &plain(&packet));
            }
        }
        push_op(&mut ops, flag | 4, &[]);
        // An anti-entropy round whose digests differ (the peer knows 20 members the target does
        // not, so the lists fall in several buckets): the target's digest ask answered by the
        // peer with its sums per bucket (which the target replays as the reply), then the
        // target's list of the differing buckets.
        let others = (3..23u8).map(|i| {
            let at = SocketAddr::from(([10, 0, 0, i], 4648));
            NodeId::new(at, &format!("n{}.global", at.ip()), 1)
        });
        joiner.learn(others, now);
        let _ = joiner.drain();
        let _ = target.drain();
        target.handle_timer(NodeTimer::Sync, now);
        for ask in target.drain().streams {
            let Ok(Some(answer)) =
                joiner.handle_stream(SocketAddr::new(self_addr.ip(), 40000), &ask.body, now)
            else {
                continue;
            };
            push_op(&mut ops, flag | 3, &plain(&answer));
            let _ = target.handle_stream_reply(SocketAddr::from(PEER), &answer, now);
            let _ = target.drain();
        }
        // The same round led by the peer: its list of the buckets that differ from the
        // target's sums, on a stream it opened.
        joiner.handle_timer(NodeTimer::Sync, now);
        for ask in joiner.drain().streams {
            let Ok(Some(answer)) = target.handle_stream(
                SocketAddr::new(SocketAddr::from(PEER).ip(), 40000),
                &ask.body,
                now,
            ) else {
                continue;
            };
            if joiner.handle_stream_reply(self_addr, &answer, now).is_ok() {
                for follow in joiner.drain().streams {
                    push_op(&mut ops, flag | 2, &plain(&follow.body));
                }
            }
        }
        out.push(ops);
    }
    out
}

fn push_op(ops: &mut Vec<u8>, op: u8, payload: &[u8]) {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    ops.push(op);
    ops.extend_from_slice(&len.to_be_bytes());
    ops.extend_from_slice(&payload[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_codecs::{Lossy, panics};

    /// The seeds reach the anti-entropy round whose digests differ: after the join's
    /// operations and time passing, a reply from the peer (its sums per bucket) and a list the
    /// peer sends of the differing buckets.
    #[test]
    fn the_seeds_hold_a_digest_round_whose_lists_differ() {
        for seed in seeds() {
            let mut ops = Vec::new();
            let mut rest = seed.as_slice();
            while let [op, hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                ops.push(*op & 7);
                rest = tail.get(len..).unwrap_or_default();
            }
            let after_time = ops.iter().position(|op| *op & 7 == 4).expect("time passes");
            let round: Vec<u8> = ops[after_time + 1..].iter().map(|op| op & 7).collect();
            assert_eq!(round, [3, 2], "operations {ops:?}");
        }
        // In the unsealed seed, the reply's sums and the list's buckets are several.
        let seed = &seeds()[0];
        let mut payloads = Vec::new();
        let mut rest = seed.as_slice();
        while let [op, hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            payloads.push((*op, tail.get(..len).unwrap_or_default().to_vec()));
            rest = tail.get(len..).unwrap_or_default();
        }
        let n = payloads.len();
        let (sums, _, _) = buckets_part(&payloads[n - 2].1);
        let (_, of, wanted) = buckets_part(&payloads[n - 1].1);
        assert!(sums.len() > 1, "{} sums", sums.len());
        assert!(
            of > 1 && !wanted.is_empty(),
            "{of} buckets, {wanted:?} wanted"
        );
    }

    /// The `Buckets` part that trails a state frame's digest: sums, count, wanted.
    fn buckets_part(frame: &[u8]) -> (Vec<[u8; 4]>, u32, Vec<u32>) {
        let rest = &frame[2..];
        let (_, rest): (StateMsg, _) = postcard::take_from_bytes(rest).expect("state");
        let (_, rest): ((bool, Vec<TagsMsg>), _) = postcard::take_from_bytes(rest).expect("extra");
        let (_, rest): (caravan_gossip::ListDigest, _) =
            postcard::take_from_bytes(rest).expect("digest");
        postcard::from_bytes(rest).expect("buckets")
    }

    #[test]
    fn the_round_trip_check_fails_a_codec_that_encodes_otherwise() {
        // (what, bytes, whether the check must fail)
        let rows: [(&str, &dyn Fn(), bool); 4] = [
            (
                "a faithful u8",
                &|| {
                    let _ = round_trip::<u8>("u8", &[7]);
                },
                false,
            ),
            (
                "a lossy u8",
                &|| {
                    let _ = round_trip::<Lossy>("lossy", &[7]);
                },
                true,
            ),
            (
                "nothing decodes",
                &|| {
                    let _ = round_trip::<Lossy>("lossy", &[]);
                },
                false,
            ),
            (
                "the seeds' messages",
                &|| {
                    for seed in seeds() {
                        gossip(&seed);
                    }
                },
                false,
            ),
        ];
        for (what, f, fails) in rows {
            assert_eq!(panics(f), fails, "{what}");
        }
    }

    #[test]
    fn the_seeds_reach_every_message_kind_a_round_trip_checks() {
        // The seeds' payloads, as the target splits them, hold each framing wire_round_trips
        // reads: a foca packet (header and updates), a tags push or sync, a state frame.
        let mut kinds = std::collections::BTreeSet::new();
        for seed in seeds() {
            let mut rest = seed.as_slice();
            while let [op, hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                let (payload, after) = tail.split_at(len);
                if let Some(kind) = payload.first() {
                    kinds.insert((op & 7, *kind));
                }
                rest = after;
            }
        }
        assert!(kinds.contains(&(0, KIND_FOCA)), "{kinds:?}");
        assert!(kinds.contains(&(2, KIND_STATE)), "{kinds:?}");
    }
}
