//! memberlist's TCP fallback ping. A probe whose ping datagram went unanswered within the round
//! trip also pings its member over a stream on the serf port (sealed like a member-list frame),
//! while foca's indirect probes run; if the member answers before the probe ends, the probe
//! succeeds and nobody suspects it. A path that loses datagrams (or a firewall that drops UDP)
//! then costs no false suspicion, which at scale is most of what a lossy pool sends: each one
//! is relayed by every member, and so is its refutation.
//!
//! A member answers a ping only for its current identity (a restarted process does not answer
//! for the one it replaced), only from a member, and only when the ping's sender has the
//! stream's source IP. A pong counts only on the stream of the current probe's ping, from the
//! identity probed, naming this node and echoing the ping's nonce (a pong recorded once answers
//! no other ping). When one saves a probe, the node warns (at most once a minute), as memberlist
//! does: datagrams to that member are being lost.

use std::net::SocketAddr;
use std::time::Duration;

use crate::GossipError;
use crate::exchange::{Opened, StreamPurpose, StreamRequest};
use crate::identity::NodeId;
use crate::node::{Node, canonical};
use crate::wire::{KIND_PING, KIND_PONG, PingMsg, PongMsg};

/// The fallback ping a node last sent.
#[derive(Clone, Debug)]
pub(crate) struct ProbePing {
    target: NodeId,
    number: foca::ProbeNumber,
    nonce: u64,
}

/// How often a node warns that a fallback ping saved a probe.
const PING_WARNING_EVERY: Duration = Duration::from_secs(60);

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
        let nonce = self.next_random();
        let ping = PingMsg {
            sender: self.identity().clone(),
            target: target.clone(),
            nonce,
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
        self.probe_ping = Some(ProbePing {
            target,
            number,
            nonce,
        });
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
            pinger: ping.sender.clone(),
            nonce: ping.nonce,
        };
        Ok(self.stream_frame(KIND_PONG, &pong))
    }

    /// The answer on a stream this node opened to `to` for a fallback ping
    /// ([`StreamPurpose::Ping`]): the probe succeeds if the pong answers this node's last ping,
    /// from the identity probed, while that probe is the current one.
    pub fn handle_ping_reply(
        &mut self,
        to: SocketAddr,
        frame: &[u8],
        now: Duration,
    ) -> Result<(), GossipError> {
        let pong = match self.open_stream(frame)? {
            Opened::Pong(pong) => pong,
            Opened::State(_) | Opened::Ping(_) => {
                return Err(self.wrong_kind("a ping answered with no pong"));
            }
        };
        if canonical(pong.sender.addr()) != canonical(to) {
            self.counters.spoofed += 1;
            return Err(GossipError::Rejected("pong from another member"));
        }
        let me = self.identity().clone();
        let Some(ping) = self
            .probe_ping
            .take_if(|p| p.target == pong.sender && p.nonce == pong.nonce && pong.pinger == me)
        else {
            // Late (another ping went since), or about an identity since replaced.
            return Err(GossipError::Rejected("a pong to no current ping"));
        };
        if self.swim.probe_reached(&ping.target, ping.number) {
            self.counters.pings_reached += 1;
            if self
                .ping_warned
                .is_none_or(|at| now.saturating_sub(at) >= PING_WARNING_EVERY)
            {
                self.ping_warned = Some(now);
                let member = crate::udp::printable(ping.target.name());
                tracing::warn!(target: "gossip", %member, "was able to reach a member over TCP but not over UDP; the network may be misconfigured or lossy");
            }
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
