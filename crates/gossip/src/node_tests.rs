//! Attacks from the security review (H2, H4, L2) replayed through a real [`Node`]: forged bytes
//! fed to `handle_packet`, as `forge_tags.py`, `intent_max.py` and `sync_flood.py` send them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use caravan_agent_core::member::MemberStatus;
use foca::{Header, Member, Message};

use super::*;
use crate::exchange::{ListDigest, StreamPurpose, StreamRequest};
use crate::wire::{IntentKind, IntentMsg, KIND_FOCA, KIND_SYNC, KIND_TAGS_PULL, KIND_TAGS_PUSH};

const T0: Duration = Duration::from_secs(1);

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 4648))
}

fn name(i: u8) -> String {
    format!("n{i}.global")
}

fn id(i: u8) -> NodeId {
    NodeId::new(addr(i), &name(i), 7)
}

/// A stranger's address: not a member of anything.
fn evil() -> SocketAddr {
    SocketAddr::from(([10, 0, 1, 66], 4648))
}

fn evil_id() -> NodeId {
    NodeId::new(evil(), "evil.global", 1)
}

fn node(i: u8) -> Node {
    let mut cfg = NodeConfig::new(name(i), addr(i), 3);
    cfg.generation = 7;
    cfg.tags = Some(BTreeMap::from([("role".into(), "nomad".into())]));
    let mut node = Node::new(cfg, u64::from(i), Duration::ZERO).expect("node");
    let _ = node.drain();
    node
}

/// Node 1 knowing nodes 2..=n as alive.
fn pool(n: u8) -> Node {
    let mut a = node(1);
    a.learn((2..=n).map(id), T0);
    let _ = a.drain();
    a
}

fn tags_push(name: &str, generation: u64, version: u64, port: &str) -> Vec<u8> {
    let msg = TagsMsg {
        name: name.into(),
        generation,
        version,
        tags: BTreeMap::from([("port".into(), port.into())]),
    };
    let mut out = vec![KIND_TAGS_PUSH];
    out.extend(postcard::to_stdvec(&msg).expect("encode"));
    out
}

pub(crate) fn foca_packet(
    src: &NodeId,
    dst: &NodeId,
    message: Message<NodeId>,
    updates: &[Member<NodeId>],
    broadcasts: &[Vec<u8>],
) -> Vec<u8> {
    let header = Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: dst.clone(),
        message,
    };
    let broadcast = header.message == Message::Broadcast;
    let mut out = vec![KIND_FOCA];
    out.extend(postcard::to_stdvec(&header).expect("encode"));
    if !broadcast && (!updates.is_empty() || !broadcasts.is_empty()) {
        out.extend((updates.len() as u16).to_be_bytes());
        for u in updates {
            out.extend(postcard::to_stdvec(u).expect("encode"));
        }
    }
    for b in broadcasts {
        out.extend((b.len() as u16).to_be_bytes());
        out.extend(b);
    }
    out
}

pub(crate) fn prune_intent(victim: &str, ltime: u64) -> Vec<u8> {
    Broadcast::Intent(IntentMsg {
        name: victim.into(),
        ltime,
        kind: IntentKind::Leave,
        prune: true,
    })
    .encode()
    .expect("encode")
}

fn port_tag(node: &Node, member: &str) -> Option<String> {
    node.members()
        .into_iter()
        .find(|m| m.name == member)
        .and_then(|m| m.tags?.get("port").cloned())
}

fn sent_to(out: &Output, to: SocketAddr) -> usize {
    out.packets.iter().filter(|(a, _)| *a == to).count()
}

#[test]
fn forged_tags_for_a_known_member_do_not_replace_its_tags() {
    let mut a = pool(3);
    let victim = name(2);
    let _ = a.handle_packet(addr(2), &tags_push(&victim, 7, 1, "4647"), T0);
    assert_eq!(port_tag(&a, &victim).as_deref(), Some("4647"));

    // forge_tags.py: (u64::MAX, u64::MAX) from the attacker's own address...
    let _ = a.handle_packet(evil(), &tags_push(&victim, u64::MAX, u64::MAX, "29997"), T0);
    // ...from the victim's address but with a generation the victim does not have...
    let _ = a.handle_packet(
        addr(2),
        &tags_push(&victim, u64::MAX, u64::MAX, "29997"),
        T0,
    );
    // ...with the right generation but a version the victim could never overtake...
    let _ = a.handle_packet(addr(2), &tags_push(&victim, 7, u64::MAX, "29997"), T0);
    // ...and relayed as a custom broadcast by another member.
    let relayed = Broadcast::Tags(TagsMsg {
        name: victim.clone(),
        generation: u64::MAX,
        version: u64::MAX,
        tags: BTreeMap::from([("port".into(), "29997".into())]),
    })
    .encode()
    .expect("encode");
    let packet = foca_packet(&id(3), a.identity(), Message::Broadcast, &[], &[relayed]);
    let _ = a.handle_packet(addr(3), &packet, T0);
    assert_eq!(port_tag(&a, &victim).as_deref(), Some("4647"));
    assert!(a.counters().rejected >= 4, "{:?}", a.counters());

    // The real member can still publish.
    let _ = a.handle_packet(addr(2), &tags_push(&victim, 7, 2, "4700"), T0);
    assert_eq!(port_tag(&a, &victim).as_deref(), Some("4700"));
}

#[test]
fn a_prune_intent_at_u64_max_neither_evicts_nor_wraps_the_clock() {
    // intent_max.py: announce to learn the target, then a Leave(prune) at 2^64-1.
    let mut a = pool(3);
    let mut victim = pool(3);
    let victim_name = name(1);
    let announce = foca_packet(
        &evil_id(),
        &NodeId::placeholder(addr(1)),
        Message::Announce,
        &[],
        &[],
    );
    for n in [&mut a, &mut victim] {
        let _ = n.handle_packet(evil(), &announce, T0);
        let _ = n.drain();
    }
    // `a` is node 1 too in `pool`; speak about node 2 to `a` and about node 1 to its victim.
    let about_2 = foca_packet(
        &evil_id(),
        a.identity(),
        Message::Broadcast,
        &[],
        &[prune_intent(&name(2), u64::MAX)],
    );
    let _ = a.handle_packet(evil(), &about_2, T0);
    let _ = a.drain();
    assert_eq!(a.status_of(&name(2)), Some(MemberStatus::Alive));
    assert_eq!(a.stats()["member_time"], "0");

    // The victim hears the same about itself: it must not adopt the time (its refutation would
    // be u64::MAX + 1: a panic in debug, 0 in release).
    let about_me = foca_packet(
        &evil_id(),
        victim.identity(),
        Message::Broadcast,
        &[],
        &[prune_intent(&victim_name, u64::MAX)],
    );
    let _ = victim.handle_packet(evil(), &about_me, T0);
    let _ = victim.drain();
    assert_eq!(victim.stats()["member_time"], "0");
    assert!(victim.counters().rejected >= 1);
}

#[test]
fn a_foca_packet_whose_claimed_source_is_not_the_sender_is_dropped() {
    let mut a = pool(2);
    // Claims to come from node 9 (unknown) but arrives from the attacker's address.
    let packet = foca_packet(&id(9), a.identity(), Message::Gossip, &[], &[]);
    assert!(a.handle_packet(evil(), &packet, T0).is_err());
    assert_eq!(a.counters().spoofed, 1);
    assert_eq!(a.status_of(&name(9)), None);
    // The same packet from node 9's own address is accepted.
    let _ = a.handle_packet(addr(9), &packet, T0);
    assert_eq!(a.status_of(&name(9)), Some(MemberStatus::Alive));
}

#[test]
fn a_strangers_foca_packet_introduces_at_most_64_members() {
    let mut a = pool(2);
    let fakes: Vec<Member<NodeId>> = (0..80u32)
        .map(|i| {
            let at = SocketAddr::from(([127, 100, (i >> 8) as u8, i as u8], 4648));
            Member::alive(NodeId::new(at, &format!("f{i}"), 1))
        })
        .collect();
    let packet = foca_packet(&evil_id(), a.identity(), Message::Gossip, &fakes, &[]);
    assert!(packet.len() < MAX_DATAGRAM, "{} bytes", packet.len());
    let _ = a.handle_packet(evil(), &packet, T0);
    // Node 2, the sender, and at most 64 of its updates.
    assert!(
        a.num_active() <= 2 + MAX_UNKNOWN_INTRODUCTIONS,
        "{} active",
        a.num_active()
    );
    assert!(a.num_active() > 2, "the capped packet was still applied");
    // Once a member, the sender's updates are no longer capped (as any member's).
    let _ = a.handle_packet(evil(), &packet, T0);
    assert_eq!(a.num_active(), 2 + 80);
}

#[test]
fn a_sync_flood_from_a_stranger_admits_at_most_64_members() {
    // sync_flood.py: 20,000 fake members, 45 per datagram, from one address never announced.
    let mut a = pool(3);
    let mut n = 0u32;
    let from = SocketAddr::from(([10, 0, 1, 66], 40000));
    let mut replies = 0;
    while n < 20_000 {
        let batch: Vec<(NodeId, u16)> = (n..n + 45)
            .map(|i| {
                let ip = [127, 100 + ((i >> 16) % 100) as u8, (i >> 8) as u8, i as u8];
                let at = SocketAddr::from((ip, 4648));
                (NodeId::new(at, &format!("fake{i:07}.global"), 1), 0u16)
            })
            .collect();
        n += 45;
        let mut packet = vec![KIND_SYNC, 0];
        packet.extend(postcard::to_stdvec(&batch).expect("encode"));
        let _ = a.handle_packet(from, &packet, T0);
        replies += sent_to(&a.drain(), from);
    }
    let listed = a.members().len();
    assert!(
        listed <= 3 + MAX_UNKNOWN_INTRODUCTIONS,
        "{listed} members listed"
    );
    assert_eq!(replies, 0);
    assert!(a.counters().unknown_sender >= 400);
}

#[test]
fn a_three_byte_sync_from_a_stranger_gets_no_reply() {
    let mut a = pool(200);
    // [KIND_SYNC, want_reply, 0 entries]: 3 bytes that used to bring the whole list back.
    let request = [KIND_SYNC, 1, 0];
    let _ = a.handle_packet(evil(), &request, T0);
    let out = a.drain();
    assert_eq!(sent_to(&out, evil()), 0, "{} datagrams", out.packets.len());
    // A member asking the same gets the list, in several datagrams.
    let _ = a.handle_packet(addr(2), &request, T0);
    assert!(sent_to(&a.drain(), addr(2)) > 1);
}

#[test]
fn tag_pulls_are_answered_only_to_members() {
    let mut a = pool(2);
    let _ = a.handle_packet(evil(), &[KIND_TAGS_PULL], T0);
    assert_eq!(sent_to(&a.drain(), evil()), 0);
    let _ = a.handle_packet(addr(2), &[KIND_TAGS_PULL], T0);
    assert_eq!(sent_to(&a.drain(), addr(2)), 1);
}

#[test]
fn a_joins_sync_that_overtakes_its_announce_is_answered_once_the_joiner_is_known() {
    let mut a = pool(120);
    let mut j = node(200);
    j.join(addr(1), T0).expect("join");
    let mut out = j.drain();
    // The list goes over a stream; when none can be opened, by datagrams.
    assert_eq!(out.streams.len(), 1);
    assert_eq!(out.streams[0].to, addr(1));
    j.stream_failed(addr(1), T0);
    out.packets.extend(j.drain().packets);
    let to_a: Vec<Vec<u8>> = out
        .packets
        .into_iter()
        .filter(|(to, _)| *to == addr(1))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        to_a.len(),
        2,
        "an announce and a sync: {:?}",
        to_a.iter().map(|p| (p[0], p.len())).collect::<Vec<_>>()
    );
    assert_eq!(to_a[0][0], KIND_FOCA);
    assert_eq!(to_a[1][0], KIND_SYNC);
    // The sync arrives first: nothing yet.
    let _ = a.handle_packet(addr(200), &to_a[1], T0);
    let early = a.drain();
    assert_eq!(
        sent_to(&early, addr(200)),
        0,
        "{:?}",
        early.packets.iter().map(|(_, p)| p[0]).collect::<Vec<_>>()
    );
    // Then the announce: the feed and the whole list.
    let _ = a.handle_packet(addr(200), &to_a[0], T0);
    let replies: Vec<Vec<u8>> = a
        .drain()
        .packets
        .into_iter()
        .filter(|(to, _)| *to == addr(200))
        .map(|(_, p)| p)
        .collect();
    // Delivered in reverse too: the list before the feed that makes `a` a member.
    for p in replies.iter().rev() {
        let _ = j.handle_packet(addr(1), p, T0);
    }
    assert_eq!(j.count(MemberStatus::Alive), 121);
}

#[test]
fn reaped_and_pruned_members_leave_no_tags_or_intents() {
    let mut a = pool(4);
    for i in [2, 3] {
        let _ = a.handle_packet(addr(i), &tags_push(&name(i), 7, 1, "1"), T0);
    }
    {
        let k = a.knowledge.lock();
        assert!(k.tags.contains_key(&name(2)) && k.tags.contains_key(&name(3)));
    }
    // Pruned.
    a.force_leave(&name(2), true, T0);
    let _ = a.drain();
    assert_eq!(a.status_of(&name(2)), None);
    assert!(!a.knowledge.lock().tags.contains_key(&name(2)));
    // Failed (node 4 says node 3 is down), force-left, then reaped.
    let down = foca_packet(
        &id(4),
        a.identity(),
        Message::Gossip,
        &[Member::down(id(3))],
        &[],
    );
    let _ = a.handle_packet(addr(4), &down, T0);
    assert_eq!(a.status_of(&name(3)), Some(MemberStatus::Failed));
    a.force_leave(&name(3), false, T0);
    assert_eq!(a.status_of(&name(3)), Some(MemberStatus::Left));
    assert!(a.knowledge.lock().intents.contains_key(&name(3)));
    let later = T0 + a.cfg.tombstone_timeout.max(a.cfg.reconnect_timeout) + T0;
    a.handle_timer(NodeTimer::Reap, later);
    assert_eq!(a.status_of(&name(3)), None);
    let k = a.knowledge.lock();
    for gone in [name(2), name(3)] {
        assert!(!k.tags.contains_key(&gone), "tags of {gone} kept");
        assert!(!k.intents.contains_key(&gone), "intent about {gone} kept");
    }
    assert!(k.tags.contains_key(&name(1)), "own tags kept");
}

#[test]
fn a_late_joiner_catches_up_with_the_pools_clock_through_member_lists() {
    // The pool's clock was pushed far ahead (many intents, or a forger inside the window): a new
    // member must still accept the pool's next intents.
    let mut a = pool(3);
    let pool_clock = 5 * crate::MAX_LTIME_AHEAD;
    a.knowledge.lock().ltime = pool_clock;
    let mut j = node(200);
    j.learn([a.identity().clone()], T0);
    a.learn([j.identity().clone()], T0);
    let _ = (j.drain(), a.drain());
    for round in 1..=5u64 {
        let _ = a.handle_packet(addr(200), &[KIND_SYNC, 1, 0], T0);
        for (to, p) in a.drain().packets {
            if to == addr(200) {
                let _ = j.handle_packet(addr(1), &p, T0);
            }
        }
        assert_eq!(j.knowledge.lock().ltime, round * crate::MAX_LTIME_AHEAD);
    }
    let next = Broadcast::Intent(IntentMsg {
        name: name(2),
        ltime: pool_clock + 1,
        kind: IntentKind::Leave,
        prune: false,
    })
    .encode()
    .expect("encode");
    let packet = foca_packet(a.identity(), j.identity(), Message::Broadcast, &[], &[next]);
    let _ = j.handle_packet(addr(1), &packet, T0);
    assert_eq!(j.knowledge.lock().ltime, pool_clock + 1);
}

/// The first tick of each periodic timer falls at a per-node random point of its interval, the
/// same for the same seed: nodes started together do not all run anti-entropy at once.
#[test]
fn periodic_timers_start_staggered_per_seed() {
    let first_sync = |seed: u64| {
        let cfg = NodeConfig::new(name(1), addr(1), 1000);
        let interval = cfg.sync_interval;
        let mut n = Node::new(cfg, seed, T0).unwrap();
        let timers = n.drain().timers;
        let sync = timers
            .iter()
            .find(|(_, t)| *t == NodeTimer::Sync)
            .map(|(d, _)| *d);
        (sync.unwrap(), interval)
    };
    let firsts: Vec<Duration> = (0..20).map(|s| first_sync(s).0).collect();
    let interval = first_sync(0).1;
    assert!(
        firsts.iter().all(|d| !d.is_zero() && *d <= interval),
        "{firsts:?}"
    );
    let mut distinct = firsts.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), firsts.len(), "{firsts:?}");
    assert_eq!(first_sync(7), first_sync(7));
}

/// A stream's source: the member's IP with an ephemeral port, as TCP connections come.
fn ephemeral(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 51234))
}

fn state_frame(sender: &NodeId, entries: Vec<(NodeId, u16)>) -> Vec<u8> {
    let msg = crate::wire::StateMsg {
        sender: sender.clone(),
        entries,
        ltime: 0,
    };
    let mut frame = vec![crate::wire::KIND_STATE, 1];
    frame.extend(postcard::to_stdvec(&msg).expect("encode"));
    frame
}

#[test]
fn a_join_exchanges_whole_member_lists_over_one_stream_each_way() {
    let mut a = pool(150);
    let mut j = node(200);
    j.join(addr(1), T0).expect("join");
    let out = j.drain();
    // The announce by datagram, the list on a stream, and no list by datagram.
    assert_eq!(sent_to(&out, addr(1)), 1);
    assert_eq!(out.streams.len(), 1);
    let request = &out.streams[0];
    assert_eq!(request.to, addr(1));
    // The stream arrives before the announce: the joiner is introduced by it and answered.
    let reply = a
        .handle_stream(ephemeral(200), &request.body, T0)
        .expect("accepted")
        .expect("a reply");
    assert_eq!(a.status_of(&name(200)), Some(MemberStatus::Alive));
    assert!(reply.len() > 150 * 10, "{} bytes", reply.len());
    j.handle_stream_reply(addr(1), &reply, T0).expect("applied");
    assert_eq!(j.count(MemberStatus::Alive), 151);
    assert_eq!(j.counters().streams_out, 1);
    assert_eq!(a.counters().streams_in, 1);
}

#[test]
fn a_state_frame_whose_sender_is_not_the_streams_source_is_refused() {
    let mut a = pool(3);
    // From 10.0.1.66, claiming to be member 2 at 10.0.0.2, with a list of newcomers.
    let newcomers = (50..60).map(id).collect::<Vec<_>>();
    let entries = newcomers.iter().map(|m| (m.clone(), 0)).collect();
    let frame = state_frame(&id(2), entries);
    let result = a.handle_stream(SocketAddr::from(([10, 0, 1, 66], 40000)), &frame, T0);
    assert!(
        matches!(result, Err(GossipError::Rejected(_))),
        "{result:?}"
    );
    assert_eq!(a.members().len(), 3);
    assert_eq!(a.counters().spoofed, 1);
    // A reply from another member than the one asked is refused too.
    let result = a.handle_stream_reply(addr(3), &frame, T0);
    assert!(
        matches!(result, Err(GossipError::Rejected(_))),
        "{result:?}"
    );
    assert_eq!(a.members().len(), 3);
}

#[test]
fn a_strangers_state_frame_introduces_only_the_stranger() {
    let mut a = pool(3);
    let fakes: Vec<(NodeId, u16)> = (0..500u32)
        .map(|i| {
            let at = SocketAddr::from(([127, 100, (i >> 8) as u8, i as u8], 4648));
            (NodeId::new(at, &format!("fake{i}.global"), 1), 0)
        })
        .collect();
    let frame = state_frame(&evil_id(), fakes);
    let reply = a
        .handle_stream(SocketAddr::new(evil().ip(), 40000), &frame, T0)
        .expect("accepted");
    assert!(reply.is_some(), "answered as a joiner would be");
    assert_eq!(a.members().len(), 4, "only the stranger itself");
    assert_eq!(a.status_of("evil.global"), Some(MemberStatus::Alive));
}

#[test]
fn with_a_key_an_unsealed_state_frame_is_refused_before_decoding() {
    let mut cfg = NodeConfig::new(name(1), addr(1), 3);
    cfg.key = Some(vec![9; 32]);
    let mut a = Node::new(cfg, 1, Duration::ZERO).expect("node");
    let _ = a.drain();
    let frame = state_frame(&evil_id(), vec![]);
    let result = a.handle_stream(SocketAddr::new(evil().ip(), 40000), &frame, T0);
    assert!(matches!(result, Err(GossipError::Crypto)), "{result:?}");
    assert_eq!(a.members().len(), 1);
    assert_eq!(a.counters().decrypt_failures, 1);
    assert_eq!(a.counters().malformed, 0, "refused before any decoding");
}

/// Member `from` tells node 1 that member 3 is suspect (a gossip packet carrying the update).
fn suspicion_of_3_from(a: &mut Node, from: u8) {
    let me = a.identity().clone();
    let update = Member::new(id(3), 0, foca::State::Suspect);
    let packet = foca_packet(&id(from), &me, Message::Gossip, &[update], &[]);
    a.handle_packet(addr(from), &packet, T0).expect("accepted");
}

/// The suspicion deadlines node 1 set for member 3, by the confirmations each needs.
fn suspicion_timers(out: &Output) -> Vec<(Duration, u8, NodeTimer)> {
    let mut timers: Vec<(Duration, u8, NodeTimer)> = out
        .timers
        .iter()
        .filter_map(|(after, t)| match t {
            NodeTimer::Foca(foca::Timer::SuspicionTimeout {
                member_id,
                confirmations,
                ..
            }) if *member_id == id(3) => Some((*after, *confirmations, t.clone())),
            _ => None,
        })
        .collect();
    timers.sort_by_key(|(_, c, _)| *c);
    timers
}

#[test]
fn a_suspicion_heard_from_another_member_is_timed_here_and_ends_in_failed() {
    let mut a = pool(6);
    suspicion_of_3_from(&mut a, 2);
    let timers = suspicion_timers(&a.drain());
    // Lifeguard: one deadline per confirmation count, from 6x the suspicion down to 1x.
    let min = swim_config(3).suspect_to_down_after;
    let deadlines: Vec<(Duration, u8)> = timers.iter().map(|(d, c, _)| (*d, *c)).collect();
    assert_eq!(deadlines.len(), 3, "{deadlines:?}");
    assert_eq!(deadlines[0], (min * 6, 0));
    assert_eq!(deadlines[2], (min, 2));
    assert_eq!(a.status_of(&name(3)), Some(MemberStatus::Alive));
    // Without confirmations, only the longest deadline declares it down.
    a.handle_timer(timers[2].2.clone(), T0 + min);
    assert_eq!(a.status_of(&name(3)), Some(MemberStatus::Alive));
    a.handle_timer(timers[0].2.clone(), T0 + min * 6);
    assert_eq!(a.status_of(&name(3)), Some(MemberStatus::Failed));
}

#[test]
fn independent_confirmations_shorten_a_suspicion() {
    let mut a = pool(6);
    suspicion_of_3_from(&mut a, 2);
    let timers = suspicion_timers(&a.drain());
    // The accuser repeating itself is no confirmation.
    suspicion_of_3_from(&mut a, 2);
    suspicion_of_3_from(&mut a, 4);
    a.handle_timer(timers[2].2.clone(), T0);
    assert_eq!(
        a.status_of(&name(3)),
        Some(MemberStatus::Alive),
        "one confirmation"
    );
    suspicion_of_3_from(&mut a, 5);
    a.handle_timer(timers[2].2.clone(), T0);
    assert_eq!(a.status_of(&name(3)), Some(MemberStatus::Failed), "two");
}

#[test]
fn a_member_whose_probes_go_unanswered_raises_its_health_score_and_probes_more_patiently() {
    let mut a = node(1);
    // Its first probe timer comes out of learning the others (not drained here).
    a.learn((2..=4).map(id), T0);
    let mut pending: Vec<NodeTimer> = Vec::new();
    let mut now = T0;
    let mut indirect_delays = Vec::new();
    // Fire foca's probe timers in turn; nobody ever answers.
    for _ in 0..40 {
        let out = a.drain();
        for (after, t) in out.timers {
            if let NodeTimer::Foca(foca::Timer::SendIndirectProbe { .. }) = &t {
                indirect_delays.push(after);
            }
            if matches!(
                t,
                NodeTimer::Foca(
                    foca::Timer::ProbeRandomMember(_) | foca::Timer::SendIndirectProbe { .. }
                )
            ) {
                pending.push(t);
            }
        }
        let Some(t) = (!pending.is_empty()).then(|| pending.remove(0)) else {
            break;
        };
        now += Duration::from_millis(500);
        a.handle_timer(t, now);
    }
    let score: u32 = a.stats()["health_score"].parse().expect("a number");
    assert_eq!(score, 8, "every probe failed: the score is at its ceiling");
    let rtt = swim_config(3).probe_rtt;
    assert_eq!(indirect_delays.first(), Some(&rtt));
    assert_eq!(
        indirect_delays.last(),
        Some(&(rtt * 9)),
        "{indirect_delays:?}"
    );
}

/// The foca header of a packet node output holds (after the envelope byte).
fn header_of(packet: &[u8]) -> Header<NodeId> {
    let (header, _): (Header<NodeId>, _) =
        postcard::take_from_bytes(&packet[1..]).expect("a foca packet");
    header
}

#[test]
fn an_indirect_probe_whose_target_does_not_answer_is_nacked() {
    let mut a = pool(4);
    let me = a.identity().clone();
    let request = Message::PingReq {
        target: id(3),
        probe_number: 9,
    };
    let packet = foca_packet(&id(2), &me, request.clone(), &[], &[]);
    a.handle_packet(addr(2), &packet, T0).expect("accepted");
    let out = a.drain();
    assert!(
        out.packets.iter().any(|(to, p)| *to == addr(3)
            && matches!(header_of(p).message, Message::IndirectPing { .. }))
    );
    let nack_timer = out
        .timers
        .iter()
        .find(|(_, t)| matches!(t, NodeTimer::Foca(foca::Timer::SendNack { .. })))
        .map(|(after, t)| (*after, t.clone()))
        .expect("a nack timer");
    assert_eq!(nack_timer.0, swim_config(3).probe_rtt.mul_f64(0.8));
    a.handle_timer(nack_timer.1.clone(), T0);
    let nacks: Vec<Message<NodeId>> = a
        .drain()
        .packets
        .iter()
        .filter(|(to, _)| *to == addr(2))
        .map(|(_, p)| header_of(p).message)
        .collect();
    assert_eq!(
        nacks,
        vec![Message::Nack {
            target: id(3),
            probe_number: 9
        }]
    );
    // Answered in time: no nack.
    a.handle_packet(addr(2), &packet, T0).expect("accepted");
    let out = a.drain();
    let ack = Message::IndirectAck {
        target: id(2),
        probe_number: 9,
    };
    let answer = foca_packet(&id(3), &me, ack, &[], &[]);
    a.handle_packet(addr(3), &answer, T0).expect("accepted");
    let _ = a.drain();
    for (_, t) in out.timers {
        a.handle_timer(t, T0);
    }
    let late = a.drain();
    assert!(
        !late
            .packets
            .iter()
            .any(|(_, p)| matches!(header_of(p).message, Message::Nack { .. })),
        "nacked although the target answered"
    );
}

/// Node 1 probes a member that never answers; the members asked to probe it indirectly answer
/// with nacks or not at all. Returns node 1's health score after the probe.
fn health_after_a_failed_probe(nacked: bool) -> u32 {
    let mut a = node(1);
    a.learn((2..=7).map(id), T0);
    let me = a.identity().clone();
    let mut out = a.drain();
    let next = |out: &mut Output, f: fn(&foca::Timer<NodeId>) -> bool| {
        let i = out
            .timers
            .iter()
            .position(|(_, t)| matches!(t, NodeTimer::Foca(t) if f(t)))
            .expect("timer");
        out.timers.remove(i).1
    };
    let probe = next(&mut out, |t| matches!(t, foca::Timer::ProbeRandomMember(_)));
    a.handle_timer(probe, T0);
    let mut out = a.drain();
    let indirect = next(&mut out, |t| {
        matches!(t, foca::Timer::SendIndirectProbe { .. })
    });
    a.handle_timer(indirect, T0);
    let requests = a.drain();
    let asked: Vec<(SocketAddr, Message<NodeId>)> = requests
        .packets
        .iter()
        .map(|(to, p)| (*to, header_of(p).message))
        .filter(|(_, m)| matches!(m, Message::PingReq { .. }))
        .collect();
    assert_eq!(asked.len(), 5);
    if nacked {
        for (to, m) in &asked {
            let Message::PingReq {
                target,
                probe_number,
            } = m.clone()
            else {
                unreachable!()
            };
            let sender = a
                .members()
                .iter()
                .find(|m| m.port == to.port() && m.addr == Some(to.ip()))
                .map(|m| NodeId::new(*to, &m.name, 7))
                .expect("asked a member");
            let nack = Message::Nack {
                target,
                probe_number,
            };
            let packet = foca_packet(&sender, &me, nack, &[], &[]);
            a.handle_packet(*to, &packet, T0).expect("accepted");
        }
    }
    let probe = next(&mut out, |t| matches!(t, foca::Timer::ProbeRandomMember(_)));
    a.handle_timer(probe, T0 + Duration::from_secs(1));
    a.stats()["health_score"].parse().expect("a number")
}

#[test]
fn nacks_keep_a_failed_probe_from_raising_the_probers_health_score() {
    assert_eq!(
        health_after_a_failed_probe(true),
        0,
        "every indirect probe nacked"
    );
    assert_eq!(
        health_after_a_failed_probe(false),
        5,
        "one per missing nack"
    );
}

/// A node encodes its tags push once per version: after a change, the next push carries the new
/// tags (and after a generation change, the new generation).
#[test]
fn a_tags_push_follows_every_change() {
    let mut a = node(1);
    let pushed = |a: &mut Node| -> TagsMsg {
        let _ = a.drain();
        a.push_tags(addr(2)).unwrap();
        let out = a.drain();
        let (_, bytes) = out
            .packets
            .iter()
            .find(|(_, p)| p.first() == Some(&KIND_TAGS_PUSH))
            .unwrap();
        postcard::from_bytes(&bytes[1..]).unwrap()
    };
    let first = pushed(&mut a);
    assert_eq!(pushed(&mut a), first, "same version, same push");
    let tags = BTreeMap::from([("role".to_string(), "changed".to_string())]);
    a.set_tags(tags.clone(), Duration::ZERO).unwrap();
    let second = pushed(&mut a);
    assert_eq!(second.version, first.version + 1);
    assert_eq!(second.tags, tags);
}

/// A member foca still lists but the table lost (removed behind foca's back, as a prune whose
/// refutation got lost leaves it) is listed again when it talks, although datagrams skip the
/// table look-up while the table is known complete; the next reap sees the table complete again.
#[test]
fn a_member_the_table_lost_is_listed_again_when_it_talks() {
    let mut a = pool(3);
    let ping = |a: &mut Node| {
        let packet = foca_packet(&id(2), a.identity(), Message::Ping(1), &[], &[]);
        let _ = a.handle_packet(addr(2), &packet, T0);
    };
    // Complete from the start: a datagram needs no look-up.
    ping(&mut a);
    assert_eq!(a.table_complete_at, Some(0));
    assert!(a.knowledge.lock().table.remove(&name(2)).is_some());
    assert_eq!(a.status_of(&name(2)), None);
    ping(&mut a);
    assert_eq!(a.status_of(&name(2)), Some(MemberStatus::Alive));
    assert_eq!(a.table_complete_at, Some(0), "not seen complete since");
    a.handle_timer(NodeTimer::Reap, T0 * 2);
    assert_eq!(a.table_complete_at, Some(1), "the reap saw it complete");
}

/// The cluster updates a foca packet carries (after its header).
fn updates_of(packet: &[u8]) -> Vec<Member<NodeId>> {
    let (_, mut rest): (Header<NodeId>, _) =
        postcard::take_from_bytes(&packet[1..]).expect("a foca packet");
    let Some((count, tail)) = rest.split_first_chunk::<2>() else {
        return Vec::new();
    };
    rest = tail;
    (0..u16::from_be_bytes(*count))
        .map(|_| {
            let (m, tail) = postcard::take_from_bytes::<Member<NodeId>>(rest).expect("a member");
            rest = tail;
            m
        })
        .collect()
}

/// Lifeguard's buddy system: whatever this node sends a member it holds suspect carries the
/// suspicion first, even once the backlog has sent it as often as it sends anything.
#[test]
fn a_message_to_a_suspect_carries_the_suspicion() {
    let mut a = pool(6);
    suspicion_of_3_from(&mut a, 2);
    for _ in 0..8 {
        a.swim.gossip(&mut a.rt).expect("gossip");
    }
    a.after_swim(T0);
    let _ = a.drain();
    assert_eq!(a.updates_backlog(), 0, "the backlog still holds updates");
    let me = a.identity().clone();
    let ping = foca_packet(&id(3), &me, Message::Ping(9), &[], &[]);
    a.handle_packet(addr(3), &ping, T0).expect("accepted");
    let out = a.drain();
    let (_, ack) = out
        .packets
        .iter()
        .find(|(to, p)| *to == addr(3) && header_of(p).message == Message::Ack(9))
        .expect("an ack to 3");
    let updates = updates_of(ack);
    assert_eq!(
        updates.first().map(|m| (m.id().clone(), m.state())),
        Some((id(3), foca::State::Suspect)),
        "{updates:?}"
    );
    // To a member that is not suspect, nothing of the kind.
    let ping = foca_packet(&id(4), &me, Message::Ping(10), &[], &[]);
    a.handle_packet(addr(4), &ping, T0).expect("accepted");
    let out = a.drain();
    let (_, ack) = out
        .packets
        .iter()
        .find(|(to, _)| *to == addr(4))
        .expect("an ack to 4");
    assert!(updates_of(ack).is_empty(), "{:?}", updates_of(ack));
}

/// Fires the early anti-entropy checks a node asked for (and no other timer), delivering each
/// stream it opens to `peer` (it is node 200) and the answer back (streams to other members go
/// unanswered); `between(peer)` runs before each check. Returns how many rounds it started (a
/// list following a digest is part of its round) and, for each check, the delay it asked for
/// the next one and whether it started a round.
fn run_early_syncs(
    j: &mut Node,
    peer: &mut Node,
    out: Output,
    from: Duration,
    between: impl FnMut(&mut Node),
) -> (usize, Vec<(Duration, bool)>) {
    run_early_syncs_with(j, peer, out, from, between, false)
}

/// [`run_early_syncs`], where with `fail` every stream the joiner opens fails instead.
fn run_early_syncs_with(
    j: &mut Node,
    peer: &mut Node,
    mut out: Output,
    from: Duration,
    mut between: impl FnMut(&mut Node),
    fail: bool,
) -> (usize, Vec<(Duration, bool)>) {
    let mut now = from;
    let mut opened = 0;
    let mut checks = Vec::new();
    for _ in 0..40 {
        opened += out.streams.len();
        // The round's streams, and the list that follows a digest that differs.
        let mut streams = std::mem::take(&mut out.streams);
        let started = !streams.is_empty();
        while let Some(req) = streams.pop() {
            if fail {
                j.stream_failed(req.to, now);
                let more = j.drain();
                out.timers.extend(more.timers);
                continue;
            }
            if req.to != peer.identity().addr() {
                continue;
            }
            let reply = peer
                .handle_stream(ephemeral(200), &req.body, now)
                .expect("accepted")
                .expect("a reply");
            j.handle_stream_reply(req.to, &reply, now).expect("applied");
            let more = j.drain();
            streams.extend(more.streams);
            out.timers.extend(more.timers);
        }
        let Some((delay, _)) = out
            .timers
            .iter()
            .find(|(_, t)| *t == NodeTimer::EarlySync)
            .cloned()
        else {
            break;
        };
        checks.push((delay, started));
        now += delay;
        between(peer);
        j.handle_timer(NodeTimer::EarlySync, now);
        out = j.drain();
    }
    (opened, checks)
}

/// A joiner and the member it joined, with the join's exchange done; the joiner's output
/// since (its early check timer among it). Anti-entropy's periodic round is far off.
fn joined_pair() -> (Node, Node, Output) {
    let mut a = node(1);
    let mut j = node(200);
    j.cfg.sync_interval = Duration::from_secs(100_000);
    j.join(addr(1), T0).expect("join");
    let out = j.drain();
    let request = out.streams.first().expect("the join's stream").clone();
    let reply = a
        .handle_stream(ephemeral(200), &request.body, T0)
        .expect("accepted")
        .expect("a reply");
    j.handle_stream_reply(addr(1), &reply, T0).expect("applied");
    let mut after_join = j.drain();
    after_join.timers.extend(out.timers);
    assert_eq!(j.count(MemberStatus::Alive), 2);
    (a, j, after_join)
}

/// A member that joined repairs what its join missed within seconds, not at its first periodic
/// anti-entropy round: once its member list stops growing it runs an early push/pull, and the
/// rounds end at the first whose answer agrees. Here member 9 joins member 1 after the join's
/// exchange (its broadcast never reaches the joiner), so only an anti-entropy round can teach
/// it. Rounds the joiner then opens to member 9 (not run by the test) get no answer and do not
/// end the rounds; the first answered by member 1 does.
#[test]
fn a_joiner_repairs_what_its_join_missed_in_early_anti_entropy_rounds() {
    let (mut a, mut j, after_join) = joined_pair();
    // Member 9 comes after the exchange; the broadcast of it is lost on the way to the joiner.
    a.learn([id(9)], T0);
    let _ = a.drain();
    let (opened, checks) = run_early_syncs(&mut j, &mut a, after_join, T0, |_| {});
    assert_eq!(j.status_of(&name(9)), Some(MemberStatus::Alive));
    // The list had grown at the first check (the join's answer), so the first round came a
    // check later; the rounds then doubled their gaps.
    let delays: Vec<Duration> = checks.iter().map(|(d, _)| *d).collect();
    for (k, delay) in delays.iter().enumerate() {
        let base = EARLY_SYNC_CHECK * (1 << k.saturating_sub(2));
        assert!(*delay >= base && *delay <= base * 3 / 2, "{delays:?}");
    }
    assert!(
        opened >= 2 && opened < usize::from(EARLY_SYNC_ROUNDS),
        "the rounds end at the first that agrees: {opened} rounds, {checks:?}"
    );
    assert_eq!(
        opened,
        checks.iter().filter(|(_, started)| *started).count()
    );
    assert!(j.early_sync.is_none(), "no round is owed any more");
}

/// A round whose stream fails sends its list whole by datagrams and cannot end in agreement:
/// the early rounds then stop at two, even though nothing agreed.
#[test]
fn early_rounds_stop_at_two_when_their_streams_fail() {
    let (mut a, mut j, after_join) = joined_pair();
    let (opened, checks) = run_early_syncs_with(&mut j, &mut a, after_join, T0, |_| {}, true);
    assert_eq!(opened, 2, "{checks:?}");
    assert!(j.early_sync.is_none(), "no round is owed any more");
}

/// An answer to a round opened before a join's early rounds began (a periodic one, or an
/// earlier join's) does not end them: only an answer to one of them does.
#[test]
fn an_agreement_before_the_first_early_round_does_not_end_them() {
    let (mut a, mut j, after_join) = joined_pair();
    j.lists_agreed();
    let (opened, checks) = run_early_syncs(&mut j, &mut a, after_join, T0, |_| {});
    assert_eq!(opened, 1, "one round, which agrees: {checks:?}");
}

/// While each early round's answer differs (the pool is still forming), the rounds go on, each
/// twice as far from the one before, up to [`EARLY_SYNC_ROUNDS`].
#[test]
fn early_rounds_go_on_while_answers_differ_each_twice_as_far_apart() {
    let (mut a, mut j, after_join) = joined_pair();
    let mut next = 10u8;
    let (opened, checks) = run_early_syncs(&mut j, &mut a, after_join, T0, |a| {
        a.learn([id(next)], T0);
        let _ = a.drain();
        next += 1;
    });
    assert_eq!(opened, usize::from(EARLY_SYNC_ROUNDS), "{checks:?}");
    let gaps: Vec<Duration> = checks
        .iter()
        .filter(|(_, started)| *started)
        .map(|(d, _)| *d)
        .collect();
    for (k, gap) in gaps.iter().enumerate() {
        let base = EARLY_SYNC_CHECK * (1 << k);
        assert!(*gap >= base && *gap <= base * 3 / 2, "round {k}: {gaps:?}");
    }
}

/// The members an anti-entropy answer lists, by node number (the answerer included).
fn answer_lists(reply: &[u8]) -> Vec<u8> {
    let [crate::wire::KIND_STATE, 0, rest @ ..] = reply else {
        panic!("not an answer: {:?}", &reply[..2]);
    };
    let (msg, _): (crate::wire::StateMsg, _) = postcard::take_from_bytes(rest).expect("decode");
    let mut listed: Vec<u8> = msg
        .entries
        .iter()
        .map(|(id, _)| {
            id.name()[1..]
                .trim_end_matches(".global")
                .parse()
                .expect("n<i>")
        })
        .collect();
    listed.sort();
    listed
}

/// An anti-entropy answer leaves out what the asker's list named with the incarnation the
/// answerer knows (or a newer one): between members that agree it is the answerer alone. The
/// asker's frame is built as older nodes build theirs (no trailer), and the answer is a member
/// list as before.
#[test]
fn an_anti_entropy_answer_carries_only_what_the_asker_lacks() {
    // Node 1 knows 2..=20; member 5 at incarnation 3 (a refutation it heard of).
    let refuted = state_frame(&id(3), vec![(id(5), 3)]);
    let all: Vec<(NodeId, u16)> = (1..=20)
        .map(|i| (id(i), if i == 5 { 3 } else { 0 }))
        .collect();
    let check = |asker_names: Vec<(NodeId, u16)>, expected: Vec<u8>| {
        let mut a = pool(20);
        a.handle_stream(ephemeral(3), &refuted, T0)
            .expect("applied");
        let frame = state_frame(&id(2), asker_names);
        let reply = a
            .handle_stream(ephemeral(2), &frame, T0)
            .expect("accepted")
            .expect("an answer");
        assert_eq!(answer_lists(&reply), expected);
    };
    // Agreeing lists: the answerer alone.
    check(all.clone(), vec![1]);
    // Members the asker lacks.
    let lacking: Vec<(NodeId, u16)> = all
        .iter()
        .filter(|(id, _)| id.name() != name(7) && id.name() != name(9))
        .cloned()
        .collect();
    check(lacking, vec![1, 7, 9]);
    // A member the asker knows at an older incarnation.
    let older: Vec<(NodeId, u16)> = all
        .iter()
        .map(|(id, inc)| (id.clone(), if id.name() == name(5) { 0 } else { *inc }))
        .collect();
    check(older, vec![1, 5]);
    // An asker that knows only itself (a join) gets everything.
    check(vec![(id(2), 0)], (1..=20).filter(|i| *i != 2).collect());
}

/// Node `i` knowing the members `others` as alive.
fn knowing(i: u8, others: impl IntoIterator<Item = u8>) -> Node {
    let mut n = node(i);
    n.learn(others.into_iter().map(id), T0);
    let _ = n.drain();
    n
}

/// Runs one anti-entropy round of `b` (node 2) with `a` (node 1), every stream it leads to
/// delivered; returns the bytes of the round's first ask and answer, and how many streams `b`
/// opened in all.
fn digest_round(a: &mut Node, b: &mut Node) -> (usize, usize, usize) {
    b.anti_entropy(addr(1));
    let mut streams = b.drain().streams;
    let mut sizes = None;
    let mut opened = 0;
    while let Some(req) = streams.pop() {
        opened += 1;
        assert!(opened <= 4, "a round that does not end");
        let reply = a
            .handle_stream(ephemeral(2), &req.body, T0)
            .expect("accepted")
            .expect("an answer");
        sizes.get_or_insert((req.body.len(), reply.len()));
        b.handle_stream_reply(addr(1), &reply, T0).expect("applied");
        streams.extend(b.drain().streams);
    }
    let (ask, answer) = sizes.expect("a stream");
    (ask, answer, opened)
}

/// Anti-entropy sends digests first: members that agree exchange a few bytes each way and
/// nothing follows; when the lists differ the asker follows with a list (of the differing
/// buckets: see the next test), and both end
/// knowing what either knew. An answer from an older node (a whole list, no digest) is applied
/// and ends the round.
#[test]
fn anti_entropy_sends_digests_first_and_whole_lists_only_when_they_differ() {
    // Agreeing: 1 knows 2..=40, 2 knows 1 and 3..=40.
    let mut a = pool(40);
    let mut b = knowing(2, std::iter::once(1).chain(3..=40));
    assert_eq!(a.list_digest(), b.list_digest());
    let (ask, answer, opened) = digest_round(&mut a, &mut b);
    assert!(ask < 100 && answer < 100, "{ask} and {answer} bytes");
    assert_eq!(opened, 1);
    assert_eq!(b.counters().digest_mismatches, 0);

    // Differing: 2 lacks 9; 1 lacks 41, which 2 knows.
    let mut a = pool(40);
    let mut b = knowing(2, [1].into_iter().chain(3..=41).filter(|i| *i != 9));
    let (ask, _, opened) = digest_round(&mut a, &mut b);
    assert!(ask < 100, "{ask} bytes");
    assert_eq!(opened, 2, "the digest, then a list");
    assert_eq!(b.counters().digest_mismatches, 1);
    assert_eq!(b.status_of(&name(9)), Some(MemberStatus::Alive));
    assert_eq!(a.status_of(&name(41)), Some(MemberStatus::Alive));
    assert_eq!(a.list_digest(), b.list_digest());

    // An older answerer sends its whole list without a digest: applied, and the round ends.
    let mut b = knowing(2, [1]);
    b.anti_entropy(addr(1));
    assert_eq!(b.drain().streams.len(), 1);
    let mut old_answer = state_frame(
        &id(1),
        (1..=40).filter(|i| *i != 2).map(|i| (id(i), 0)).collect(),
    );
    old_answer[1] = 0;
    b.handle_stream_reply(addr(1), &old_answer, T0)
        .expect("applied");
    assert_eq!(b.count(MemberStatus::Alive), 40);
    assert!(b.drain().streams.is_empty());
}

/// `b` (node 2) starts an anti-entropy round with `a` (node 1): `a`'s answer to its digest.
fn digest_answer(a: &mut Node, b: &mut Node) -> Vec<u8> {
    b.anti_entropy(addr(1));
    let ask = b.drain().streams.pop().expect("the digest");
    a.handle_stream(ephemeral(2), &ask.body, T0)
        .expect("accepted")
        .expect("an answer")
}

/// When digests differ, the answer carries its sums per bucket and the asker follows with the
/// members of the differing buckets only: one member apart (each way) in a pool of 250, the
/// follow-up lists a few members, not 250, and both end knowing what either knew.
#[test]
fn a_differing_digest_is_followed_by_the_differing_buckets_only() {
    let mut a = pool(250);
    // 2 lacks 9; 1 lacks 251, which 2 knows.
    let mut b = knowing(2, [1].into_iter().chain(3..=251).filter(|i| *i != 9));
    let whole = b
        .state_frame(crate::exchange::FrameSpec {
            want_reply: true,
            ..Default::default()
        })
        .expect("a frame")
        .len();
    let answer = digest_answer(&mut a, &mut b);
    b.handle_stream_reply(addr(1), &answer, T0)
        .expect("applied");
    let follow = b.drain().streams.pop().expect("the differing buckets");
    assert!(
        follow.body.len() * 10 < whole,
        "{} bytes follow, the whole list is {whole}",
        follow.body.len()
    );
    let reply = a
        .handle_stream(ephemeral(2), &follow.body, T0)
        .expect("accepted")
        .expect("an answer");
    assert!(
        answer_lists(&reply).len() < 10,
        "{:?}",
        answer_lists(&reply)
    );
    b.handle_stream_reply(addr(1), &reply, T0).expect("applied");
    assert!(b.drain().streams.is_empty(), "the round ends");
    assert_eq!(b.status_of(&name(9)), Some(MemberStatus::Alive));
    assert_eq!(a.status_of(&name(251)), Some(MemberStatus::Alive));
    assert_eq!(a.list_digest(), b.list_digest());
}

/// An asker whose list changed between its digest and the answer, from an answerer whose list
/// agreed with the digest asked with: the answer says it agreed (an empty sums part) and the
/// round ends, rather than the whole list following.
#[test]
fn a_round_ends_when_the_answerer_agreed_with_the_list_asked_about() {
    let mut a = pool(40);
    let mut b = knowing(2, [1].into_iter().chain(3..=40));
    let answer = digest_answer(&mut a, &mut b);
    // 2 learns 41 while the answer travels.
    b.learn([id(41)], T0);
    let _ = b.drain();
    b.handle_stream_reply(addr(1), &answer, T0)
        .expect("applied");
    assert!(b.drain().streams.is_empty(), "the round ends");
    assert_eq!(b.counters().digest_mismatches, 1);
}

/// `[StateExtra][ListDigest][Buckets]` as they trail a frame's member list.
fn trailer(digest: ListDigest, sums: Vec<u32>, of: u32, wanted: Vec<u32>) -> Vec<u8> {
    let mut out = vec![0u8, 0u8]; // ask_tags false, no tags
    out.extend(postcard::to_stdvec(&digest).expect("encode"));
    let sums: Vec<[u8; 4]> = sums.iter().map(|s| s.to_le_bytes()).collect();
    out.extend(postcard::to_stdvec(&(sums, of, wanted)).expect("encode"));
    out
}

/// A digest answer with sums that are not a power of two is refused as malformed, and with more
/// than 4,096 sums (or wanted buckets) refused when the length is read, before the items are.
#[test]
fn bucket_parts_of_impossible_lengths_are_refused() {
    let answer = |sums: usize| {
        let mut frame = state_frame(&id(1), vec![(id(1), 0)]);
        frame[1] = 0;
        frame.extend(trailer(
            ListDigest { members: 9, sum: 9 },
            vec![1; sums],
            0,
            Vec::new(),
        ));
        frame
    };
    let check = |frame: Vec<u8>, accepted: bool| {
        let mut b = knowing(2, [1]);
        b.anti_entropy(addr(1));
        let _ = b.drain();
        let result = b.handle_stream_reply(addr(1), &frame, T0);
        assert_eq!(result.is_ok(), accepted, "{result:?}");
        assert_eq!(b.counters().malformed, u64::from(!accepted));
    };
    check(answer(4), true);
    check(answer(3), false);
    check(answer(8192), false);
    // A length prefix of a million sums with none behind it.
    let mut huge = state_frame(&id(1), vec![(id(1), 0)]);
    huge[1] = 0;
    huge.extend([0u8, 0u8]);
    huge.extend(postcard::to_stdvec(&ListDigest { members: 9, sum: 9 }).expect("encode"));
    huge.extend(postcard::to_stdvec(&1_000_000u32).expect("encode"));
    check(huge, false);
}

/// A list that names its buckets badly (not a power of two, too many, a bucket beyond them) is
/// refused as malformed, and nothing is answered.
#[test]
fn a_list_naming_impossible_buckets_is_refused() {
    let check = |of: u32, wanted: Vec<u32>, accepted: bool| {
        let mut a = pool(40);
        let mut frame = state_frame(&id(2), vec![(id(2), 0)]);
        let digest = ListDigest { members: 2, sum: 5 };
        frame.extend(trailer(digest, Vec::new(), of, wanted.clone()));
        let result = a.handle_stream(ephemeral(2), &frame, T0);
        assert_eq!(
            result.is_ok(),
            accepted,
            "of {of}, wanted {wanted:?}: {result:?}"
        );
        assert_eq!(a.counters().malformed, u64::from(!accepted));
    };
    check(64, vec![0, 63], true);
    check(48, vec![1], false);
    check(8192, vec![1], false);
    check(64, vec![64], false);
    check(2, vec![0, 1, 0], false);
}

/// An answer with a digest but no sums (an older node) is followed by the whole list.
#[test]
fn a_digest_answer_without_sums_is_followed_by_the_whole_list() {
    let mut b = knowing(2, [1].into_iter().chain(3..=40));
    b.anti_entropy(addr(1));
    let _ = b.drain();
    let mut old = state_frame(&id(1), vec![(id(1), 0)]);
    old[1] = 0;
    old.extend(vec![0u8, 0u8]);
    old.extend(postcard::to_stdvec(&ListDigest { members: 7, sum: 7 }).expect("encode"));
    b.handle_stream_reply(addr(1), &old, T0).expect("applied");
    let follow = b.drain().streams.pop().expect("the whole list");
    let [crate::wire::KIND_STATE, 1, rest @ ..] = follow.body.as_slice() else {
        panic!("not an ask");
    };
    let (msg, _): (crate::wire::StateMsg, _) = postcard::take_from_bytes(rest).expect("decode");
    assert_eq!(msg.entries.len(), 40);
}

/// A foca packet of at most `MAX_UNKNOWN_INTRODUCTIONS * MIN_UPDATE_BYTES` bytes skips the
/// sender's look-up; that is only safe if no update encodes in fewer bytes.
#[test]
fn no_cluster_update_encodes_in_fewer_than_min_update_bytes() {
    let smallest = Member::new(
        NodeId::new(SocketAddr::from(([0, 0, 0, 0], 0)), "", 0),
        0,
        foca::State::Alive,
    );
    let bytes = postcard::to_stdvec(&smallest).expect("encode");
    assert!(bytes.len() >= MIN_UPDATE_BYTES, "{} bytes", bytes.len());
}

/// Node `i` as [`node`] makes it, sealing with `key` when there is one.
fn keyed_node(i: u8, key: Option<u8>) -> Node {
    let mut cfg = NodeConfig::new(name(i), addr(i), 3);
    cfg.generation = 7;
    cfg.key = key.map(|k| vec![k; 32]);
    let mut node = Node::new(cfg, u64::from(i), Duration::ZERO).expect("node");
    let _ = node.drain();
    node
}

/// Node 1, knowing nodes 2..=4, runs one probe whose ping nobody acks up to its indirect stage;
/// returns the member probed (its index), the fallback pings it asked for, and the timer that
/// ends the probe (the next one's start).
fn probe_left_unanswered(a: &mut Node) -> (u8, Vec<StreamRequest>, NodeTimer) {
    a.learn((2..=4).map(id), T0);
    let first = a
        .drain()
        .timers
        .into_iter()
        .find(|(_, t)| matches!(t, NodeTimer::Foca(foca::Timer::ProbeRandomMember(_))))
        .expect("a probe timer")
        .1;
    run_probe(a, first)
}

/// Runs the probe `start` starts, up to its indirect stage (see [`probe_left_unanswered`]).
fn run_probe(a: &mut Node, start: NodeTimer) -> (u8, Vec<StreamRequest>, NodeTimer) {
    a.handle_timer(start, T0);
    let out = a.drain();
    let probed = out
        .packets
        .iter()
        .find_map(|(to, p)| {
            let plain = a.unseal(p).ok()?.into_owned();
            if plain.first() != Some(&KIND_FOCA) {
                return None;
            }
            let (header, _): (Header<NodeId>, _) = postcard::take_from_bytes(&plain[1..]).ok()?;
            matches!(header.message, Message::Ping(_)).then_some(*to)
        })
        .expect("a ping");
    let timer = |wanted: fn(&foca::Timer<NodeId>) -> bool| {
        out.timers
            .iter()
            .find(|(_, t)| matches!(t, NodeTimer::Foca(f) if wanted(f)))
            .map(|(_, t)| t.clone())
            .expect("a timer")
    };
    let indirect = timer(|t| matches!(t, foca::Timer::SendIndirectProbe { .. }));
    let next = timer(|t| matches!(t, foca::Timer::ProbeRandomMember(_)));
    assert!(
        out.streams.is_empty(),
        "no fallback ping before the ping is late"
    );
    a.handle_timer(indirect, T0 + Duration::from_millis(500));
    let streams = a.drain().streams;
    let index = (2..=4).find(|&i| addr(i) == probed).expect("a member");
    (index, streams, next)
}

/// The state node 1 holds for member `i` once its probe of `i` ended.
fn probed_state(a: &mut Node, i: u8, next: NodeTimer) -> Option<foca::State> {
    a.handle_timer(next, T0 + Duration::from_secs(1));
    a.swim.member_at(&addr(i)).map(|m| m.state())
}

/// Member `i`, knowing node 1, answers `ping` (a stream from node 1's IP).
fn pong_from(i: u8, key: Option<u8>, ping: &[u8]) -> Vec<u8> {
    let mut b = keyed_node(i, key);
    b.learn([id(1)], T0);
    let pong = b
        .handle_stream(ephemeral(1), ping, T0)
        .expect("answered")
        .expect("a pong");
    assert_eq!(b.stats()["stream_pings_in"], "1");
    pong
}

#[test]
fn a_probe_whose_fallback_ping_is_answered_suspects_nobody() {
    // Sealed and in the clear alike.
    for key in [None, Some(5)] {
        let mut a = keyed_node(1, key);
        let (probed, pings, next) = probe_left_unanswered(&mut a);
        assert_eq!(pings.len(), 1, "{pings:?}");
        assert_eq!(pings[0].to, addr(probed));
        assert_eq!(pings[0].purpose, StreamPurpose::Ping);
        let pong = pong_from(probed, key, &pings[0].body);
        a.handle_ping_reply(addr(probed), &pong, T0)
            .expect("accepted");
        assert_eq!(
            probed_state(&mut a, probed, next),
            Some(foca::State::Alive),
            "key {key:?}"
        );
        assert_eq!(a.stats()["stream_pings_out"], "1");
        assert_eq!(a.stats()["stream_pings_reached"], "1");
    }
}

#[test]
fn a_probe_whose_fallback_ping_goes_unanswered_suspects_its_member() {
    let mut a = node(1);
    let (probed, pings, next) = probe_left_unanswered(&mut a);
    assert_eq!(pings.len(), 1);
    assert_eq!(
        probed_state(&mut a, probed, next),
        Some(foca::State::Suspect)
    );
    assert_eq!(a.stats()["stream_pings_reached"], "0");
}

#[test]
fn fallback_pings_are_answered_only_for_the_current_identity_by_members_and_pongs_only_count_from_the_probed()
 {
    let mut a = node(1);
    let (probed, pings, next) = probe_left_unanswered(&mut a);
    let body = &pings[0].body;
    // A restarted process at the probed address does not answer for the identity it replaced.
    let mut cfg = NodeConfig::new(name(probed), addr(probed), 3);
    cfg.generation = 8;
    let mut restarted = Node::new(cfg, 9, T0).expect("node");
    restarted.learn([id(1)], T0);
    assert!(restarted.handle_stream(ephemeral(1), body, T0).is_err());
    // A member that does not know the pinger does not answer.
    let mut stranger_to_it = node(probed);
    assert!(
        stranger_to_it
            .handle_stream(ephemeral(1), body, T0)
            .is_err()
    );
    // Nor for a ping whose sender is not the stream's source.
    let mut b = node(probed);
    b.learn([id(1)], T0);
    assert!(b.handle_stream(ephemeral(9), body, T0).is_err());
    // A pong from another member, or with another nonce, does not save the probe.
    let other = (2..=4).find(|&i| i != probed).expect("another member");
    let ping_to = |target: u8, nonce: u64| {
        let ping = crate::wire::PingMsg {
            sender: id(1),
            target: id(target),
            nonce,
        };
        let mut plain = vec![crate::wire::KIND_PING];
        postcard::to_io(&ping, &mut plain).expect("encoded");
        plain
    };
    let pong_other = pong_from(other, None, &ping_to(other, 1));
    assert!(a.handle_ping_reply(addr(probed), &pong_other, T0).is_err());
    assert!(a.handle_ping_reply(addr(other), &pong_other, T0).is_err());
    let guessed = pong_from(probed, None, &ping_to(probed, 1));
    assert!(a.handle_ping_reply(addr(probed), &guessed, T0).is_err());
    // A ping where a member list belongs, a pong where a ping does, and a member list where a
    // pong does, are refused.
    let pong = pong_from(probed, None, body);
    assert!(b.handle_stream(ephemeral(1), &pong, T0).is_err());
    assert!(a.handle_stream_reply(addr(probed), body, T0).is_err());
    assert!(a.handle_stream_reply(addr(probed), &pong, T0).is_err());
    assert!(a.handle_ping_reply(addr(probed), body, T0).is_err());
    assert_eq!(a.stats()["stream_pings_reached"], "0");
    assert_eq!(
        probed_state(&mut a, probed, next),
        Some(foca::State::Suspect)
    );
}

#[test]
fn a_pong_recorded_once_answers_no_later_ping() {
    let mut a = node(1);
    let (probed, pings, next) = probe_left_unanswered(&mut a);
    let old_pong = pong_from(probed, None, &pings[0].body);
    // The probe ends unanswered; the probes after it run until one of them is the same
    // member's again.
    let mut next = Some(next);
    for _ in 0..8 {
        let start = next.take().expect("a next probe");
        let (again, pings, after) = run_probe(&mut a, start);
        next = Some(after);
        if again == probed && !pings.is_empty() {
            assert!(a.handle_ping_reply(addr(probed), &old_pong, T0).is_err());
            assert_eq!(a.stats()["stream_pings_reached"], "0");
            assert_eq!(
                a.stats()["spoofed_packets"],
                "0",
                "a late pong is no forgery"
            );
            let fresh = pong_from(probed, None, &pings[0].body);
            a.handle_ping_reply(addr(probed), &fresh, T0)
                .expect("the fresh pong counts");
            return;
        }
    }
    panic!("member {probed} was not probed again within 8 probes");
}

#[test]
fn no_fallback_ping_without_streams() {
    let mut cfg = NodeConfig::new(name(1), addr(1), 3);
    cfg.generation = 7;
    cfg.streams = false;
    let mut a = Node::new(cfg, 1, Duration::ZERO).expect("node");
    let _ = a.drain();
    let (_, pings, _) = probe_left_unanswered(&mut a);
    assert!(pings.is_empty(), "{pings:?}");
}

/// Each membership update is piggybacked memberlist's retransmit limit of times: 4 times
/// `ceil(log10(n + 1))`, four per decimal digit of the pool's size.
#[test]
fn updates_are_piggybacked_four_times_per_digit_of_the_pool_size() {
    let check = |members: u32, expected: u8| {
        assert_eq!(
            swim_config(members).max_transmissions.get(),
            expected,
            "{members} members"
        );
    };
    check(0, 4);
    check(1, 4);
    check(9, 4);
    check(10, 8);
    check(999, 12);
    check(1_000, 16);
    check(9_999, 16);
    check(10_000, 20);
    check(u32::MAX, 40);
}
