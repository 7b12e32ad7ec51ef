//! The replicated state machine's decoders: postcard commands (`apply`) and snapshots
//! (`restore`), on a real [`ClusterState`].

use std::sync::Arc;

use caravan_agent_core::acl::AclWrite;
use caravan_cluster::command::{decode, encode};
use caravan_cluster::{ClusterState, Command, StateSnapshot};
use caravan_raft::StateMachine;
use caravan_sched::broker::EvalBroker;

fn state() -> ClusterState {
    ClusterState::new(Arc::new(EvalBroker::new(Default::default())), [5; 32])
}

/// A committed log entry or a snapshot, as every replica decodes them: `[mode][bytes]`.
/// `mode & 1 == 0`: a command applied ([`ClusterState::apply_bytes`]) on a state holding one
/// policy; else a snapshot restored ([`StateMachine::restore`]).
///
/// Invariant: no panic, whatever the bytes; a command or snapshot that decodes encodes back to
/// bytes that decode to the same value (print → parse round trip); a restored state's own
/// snapshot restores to the same state.
pub fn cluster(data: &[u8]) {
    let [mode, bytes @ ..] = data else {
        return;
    };
    let state = state();
    if mode & 1 == 0 {
        if let Ok(command) = decode::<Command>(bytes) {
            let again = encode(&command).and_then(|b| decode::<Command>(&b));
            assert_eq!(
                again.as_ref().ok(),
                Some(&command),
                "a command re-encoded otherwise"
            );
        }
        state.apply_command(
            1,
            Command::Acl(AclWrite::PolicyUpsert {
                name: "p".into(),
                description: String::new(),
                rules: "node {\n  policy = \"read\"\n}".into(),
            }),
        );
        let _ = state.apply_bytes(2, bytes);
    } else {
        if let Ok(snapshot) = decode::<StateSnapshot>(bytes) {
            let again = encode(&snapshot).and_then(|b| decode::<StateSnapshot>(&b));
            assert_eq!(
                again.as_ref().ok(),
                Some(&snapshot),
                "a snapshot re-encoded otherwise"
            );
        }
        if state.restore(bytes).is_ok() {
            let saved = state.snapshot();
            let copy = self::state();
            match saved {
                Ok(saved) => {
                    assert!(
                        copy.restore(&saved).is_ok(),
                        "a state's own snapshot is refused"
                    );
                    assert_eq!(
                        copy.export(),
                        state.export(),
                        "a snapshot restored otherwise"
                    );
                }
                Err(e) => panic!("a restored state does not snapshot: {e}"),
            }
        }
    }
}

/// Seed inputs: a few commands and a snapshot of a state they built.
pub fn seeds() -> Vec<Vec<u8>> {
    let commands = [
        Command::Acl(AclWrite::PolicyUpsert {
            name: "readers".into(),
            description: "d".into(),
            rules: "agent {\n  policy = \"read\"\n}".into(),
        }),
        Command::JobDeregister {
            id: "web".into(),
            seed: 1,
        },
        Command::Batch(vec![Command::JobDeregister {
            id: "x".into(),
            seed: 2,
        }]),
    ];
    let mut out = Vec::new();
    let state = state();
    for (i, c) in commands.iter().enumerate() {
        if let Ok(bytes) = encode(c) {
            let mut input = vec![0];
            input.extend_from_slice(&bytes);
            out.push(input);
        }
        state.apply_command(i as u64 + 1, c.clone());
    }
    if let Ok(snapshot) = state.snapshot() {
        let mut input = vec![1];
        input.extend(snapshot);
        out.push(input);
    }
    out
}
