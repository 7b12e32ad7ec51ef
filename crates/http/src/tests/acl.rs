//! The ACL API (`/v1/acl/*`) and which token each agent endpoint lets through, over the
//! domain's own ACL table (`AclFake`) seeded with a token per policy.

use caravan_agent_core::acl::AclWrite;

use super::{
    ACLS, AGENT_READ, AGENT_WRITE, Case, MALFORMED, MGMT, NODE_DENY, NODE_READ, NODE_WRITE,
    NS_ONLY, TestApp, UNKNOWN, case, run,
};

/// The ACL area's one helper: each row on a fresh agent with ACLs on and the seeded state.
async fn check(cases: &[Case<'_>]) {
    run(ACLS, cases).await
}

/// A request through the application: status, headers, body.
async fn call(
    a: &TestApp,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let r = a.call(method, uri, token, body).await;
    (r.status, r.headers, r.body)
}

/// A token whose only policy `p` is deleted by the row's setup.
const P_READER: &str = "aaaaaaaa-0000-4000-8000-0000000000ff";

fn seed_p(t: &TestApp) {
    t.acl.apply(AclWrite::PolicyUpsert {
        name: "p".into(),
        description: String::new(),
        rules: "agent {\n  policy = \"read\"\n}".into(),
    });
    let token = caravan_agent_core::acl::Token {
        accessor_id: P_READER.replace("aaaaaaaa", "bbbbbbbb"),
        secret_id: P_READER.into(),
        name: "r".into(),
        token_type: caravan_agent_core::acl::TokenType::Client,
        policies: vec!["p".into()],
        global: false,
        create_time: "2026-01-01T00:00:00Z".into(),
        create_index: 0,
        modify_index: 0,
    };
    t.acl.apply(AclWrite::TokenCreate { token });
}

#[tokio::test]
async fn acl_api_rules() {
    check(&[
        case(
            "bootstrap twice",
            "POST /v1/acl/bootstrap",
            "400 ACL bootstrap already done",
        ),
        case(
            "bootstrap with ACLs off",
            "POST /v1/acl/bootstrap",
            "400 ACL support disabled",
        )
        .config("acl {\n enabled = false\n}\n"),
        case(
            "token/self with ACLs off",
            "GET /v1/acl/token/self",
            "400 ACL support disabled",
        )
        .config("acl {\n enabled = false\n}\n"),
        case(
            "bootstrap by GET",
            "GET /v1/acl/bootstrap",
            "405 Invalid method",
        ),
        case(
            "policies by PUT",
            "PUT /v1/acl/policies",
            "405 Invalid method",
        )
        .token(MGMT),
        case(
            "policy rules that do not parse",
            "POST /v1/acl/policy/p",
            "400 ~Invalid agent policy: \"super\"",
        )
        .token(MGMT)
        .body(r#"{"Name": "p", "Rules": "agent {\n  policy = \"super\"\n}"}"#),
        case(
            "policy name differs from the path",
            "POST /v1/acl/policy/p",
            "400 Policy name does not match request path",
        )
        .token(MGMT)
        .body(r#"{"Name": "q", "Rules": ""}"#),
        case(
            "policy without a body",
            "POST /v1/acl/policy/p",
            "400 Request body is empty",
        )
        .token(MGMT),
        case(
            "policy body that is no JSON",
            "POST /v1/acl/policy/p",
            "400 ^Invalid request: ",
        )
        .token(MGMT)
        .body("{nope"),
        case("a policy is written", "PUT /v1/acl/policy/p", "200")
            .token(MGMT)
            .body(r#"{"Name": "p", "Rules": "agent {\n  policy = \"read\"\n}"}"#),
        case(
            "reader lists policies",
            "GET /v1/acl/policies",
            "403 Permission denied",
        )
        .token(AGENT_READ),
        case(
            "reader lists tokens",
            "GET /v1/acl/tokens",
            "403 Permission denied",
        )
        .token(AGENT_READ),
        case(
            "reader reads a policy",
            "GET /v1/acl/policy/agent-read",
            "403 Permission denied",
        )
        .token(AGENT_READ),
        case(
            "reader deletes a policy",
            "DELETE /v1/acl/policy/agent-read",
            "403 Permission denied",
        )
        .token(AGENT_READ),
        case(
            "reader reads a token",
            "GET /v1/acl/token/bbbbbbbb-0000-4000-8000-000000000001",
            "403 Permission denied",
        )
        .token(AGENT_READ),
        case(
            "management before the body",
            "POST /v1/acl/token",
            "403 Permission denied",
        )
        .token(AGENT_WRITE)
        .body("{nope"),
        case(
            "token/self of a reader",
            "GET /v1/acl/token/self",
            "200 ~\"Policies\":[\"agent-read\"]",
        )
        .token(AGENT_READ),
        case(
            "token/self without a token",
            "GET /v1/acl/token/self",
            "403 ACL token not found",
        ),
        case(
            "token/self of an unknown secret",
            "GET /v1/acl/token/self",
            "403 ACL token not found",
        )
        .token(UNKNOWN),
        case(
            "client token without policies",
            "POST /v1/acl/token",
            "400 client token missing policies",
        )
        .token(MGMT)
        .body(r#"{"Type": "client"}"#),
        case(
            "token of an unknown type",
            "POST /v1/acl/token",
            "400 token type must be client or management, got \"root\"",
        )
        .token(MGMT)
        .body(r#"{"Type": "root"}"#),
        case(
            "token without a body",
            "POST /v1/acl/token",
            "400 Request body is empty",
        )
        .token(MGMT),
        case(
            "token naming an unknown policy",
            "POST /v1/acl/token",
            "400 token references non-existent policy \"x\"",
        )
        .token(MGMT)
        .body(r#"{"Policies": ["x"]}"#),
        case(
            "management token with policies",
            "POST /v1/acl/token",
            "400 management token cannot be associated with policies",
        )
        .token(MGMT)
        .body(r#"{"Type": "management", "Policies": ["agent-read"]}"#),
        case(
            "unknown policy",
            "GET /v1/acl/policy/missing",
            "404 ACL policy not found",
        )
        .token(MGMT),
        case(
            "unknown token",
            UNKNOWN_TOKEN_URI,
            "404 ACL token not found",
        )
        .token(MGMT),
        case(
            "updating an unknown token",
            UPDATE_UNKNOWN_URI,
            "400 ACL token not found",
        )
        .token(MGMT)
        .body(r#"{"Policies": ["agent-read"]}"#),
        case(
            "token list stubs carry no secrets",
            "GET /v1/acl/tokens",
            "200 !SecretID",
        )
        .token(MGMT),
        case(
            "token list has every token",
            "GET /v1/acl/tokens",
            "200 ~\"AccessorID\":\"bbbbbbbb-0000-4000-8000-000000000007\"",
        )
        .token(MGMT),
        case(
            "policy list names",
            "GET /v1/acl/policies",
            "200 ^[{\"Name\":\"agent-read\"",
        )
        .token(MGMT),
        case(
            "policy list stubs carry no rules",
            "GET /v1/acl/policies",
            "200 !Rules",
        )
        .token(MGMT),
        case(
            "a policy is deleted",
            "DELETE /v1/acl/policy/agent-read",
            "200",
        )
        .token(MGMT),
        case(
            "a token whose policy is gone grants nothing",
            "GET /v1/agent/self",
            "403 Permission denied",
        )
        .token(P_READER)
        .setup(|t| {
            seed_p(t);
            t.acl.apply(AclWrite::PolicyDelete { name: "p".into() });
        }),
        case(
            "while its policy exists it does",
            "GET /v1/agent/self",
            "200 *",
        )
        .token(P_READER)
        .setup(seed_p),
        case("unknown ACL route", "GET /v1/acl/nope", "404"),
    ])
    .await;
}

const UNKNOWN_TOKEN_URI: &str = "GET /v1/acl/token/8d5a6c3e-0000-4000-8000-000000000000";
const UPDATE_UNKNOWN_URI: &str = "POST /v1/acl/token/8d5a6c3e-0000-4000-8000-000000000000";
/// A caller: its name, its token, whether each endpoint lets it through, the text of a refusal,
/// and whether the state has an anonymous policy (`agent:read`).
type Who = (
    &'static str,
    Option<&'static str>,
    [bool; 7],
    &'static str,
    bool,
);

const WARNING: &str =
    "anonymous server join is deprecated and will be removed in a future version of Nomad";

/// Which token each agent endpoint lets through (the process test `enforcement_table`'s rules):
/// self, members, join (a warning, never a refusal), force-leave, servers GET and PUT, host;
/// health never checks tokens.
#[tokio::test]
async fn enforcement_table() {
    let endpoints = [
        "GET /v1/agent/self",
        "GET /v1/agent/members",
        "PUT /v1/agent/join?address=127.0.0.1:4648",
        "PUT /v1/agent/force-leave?node=nobody.global",
        "GET /v1/agent/servers",
        "PUT /v1/agent/servers?address=127.0.0.1:4647",
        "GET /v1/agent/host",
    ];
    let pd = "Permission denied";
    let malformed = caravan_agent_core::acl::MALFORMED_TOKEN;
    let none = [false; 7];
    //                                                       self  members join  fl    sGET  sPUT  host
    let agent_read = [true, false, false, false, true, false, true];
    let rows: [Who; 11] = [
        ("no token", None, none, pd, false),
        ("unknown", Some(UNKNOWN), none, pd, false),
        ("malformed", Some(MALFORMED), none, malformed, false),
        ("agent:read", Some(AGENT_READ), agent_read, pd, false),
        (
            "agent:write",
            Some(AGENT_WRITE),
            [true, false, true, true, true, true, true],
            pd,
            false,
        ),
        (
            "node:read",
            Some(NODE_READ),
            [false, true, false, false, false, false, false],
            pd,
            false,
        ),
        (
            "node:write",
            Some(NODE_WRITE),
            [false, true, false, false, false, false, false],
            pd,
            false,
        ),
        ("node deny", Some(NODE_DENY), agent_read, pd, false),
        ("namespace only", Some(NS_ONLY), none, pd, false),
        ("management", Some(MGMT), [true; 7], pd, false),
        ("anonymous policy", None, agent_read, pd, true),
    ];
    let mut specs = Vec::new();
    for (who, token, allowed, denied, anonymous) in rows {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let want = if endpoint.contains("/join") {
                let warning = if allowed[i] { "" } else { WARNING };
                format!("200 ~\"warning\":\"{warning}\"")
            } else if allowed[i] {
                "200 *".to_string()
            } else if endpoint.contains("/members") {
                // Members answers every authentication failure as Nomad's members RPC does.
                format!("403 {pd}")
            } else {
                format!("403 {denied}")
            };
            specs.push((
                format!("{who}: {endpoint}"),
                *endpoint,
                token,
                want,
                anonymous,
            ));
        }
        let name = format!("{who}: health never checks tokens");
        specs.push((
            name,
            "GET /v1/agent/health",
            token,
            "200 *".into(),
            anonymous,
        ));
    }
    let mut cases: Vec<Case<'_>> = specs
        .iter()
        .map(|(name, endpoint, token, want, anonymous)| {
            let mut c = case(name, endpoint, want);
            if let Some(token) = token {
                c = c.token(token);
            }
            if *anonymous {
                c = c.setup(|t| {
                    t.acl.apply(AclWrite::PolicyUpsert {
                        name: "anonymous".into(),
                        description: String::new(),
                        rules: "agent {\n  policy = \"read\"\n}".into(),
                    })
                });
            }
            c
        })
        .collect();
    let bearer = format!("Bearer {AGENT_READ}");
    cases.push(
        case(
            "Authorization: Bearer works as X-Nomad-Token",
            "GET /v1/agent/self",
            "200 *",
        )
        .header("Authorization", &bearer),
    );
    check(&cases).await;
}

type AclCase = (
    &'static str,
    String,
    &'static str,
    u16,
    &'static str,
    Option<fn(&AclWrite) -> bool>,
);

/// The ACL writes the handlers proposed, from `from` on.
fn acl_writes(a: &TestApp, from: usize) -> Vec<AclWrite> {
    a.acl.writes.lock().unwrap()[from..].to_vec()
}

fn is_rfc3339(text: &str) -> bool {
    humantime::parse_rfc3339(text).is_ok()
}

#[tokio::test]
async fn acl_handlers_propose_typed_writes_with_fresh_ids_and_time() {
    use caravan_agent_core::acl::is_uuid;
    let a = TestApp::new(ACLS);
    a.acl.reset();
    let (s, _, b) = call(&a, "POST", "/v1/acl/bootstrap", None, "").await;
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let root = v["SecretID"].as_str().unwrap().to_string();
    let [
        AclWrite::Bootstrap {
            accessor_id,
            secret_id,
            create_time,
        },
    ] = &acl_writes(&a, 0)[..]
    else {
        panic!("{:?}", acl_writes(&a, 0));
    };
    assert!(is_uuid(accessor_id) && is_uuid(secret_id) && accessor_id != secret_id);
    assert!(is_rfc3339(create_time), "{create_time}");
    assert_eq!(
        (v["AccessorID"].as_str(), v["CreateTime"].as_str()),
        (Some(accessor_id.as_str()), Some(create_time.as_str()))
    );

    // Each case: a request, what it answers, and the write it proposed (None: no write).
    let unknown = uuid::Uuid::new_v4().to_string();
    let cases: Vec<AclCase> = vec![
        (
            "POST",
            "/v1/acl/bootstrap".into(),
            "",
            400,
            "ACL bootstrap already done",
            Some(|w| matches!(w, AclWrite::Bootstrap { .. })),
        ),
        (
            "PUT",
            "/v1/acl/policy/r".into(),
            r#"{"Description": "d", "Rules": "node { policy = \"read\" }"}"#,
            200,
            "",
            Some(|w| {
                *w == AclWrite::PolicyUpsert {
                    name: "r".into(),
                    description: "d".into(),
                    rules: "node { policy = \"read\" }".into(),
                }
            }),
        ),
        (
            "PUT",
            "/v1/acl/policy/bad".into(),
            r#"{"Rules": "node { policy = \"sideways\" }"}"#,
            400,
            "",
            Some(|w| matches!(w, AclWrite::PolicyUpsert { name, .. } if name == "bad")),
        ),
        (
            "PUT",
            "/v1/acl/policy/r".into(),
            r#"{"Name": "other"}"#,
            400,
            "Policy name does not match request path",
            None,
        ),
        (
            "POST",
            "/v1/acl/token".into(),
            r#"{"Policies": ["x"]}"#,
            400,
            r#"token references non-existent policy "x""#,
            Some(|w| matches!(w, AclWrite::TokenCreate { .. })),
        ),
        (
            "POST",
            "/v1/acl/token".into(),
            r#"{"Type": "management", "Policies": ["r"]}"#,
            400,
            "management token cannot be associated with policies",
            Some(|w| matches!(w, AclWrite::TokenCreate { .. })),
        ),
        (
            "POST",
            "/v1/acl/token".into(),
            r#"{"Type": "root"}"#,
            400,
            r#"token type must be client or management, got "root""#,
            None,
        ),
        (
            "POST",
            format!("/v1/acl/token/{unknown}"),
            r#"{"Policies": ["r"]}"#,
            400,
            "ACL token not found",
            Some(|w| matches!(w, AclWrite::TokenUpdate { .. })),
        ),
        (
            "DELETE",
            "/v1/acl/policy/gone".into(),
            "",
            200,
            "",
            Some(|w| {
                *w == AclWrite::PolicyDelete {
                    name: "gone".into(),
                }
            }),
        ),
        (
            "DELETE",
            format!("/v1/acl/token/{unknown}"),
            "",
            200,
            "",
            Some(|w| matches!(w, AclWrite::TokenDelete { .. })),
        ),
    ];
    for (method, uri, body, status, text, write) in cases {
        let before = acl_writes(&a, 0).len();
        let (s, _, b) = call(&a, method, &uri, Some(&root), body).await;
        assert_eq!(s, status, "{method} {uri}: {b}");
        if !text.is_empty() || status == 200 {
            assert_eq!(b, text, "{method} {uri}");
        }
        let proposed = acl_writes(&a, before);
        match write {
            Some(expected) => {
                assert!(
                    proposed.len() == 1 && expected(&proposed[0]),
                    "{method} {uri}: {proposed:?}"
                )
            }
            None => assert!(proposed.is_empty(), "{method} {uri}: {proposed:?}"),
        }
    }

    // Two creations: fresh, distinct UUIDs and an RFC 3339 time in each write and token; an
    // update keeps the token's IDs.
    let mut seen = vec![accessor_id.clone(), secret_id.clone()];
    for name in ["one", "two"] {
        let before = acl_writes(&a, 0).len();
        let body = format!(r#"{{"Name": "{name}", "Policies": ["r"]}}"#);
        let (s, _, b) = call(&a, "POST", "/v1/acl/token", Some(&root), &body).await;
        assert_eq!(s, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let [AclWrite::TokenCreate { token }] = &acl_writes(&a, before)[..] else {
            panic!("{:?}", acl_writes(&a, before));
        };
        for id in [&token.accessor_id, &token.secret_id] {
            assert!(is_uuid(id) && !seen.contains(id), "{id} in {seen:?}");
            seen.push(id.clone());
        }
        assert!(is_rfc3339(&token.create_time), "{}", token.create_time);
        assert_eq!(v["SecretID"].as_str(), Some(token.secret_id.as_str()));
        assert_eq!(v["CreateTime"].as_str(), Some(token.create_time.as_str()));

        let uri = format!("/v1/acl/token/{}", token.accessor_id);
        let (s, _, b) = call(
            &a,
            "PUT",
            &uri,
            Some(&root),
            r#"{"Policies": ["r"], "Name": "renamed"}"#,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let u: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            (
                u["AccessorID"].as_str(),
                u["SecretID"].as_str(),
                u["Name"].as_str()
            ),
            (
                Some(token.accessor_id.as_str()),
                Some(token.secret_id.as_str()),
                Some("renamed")
            )
        );
    }
}
