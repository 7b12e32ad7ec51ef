//! memberlist's TCP fallback ping. A probe whose ping datagram went unanswered within the round
//! trip also pings its member over a stream on the serf port (sealed like a member-list frame),
//! while foca's indirect probes run; if the member answers before the probe ends, the probe
//! succeeds and nobody suspects it. A path that loses datagrams (or a firewall that drops UDP)
//! then costs no false suspicion, which at scale is most of what a lossy pool sends: each one
//! is relayed by every member, and so is its refutation.
//!
//! A member answers a ping only for its current identity (a restarted process does not answer
//! for the one it replaced), only from a member, and only when the ping's sender has the
//! stream's source IP.

use std::net::SocketAddr;

use crate::GossipError;
use crate::exchange::{StreamPurpose, StreamRequest};
use crate::node::{Node, canonical};
use crate::wire::{KIND_PING, KIND_PONG, PingMsg, PongMsg};

impl Node {
    /// Pings the member of a probe whose ping went unanswered (foca's indirect stage has begun)
    /// over a stream; called after foca handled the timer that starts that stage.
    pub(crate) fn ping_unanswered_probe(&mut self) {
        if !self.cfg.streams || self.leaving {
            return;
        }
        let Some((target, number)) = self
            .swim
            .unanswered_probe()
            .map(|(id, number)| (id.clone(), number))
        else {
            return;
        };
        let ping = PingMsg {
            sender: self.identity().clone(),
            target: target.clone(),
        };
        let Some(body) = self.stream_frame(KIND_PING, &ping) else {
            return;
        };
        self.counters.pings_out += 1;
        self.out.streams.push(StreamRequest {
            to: target.addr(),
            body,
            purpose: StreamPurpose::Ping,
        });
        self.probe_ping = Some((target, number));
    }

    /// The answer to a ping a member sent on a stream from `peer`.
    pub(crate) fn answer_ping(
        &mut self,
        peer: SocketAddr,
        ping: &PingMsg,
    ) -> Result<Option<Vec<u8>>, GossipError> {
        let sender = canonical(ping.sender.addr());
        if sender.ip() != canonical(peer).ip() {
            self.counters.spoofed += 1;
            return Err(GossipError::Rejected(
                "ping sender is not the stream's source",
            ));
        }
        if ping.target != *self.identity() {
            return Err(GossipError::Rejected("ping for another identity"));
        }
        if !self.is_member(sender) {
            self.counters.unknown_sender += 1;
            return Err(GossipError::Rejected("ping from a stranger"));
        }
        self.counters.pings_in += 1;
        let pong = PongMsg {
            sender: self.identity().clone(),
        };
        Ok(self.stream_frame(KIND_PONG, &pong))
    }

    /// A pong on the stream this node's last ping opened to `to`: the probe succeeds if it is
    /// still the current one and the pong comes from the identity probed.
    pub(crate) fn pong_received(
        &mut self,
        to: SocketAddr,
        pong: &PongMsg,
    ) -> Result<(), GossipError> {
        let Some((target, number)) = self.probe_ping.clone() else {
            return Err(GossipError::Rejected("a pong without a ping"));
        };
        if canonical(target.addr()) != canonical(to) || pong.sender != target {
            self.counters.spoofed += 1;
            return Err(GossipError::Rejected("pong from another member"));
        }
        self.probe_ping = None;
        if self.swim.probe_reached(&target, number) {
            self.counters.pings_reached += 1;
        }
        Ok(())
    }

    /// `kind` and `msg` as one stream frame, sealed when the node has a key.
    fn stream_frame(&mut self, kind: u8, msg: &impl serde::Serialize) -> Option<Vec<u8>> {
        let mut plain = vec![kind];
        if let Err(e) = postcard::to_io(msg, &mut plain) {
            tracing::debug!(target: "gossip", error = %e, "stream frame encode");
            return None;
        }
        let frame = match &self.keyring {
            Some(c) => c.seal(&plain).ok()?,
            None => plain,
        };
        self.counters.bytes_out += frame.len() as u64;
        Some(frame)
    }
}
