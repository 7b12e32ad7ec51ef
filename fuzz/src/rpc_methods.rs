//! RPC request bodies of every method through the agent's real router: a dev-mode agent started
//! in this process ([`caravan_agent::inproc`]: real Raft and state, ACLs on, its RPC port on
//! 127.0.0.1) takes each input as one call over the network, through the handshake that proves
//! the caller's role, the method table's checks, the handler's method router, its ACL checks and
//! the method's decoder.

use std::sync::OnceLock;
use std::time::Duration;

use caravan_agent::inproc::{Answer, Caller, InProcessAgent, sample_requests};
use caravan_raft::{Applied, RaftError, codec};
use caravan_rpc::RpcError;
use caravan_rpc::method::{self as m, METHODS};
use openraft::error::{Infallible, InstallSnapshotError};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};

/// A Raft response as openraft's network carries it.
type Answered<T, E> = Result<T, openraft::error::RaftError<u64, E>>;

/// Stands for the in-process agent's own client node ID in an input's body (the ID is random
/// per start, as in dev mode): the `ClientAgent.*` seeds name it so they reach the real node.
pub const NODE_MARK: &str = "@node@";

/// How long a call of a method that waits by design ([`may_wait`]) is given: past this it is
/// dropped (as a caller that gives up), which is fine as long as the agent still answers the
/// health check.
const WAIT_WITHIN: Duration = Duration::from_secs(1);
/// Every other method must answer (or be accepted, for a stream) within this: its longest
/// legitimate wait is a Raft write's or read's timeout, a few seconds.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// How long a streaming answer is read (a log stream never ends by itself).
const STREAM_FOR: Duration = Duration::from_millis(50);
/// The most of a streaming answer read.
const STREAM_MAX: usize = 1 << 20;
/// The health check after each call must answer within this.
const HEALTH_WITHIN: Duration = Duration::from_secs(10);

/// Tokens an input picks from (flags bits 1-2): none, the management token, a well-formed
/// unknown one, a malformed one.
const UNKNOWN_TOKEN: &str = "8d5a6c3e-0000-4000-8000-000000000000";
const MALFORMED_TOKEN: &str = "not-a-token";

fn agent() -> &'static InProcessAgent {
    static AGENT: OnceLock<InProcessAgent> = OnceLock::new();
    AGENT.get_or_init(
        || match crate::runtime().block_on(InProcessAgent::start()) {
            Ok(agent) => agent,
            Err(e) => panic!("the in-process agent does not start: {e}"),
        },
    )
}

/// One RPC call of any method of the router's own table ([`METHODS`]), with any body.
///
/// The input is `[flags][method][body]`: `method` indexes [`METHODS`] (modulo its length, so a
/// method added to the table is fuzzed without a change here); `flags & 1` calls as a server
/// (proving the server key), else anonymously; `flags >> 1 & 3` picks the token (none,
/// management, unknown, malformed). [`NODE_MARK`] in the body becomes the agent's own client
/// node ID.
///
/// Invariant: no panic on any thread; the reply is either a decoded answer (JSON for the
/// agent's methods, the Raft response type for `Raft.*`, an `HTTP.Forward` stream starting with
/// its response head; profiles are opaque bytes) or a clear error (a 4xx or 5xx code with a
/// message, and a 4xx when the message says the request is bad), or, for a method that waits
/// by design ([`may_wait`]), the call is still waiting after [`WAIT_WITHIN`] (every other
/// method answers within [`ANSWER_WITHIN`]); and afterwards the agent answers `Status.Ping`
/// over another connection within [`HEALTH_WITHIN`]. The agent lives for the whole process: its
/// Raft log, state and connections carry over from input to input, as a real server's do.
pub fn rpc_methods(data: &[u8]) {
    let [flags, pick, body @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*pick) % METHODS.len()].name;
    let caller = if flags & 1 != 0 {
        Caller::Server
    } else {
        Caller::Anonymous
    };
    let agent = agent();
    let token = match (flags >> 1) & 3 {
        1 => Some(agent.management_token()),
        2 => Some(UNKNOWN_TOKEN),
        3 => Some(MALFORMED_TOKEN),
        _ => None,
    };
    let body = with_node(body, agent.node_id());
    let within = if may_wait(method) {
        WAIT_WITHIN
    } else {
        ANSWER_WITHIN
    };
    crate::runtime().block_on(async {
        let result = agent.call(caller, method, token, body, within).await;
        if let Err(problem) = judge(method, result).await {
            panic!("{method} as {caller:?}: {problem}");
        }
        if let Err(e) = agent.health(HEALTH_WITHIN).await {
            panic!("after {method} as {caller:?}, the agent is not healthy: {e}");
        }
    });
}

/// `body` with every [`NODE_MARK`] replaced by `node`.
fn with_node(body: &[u8], node: &str) -> Vec<u8> {
    let mark = NODE_MARK.as_bytes();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        if rest.starts_with(mark) {
            out.extend_from_slice(node.as_bytes());
            rest = &rest[mark.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// Whether a call's outcome is a decoded answer, a clear error or a wait (see [`rpc_methods`]).
async fn judge(method: &str, result: Result<Answer, RpcError>) -> Result<(), String> {
    match result {
        Ok(Answer::Whole(body)) => decodes(method, &body),
        Ok(Answer::Stream(mut rx)) => {
            let mut chunks = Vec::new();
            let mut read = 0;
            let deadline = tokio::time::Instant::now() + STREAM_FOR;
            while read < STREAM_MAX {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(chunk)) => {
                        read += chunk.len();
                        chunks.push(chunk);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if method == m::HTTP_FORWARD {
                // The head may come after STREAM_FOR only if the request blocks; then nothing
                // came yet.
                if let Some(head) = chunks.first() {
                    serde_json::from_slice::<caravan_agent_core::client_rpc::ForwardedHead>(head)
                        .map_err(|e| format!("the forwarded answer's head does not decode: {e}"))?;
                }
            }
            Ok(())
        }
        Err(RpcError::Remote { code, message }) => {
            if !(400..600).contains(&code) {
                return Err(format!("refused with code {code}: {message}"));
            }
            if message.trim().is_empty() {
                return Err(format!("refused with code {code} and no message"));
            }
            let says_bad = message.contains("bad request") || message.contains("bad raft request");
            if says_bad && code >= 500 {
                return Err(format!(
                    "a bad request answered as a server error {code}: {message}"
                ));
            }
            Ok(())
        }
        // A method that waits by design; the health check tells a wait from a hang.
        Err(RpcError::Timeout(_)) if may_wait(method) => Ok(()),
        Err(RpcError::Timeout(t)) => Err(format!("no answer within {t:?}")),
        Err(other) => Err(format!("neither an answer nor a clear error: {other}")),
    }
}

/// The methods whose request says how long they may wait: a blocking allocation query
/// (`wait_ms`, up to 5 minutes), an eval dequeue (`timeout_ms`, up to 5 s), a CPU profile or
/// trace (`seconds`, up to an hour), an `HTTP.Forward` of a blocking query (`?index=&wait=`,
/// up to 10 minutes, before its head).
fn may_wait(method: &str) -> bool {
    matches!(
        method,
        m::NODE_GET_CLIENT_ALLOCS
            | m::EVAL_DEQUEUE
            | m::PROFILE
            | m::CLIENT_PROFILE
            | m::HTTP_FORWARD
    )
}

/// Whether a whole reply decodes as `method`'s answer.
fn decodes(method: &str, body: &[u8]) -> Result<(), String> {
    let typed = match method {
        // As the Raft network of the calling server decodes them.
        m::RAFT_APPEND => {
            codec::decode::<Answered<AppendEntriesResponse<u64>, Infallible>>(body).map(drop)
        }
        m::RAFT_VOTE => codec::decode::<Answered<VoteResponse<u64>, Infallible>>(body).map(drop),
        m::RAFT_SNAPSHOT => {
            codec::decode::<Answered<InstallSnapshotResponse<u64>, InstallSnapshotError>>(body)
                .map(drop)
        }
        m::RAFT_APPLY => codec::decode::<Result<Applied, RaftError>>(body).map(drop),
        m::RAFT_READ_INDEX => codec::decode::<Result<u64, RaftError>>(body).map(drop),
        // A profile's bytes are pprof's (gzipped protobuf, or text).
        m::PROFILE | m::CLIENT_PROFILE => Ok(()),
        _ => serde_json::from_slice::<serde_json::Value>(body)
            .map(drop)
            .map_err(|e| e.to_string()),
    };
    typed.map_err(|e| format!("the answer ({} bytes) does not decode: {e}", body.len()))
}

/// One input per method of the table: its sample body from the agent's own request types
/// ([`sample_requests`], the `ClientAgent.*` ones for [`NODE_MARK`]), called as a server with
/// the management token, and the same anonymously without one.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, (_, body)) in sample_requests(NODE_MARK).into_iter().enumerate() {
        let pick = u8::try_from(i).unwrap_or(0);
        for flags in [0b011, 0b000] {
            let mut input = vec![flags, pick];
            input.extend_from_slice(&body);
            out.push(input);
        }
    }
    out
}
