//! `/v1/agent/keyring/*` over a fake pool of three members that keep their keys by the domain's
//! rules (`KeyList`): check order, texts, and the gathered answer.

use caravan_agent_core::keyring::{GossipKey, KeyList, KeyringAnswer, KeyringOp, MemberKeyReply};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::{ACLS, AGENT_READ, AGENT_WRITE, CLIENT_ONLY, Case, MGMT, case, run};

/// Three members, `s1` to `s3`, each holding key `K1`; `s3` does not answer once `partial`
/// is set.
pub(super) struct KeyringFake(Mutex<Vec<KeyList>>, AtomicBool);

impl KeyringFake {
    pub(super) fn new() -> KeyringFake {
        let k1 = GossipKey::from_base64(K1).unwrap();
        KeyringFake(
            Mutex::new(vec![KeyList::new(k1); 3]),
            AtomicBool::new(false),
        )
    }
}

impl crate::GossipKeyring for KeyringFake {
    async fn keyring(&self, op: KeyringOp) -> Result<KeyringAnswer, String> {
        let mut members = self.0.lock();
        let mut answer = KeyringAnswer::asking(members.len());
        for (i, list) in members.iter_mut().enumerate() {
            let name = format!("s{}.global", i + 1);
            if self.1.load(Ordering::Relaxed) && i == 2 {
                answer.add(&name, Err("connection refused".into()));
                continue;
            }
            let outcome = list.apply(&op).map(|_| &*list);
            answer.add(&name, Ok(MemberKeyReply::of(&op, outcome)));
        }
        answer.finish()
    }
}

const K1: &str = "pUqJrVyVRyk1FO9dtyNPhA==";
const K2: &str = "HD5HAaR4KRF2sOBKR9SH1+eVxyGMzXPAdgQ5j9lHEyk=";

async fn check(cases: &[Case<'_>]) {
    run("", cases).await
}

#[tokio::test]
async fn keyring_rules() {
    let install = format!("{{\"Key\":\"{K2}\"}}");
    let use_ = install.clone();
    let remove_k1 = format!("{{\"Key\":\"{K1}\"}}");
    check(&[
        case(
            "list",
            "GET /v1/agent/keyring/list",
            &format!(r#"200 {{"Messages":{{}},"Keys":{{"{K1}":3}},"NumNodes":3}}"#),
        )
        .answers_header("content-type", Some("application/json")),
        case(
            "list by any method",
            "DELETE /v1/agent/keyring/list",
            "200 *",
        ),
        case(
            "a client answers 501",
            "GET /v1/agent/keyring/list",
            "501 Invalid method",
        )
        .config(CLIENT_ONLY),
        case(
            "an unknown operation",
            "PUT /v1/agent/keyring/rotate",
            "404 resource not found",
        ),
        case(
            "an empty operation",
            "PUT /v1/agent/keyring/",
            "404 resource not found",
        ),
        case(
            "install without a body",
            "PUT /v1/agent/keyring/install",
            "400 Request body is empty",
        ),
        case(
            "use without a body",
            "PUT /v1/agent/keyring/use",
            "400 Request body is empty",
        ),
        case(
            "remove without a body",
            "PUT /v1/agent/keyring/remove",
            "400 Request body is empty",
        ),
        case(
            "a body that is not JSON",
            "PUT /v1/agent/keyring/install",
            "400 ^expected ident",
        )
        .body("nope"),
        case(
            "a key that is not a string",
            "PUT /v1/agent/keyring/use",
            "400 ^invalid type: integer",
        )
        .body(r#"{"Key":5}"#),
        case(
            "a key that is not base64",
            "PUT /v1/agent/keyring/install",
            "400 ^Invalid key: ",
        )
        .body(r#"{"Key":"not base64!"}"#),
        case(
            "a key of a wrong size",
            "PUT /v1/agent/keyring/install",
            "400 key size must be 16, 24 or 32 bytes",
        )
        .body(r#"{"Key":"AAAA"}"#),
        case(
            "no key at all",
            "PUT /v1/agent/keyring/install",
            "400 key size must be 16, 24 or 32 bytes",
        )
        .body("{}"),
        case(
            "install",
            "PUT /v1/agent/keyring/install",
            r#"200 {"Messages":{},"Keys":{},"NumNodes":3}"#,
        )
        .body(&install),
        case(
            "use of a key never installed",
            "PUT /v1/agent/keyring/use",
            "500 3/3 nodes reported failure",
        )
        .body(&use_),
        case(
            "remove of the primary",
            "POST /v1/agent/keyring/remove",
            "500 3/3 nodes reported failure",
        )
        .body(&remove_k1),
        case(
            "a member that does not answer",
            "GET /v1/agent/keyring/list",
            "500 2/3 nodes reported success",
        )
        .setup(|t| t.keyring.1.store(true, Ordering::Relaxed)),
        // ACLs: agent:write, even for list (Path B texts).
        case(
            "list without a token",
            "GET /v1/agent/keyring/list",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "list with agent:read",
            "GET /v1/agent/keyring/list",
            "403 Permission denied",
        )
        .config(ACLS)
        .token(AGENT_READ),
        case(
            "list with agent:write",
            "GET /v1/agent/keyring/list",
            "200 *",
        )
        .config(ACLS)
        .token(AGENT_WRITE),
        case(
            "list with management",
            "GET /v1/agent/keyring/list",
            "200 *",
        )
        .config(ACLS)
        .token(MGMT),
        case(
            "ACL before the operation name",
            "GET /v1/agent/keyring/rotate",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "ACL before the body",
            "PUT /v1/agent/keyring/install",
            "403 Permission denied",
        )
        .config(ACLS),
        case(
            "kind before ACL",
            "GET /v1/agent/keyring/list",
            "501 Invalid method",
        )
        .config("server {\n enabled = false\n}\nacl {\n enabled = true\n}\n"),
    ])
    .await;
}
