//! ACL policies and tokens: rules parsed from HCL, capability evaluation (deny wins, write implies
//! read, management allows everything), and the token/policy store as a pure state machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A coarse policy level for `agent`, `node`, `operator` and namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// No grant at this level (absent).
    #[default]
    None,
    /// Read.
    Read,
    /// Read and write.
    Write,
    /// Explicit deny: wins over every grant.
    Deny,
}

impl Level {
    fn parse(block: &str, value: &str) -> Result<Level, CoreError> {
        match value {
            "deny" => Ok(Level::Deny),
            "read" => Ok(Level::Read),
            "write" => Ok(Level::Write),
            // Accepted by Nomad's parser for these blocks, grants nothing here.
            "scale" if block != "namespace" => Ok(Level::None),
            "scale" => Ok(Level::Read),
            "list" if block == "namespace" => Ok(Level::Read),
            _ => Err(CoreError::Invalid(format!(
                "Invalid {block} policy: {value:?}"
            ))),
        }
    }

    /// Combines two grants: deny wins, else the stronger grant.
    pub fn merge(self, other: Level) -> Level {
        if self == Level::Deny || other == Level::Deny {
            Level::Deny
        } else {
            self.max(other)
        }
    }

    fn allows_read(self) -> bool {
        matches!(self, Level::Read | Level::Write)
    }

    fn allows_write(self) -> bool {
        self == Level::Write
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimpleRule {
    policy: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceRule {
    policy: Option<String>,
    capabilities: Option<Vec<String>>,
    /// Accepted (Nomad's `variables` block); Caravan has no variables to guard.
    #[serde(rename = "variables")]
    _variables: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    agent: Option<SimpleRule>,
    node: Option<SimpleRule>,
    operator: Option<SimpleRule>,
    quota: Option<SimpleRule>,
    plugin: Option<SimpleRule>,
    namespace: Option<BTreeMap<String, NamespaceRule>>,
    host_volume: Option<BTreeMap<String, NamespaceRule>>,
}

/// Namespace capabilities Nomad knows.
const NAMESPACE_CAPABILITIES: &[&str] = &[
    "deny",
    "list-jobs",
    "parse-job",
    "read-job",
    "submit-job",
    "dispatch-job",
    "read-logs",
    "read-fs",
    "alloc-exec",
    "alloc-node-exec",
    "alloc-lifecycle",
    "csi-write-volume",
    "csi-read-volume",
    "csi-list-volume",
    "csi-mount-volume",
    "csi-register-plugin",
    "list-scaling-policies",
    "read-scaling-policy",
    "read-job-scaling",
    "scale-job",
    "sentinel-override",
    "submit-recommendation",
    "host-volume-create",
    "host-volume-register",
    "host-volume-read",
    "host-volume-write",
    "host-volume-delete",
];

/// The parsed rules of one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `agent { policy }`.
    pub agent: Level,
    /// `node { policy }`.
    pub node: Level,
    /// `operator { policy }`.
    pub operator: Level,
    /// `namespace "name" { policy capabilities }`.
    pub namespaces: BTreeMap<String, (Level, Vec<String>)>,
}

/// Parses HCL policy rules; unknown blocks, keys or values are errors naming them.
pub fn parse_rules(text: &str) -> Result<Rules, CoreError> {
    let (spread, _) = crate::config::oneline::spread_single_line_blocks(text);
    let text = crate::config::file::hcl1_map_blocks_to_objects(&spread);
    let file: PolicyFile = {
        let de = hcl::de::Deserializer::from_str(&text)
            .map_err(|e| CoreError::Invalid(format!("Failed to parse ACL policy: {e}")))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            CoreError::Invalid(format!(
                "Failed to parse ACL policy: {path}: {}",
                e.into_inner()
            ))
        })?
    };
    let simple = |block: &str, rule: &Option<SimpleRule>| match rule {
        Some(r) => Level::parse(block, &r.policy),
        None => Ok(Level::None),
    };
    let mut rules = Rules {
        agent: simple("agent", &file.agent)?,
        node: simple("node", &file.node)?,
        operator: simple("operator", &file.operator)?,
        namespaces: BTreeMap::new(),
    };
    simple("quota", &file.quota)?;
    simple("plugin", &file.plugin)?;
    for (_, rule) in file.host_volume.unwrap_or_default() {
        if let Some(p) = &rule.policy {
            Level::parse("host_volume", p)?;
        }
    }
    for (name, rule) in file.namespace.unwrap_or_default() {
        let level = match &rule.policy {
            Some(p) => Level::parse("namespace", p)?,
            None => Level::None,
        };
        let caps = rule.capabilities.unwrap_or_default();
        if let Some(bad) = caps
            .iter()
            .find(|c| !NAMESPACE_CAPABILITIES.contains(&c.as_str()))
        {
            return Err(CoreError::Invalid(format!(
                "Invalid namespace policy: {name:?}: unknown capability {bad:?}"
            )));
        }
        rules.namespaces.insert(name, (level, caps));
    }
    Ok(rules)
}

/// What a caller may do: the merge of its token's policies, or everything for management.
/// Serializable because a server answers a client agent's `ACL.ResolveToken` with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    management: bool,
    agent: Level,
    node: Level,
    operator: Level,
}

impl Acl {
    /// Everything allowed (management tokens; ACLs disabled).
    pub fn management() -> Acl {
        Acl {
            management: true,
            agent: Level::Write,
            node: Level::Write,
            operator: Level::Write,
        }
    }

    /// Nothing allowed.
    pub fn deny_all() -> Acl {
        Acl {
            management: false,
            agent: Level::None,
            node: Level::None,
            operator: Level::None,
        }
    }

    /// Merges policies: deny anywhere wins, else write over read.
    pub fn from_rules<'a>(rules: impl IntoIterator<Item = &'a Rules>) -> Acl {
        let mut acl = Acl::deny_all();
        for r in rules {
            acl.agent = acl.agent.merge(r.agent);
            acl.node = acl.node.merge(r.node);
            acl.operator = acl.operator.merge(r.operator);
        }
        acl
    }

    /// Management token.
    pub fn is_management(&self) -> bool {
        self.management
    }

    /// `agent:read`.
    pub fn allow_agent_read(&self) -> bool {
        self.management || self.agent.allows_read()
    }

    /// `agent:write`.
    pub fn allow_agent_write(&self) -> bool {
        self.management || self.agent.allows_write()
    }

    /// `node:read`.
    pub fn allow_node_read(&self) -> bool {
        self.management || self.node.allows_read()
    }

    /// `node:write`.
    pub fn allow_node_write(&self) -> bool {
        self.management || self.node.allows_write()
    }

    /// `operator:read`.
    pub fn allow_operator_read(&self) -> bool {
        self.management || self.operator.allows_read()
    }

    /// `operator:write`.
    pub fn allow_operator_write(&self) -> bool {
        self.management || self.operator.allows_write()
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// HCL rules (validated on write).
    pub rules: String,
    /// Raft-style index of creation.
    pub create_index: u64,
    /// Index of the last change.
    pub modify_index: u64,
}

/// Token kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenType {
    /// Policies decide.
    Client,
    /// Everything allowed.
    Management,
}

impl TokenType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Client => "client",
            TokenType::Management => "management",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<TokenType> {
        match text {
            "client" => Some(TokenType::Client),
            "management" => Some(TokenType::Management),
            _ => None,
        }
    }
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public ID.
    pub accessor_id: String,
    /// The secret callers send.
    pub secret_id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub token_type: TokenType,
    /// Policy names (client tokens).
    pub policies: Vec<String>,
    /// Replicated to all regions.
    pub global: bool,
    /// Creation time, RFC 3339 with nanoseconds.
    pub create_time: String,
    /// Index of creation.
    pub create_index: u64,
    /// Index of the last change.
    pub modify_index: u64,
}

/// Every ACL object, with a monotonically increasing index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclState {
    /// Policies by name.
    pub policies: BTreeMap<String, Policy>,
    /// Tokens by accessor ID.
    pub tokens: BTreeMap<String, Token>,
    /// Whether bootstrap has happened.
    pub bootstrapped: bool,
    /// Last index used.
    pub index: u64,
}

/// Name of the policy applied to requests without a token.
pub const ANONYMOUS_POLICY: &str = "anonymous";

impl AclState {
    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Creates the first management token; fails once done.
    pub fn bootstrap(
        &mut self,
        accessor_id: String,
        secret_id: String,
        create_time: String,
    ) -> Result<Token, CoreError> {
        if self.bootstrapped {
            return Err(CoreError::Invalid("ACL bootstrap already done".into()));
        }
        let index = self.next_index();
        let token = Token {
            accessor_id,
            secret_id,
            name: "Bootstrap Token".into(),
            token_type: TokenType::Management,
            policies: Vec::new(),
            global: true,
            create_time,
            create_index: index,
            modify_index: index,
        };
        self.tokens.insert(token.accessor_id.clone(), token.clone());
        self.bootstrapped = true;
        Ok(token)
    }

    /// Creates or replaces a policy after checking its name and rules.
    pub fn upsert_policy(
        &mut self,
        name: &str,
        description: String,
        rules: String,
    ) -> Result<(), CoreError> {
        validate_policy_name(name)?;
        parse_rules(&rules)?;
        let index = self.next_index();
        let create_index = self.policies.get(name).map_or(index, |p| p.create_index);
        self.policies.insert(
            name.to_string(),
            Policy {
                name: name.to_string(),
                description,
                rules,
                create_index,
                modify_index: index,
            },
        );
        Ok(())
    }

    /// Deletes a policy; deleting an absent one is not an error.
    pub fn delete_policy(&mut self, name: &str) {
        if self.policies.remove(name).is_some() {
            self.next_index();
        }
    }

    /// Creates a token after checking its type and policies.
    pub fn create_token(&mut self, mut token: Token) -> Result<Token, CoreError> {
        match token.token_type {
            TokenType::Client if token.policies.is_empty() => {
                return Err(CoreError::Invalid("client token missing policies".into()));
            }
            TokenType::Management if !token.policies.is_empty() => {
                return Err(CoreError::Invalid(
                    "management token cannot be associated with policies".into(),
                ));
            }
            _ => {}
        }
        if token.name.len() > 256 {
            return Err(CoreError::Invalid("token name too long".into()));
        }
        let index = self.next_index();
        token.create_index = index;
        token.modify_index = index;
        self.tokens.insert(token.accessor_id.clone(), token.clone());
        Ok(token)
    }

    /// Updates a token's name, type, policies and scope; its IDs stay.
    pub fn update_token(
        &mut self,
        accessor_id: &str,
        mut changes: Token,
    ) -> Result<Token, CoreError> {
        let Some(old) = self.tokens.get(accessor_id).cloned() else {
            return Err(CoreError::Invalid("ACL token not found".into()));
        };
        changes.accessor_id = old.accessor_id;
        changes.secret_id = old.secret_id;
        changes.create_time = old.create_time;
        let create_index = old.create_index;
        let mut token = self.create_token(changes)?;
        token.create_index = create_index;
        self.tokens.insert(token.accessor_id.clone(), token.clone());
        Ok(token)
    }

    /// Deletes a token; absent is not an error.
    pub fn delete_token(&mut self, accessor_id: &str) {
        if self.tokens.remove(accessor_id).is_some() {
            self.next_index();
        }
    }

    /// The permissions of a token (missing policies grant nothing).
    pub fn acl_for(&self, token: &Token) -> Acl {
        if token.token_type == TokenType::Management {
            return Acl::management();
        }
        let rules: Vec<Rules> = token
            .policies
            .iter()
            .filter_map(|name| self.policies.get(name))
            .filter_map(|p| parse_rules(&p.rules).ok())
            .collect();
        Acl::from_rules(&rules)
    }

    /// The permissions of a request without a token: the `anonymous` policy, if any.
    pub fn anonymous_acl(&self) -> Acl {
        match self
            .policies
            .get(ANONYMOUS_POLICY)
            .map(|p| parse_rules(&p.rules))
        {
            Some(Ok(rules)) => Acl::from_rules([&rules]),
            _ => Acl::deny_all(),
        }
    }
}

/// Nomad's policy name rule: 1–128 characters of letters, digits and `-`.
pub fn validate_policy_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!("invalid name '{name}'")))
    }
}

/// The text of a failed authentication with a token that is not a secret ID at all.
pub const MALFORMED_TOKEN: &str = "failed to parse signed token: token is neither an ACL secret ID nor a signed workload identity";

/// Token resolution in constant time per request, whatever the number of tokens: every token's
/// permissions computed once (policies parsed once) and found by the SHA-256 of its secret. A
/// lookup by digest reveals nothing about the secret through its timing (equal prefixes of
/// digests say nothing about the secrets behind them). Rebuilt when the state's index moves.
#[derive(Debug, Clone, Default)]
pub struct AclIndex {
    /// The [`AclState::index`] it was built at.
    pub index: u64,
    by_digest: std::collections::HashMap<[u8; 32], Acl>,
    anonymous: Option<Acl>,
}

fn digest(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// Whether `text` has a UUID's shape (8-4-4-4-12 hex digits), as every secret ID does.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl AclIndex {
    /// Indexes every token of `state`, parsing each policy once (not once per token).
    pub fn build(state: &AclState) -> AclIndex {
        let parsed: BTreeMap<&str, Rules> = state
            .policies
            .iter()
            .filter_map(|(name, p)| Some((name.as_str(), parse_rules(&p.rules).ok()?)))
            .collect();
        let acl_for = |t: &Token| {
            if t.token_type == TokenType::Management {
                return Acl::management();
            }
            Acl::from_rules(t.policies.iter().filter_map(|n| parsed.get(n.as_str())))
        };
        AclIndex {
            index: state.index,
            by_digest: state
                .tokens
                .values()
                .map(|t| (digest(&t.secret_id), acl_for(t)))
                .collect(),
            anonymous: Some(state.anonymous_acl()),
        }
    }

    /// The permissions of a request's token (`None`: the anonymous policy). `Err` is the
    /// authentication failure text: [`MALFORMED_TOKEN`] or `Permission denied`.
    pub fn resolve(&self, token: Option<&str>) -> Result<Acl, String> {
        let Some(secret) = token else {
            return Ok(self.anonymous.clone().unwrap_or_else(Acl::deny_all));
        };
        if !is_uuid(secret) {
            return Err(MALFORMED_TOKEN.into());
        }
        self.by_digest
            .get(&digest(secret))
            .cloned()
            .ok_or_else(|| "Permission denied".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_resolves_like_the_state() {
        let mut state = AclState::default();
        let mgmt = state
            .bootstrap(
                "aaaaaaaa-0000-4000-8000-000000000001".into(),
                "bbbbbbbb-0000-4000-8000-000000000001".into(),
                "2026-01-01T00:00:00Z".into(),
            )
            .unwrap();
        state
            .upsert_policy(
                "r",
                String::new(),
                "agent {\n  policy = \"read\"\n}\n".into(),
            )
            .unwrap();
        let client = state
            .create_token(Token {
                accessor_id: "aaaaaaaa-0000-4000-8000-000000000002".into(),
                secret_id: "bbbbbbbb-0000-4000-8000-000000000003".into(),
                name: "c".into(),
                token_type: TokenType::Client,
                policies: vec!["r".into(), "missing".into()],
                global: false,
                create_time: String::new(),
                create_index: 0,
                modify_index: 0,
            })
            .unwrap();
        let index = AclIndex::build(&state);
        assert_eq!(index.index, state.index);
        assert_eq!(index.resolve(Some(&mgmt.secret_id)), Ok(Acl::management()));
        let acl = index.resolve(Some(&client.secret_id)).unwrap();
        assert_eq!(acl, state.acl_for(&client));
        assert!(acl.allow_agent_read() && !acl.allow_agent_write());
        assert_eq!(
            index.resolve(Some("bbbbbbbb-0000-4000-8000-000000000002")),
            Err("Permission denied".into())
        );
        assert_eq!(
            index.resolve(Some("not-a-uuid")),
            Err(MALFORMED_TOKEN.into())
        );
        assert_eq!(index.resolve(None), Ok(Acl::deny_all()));
        assert!(is_uuid("0b2b1d7e-7c1a-4bd1-9a5e-0d0f3c2e1a77"));
        assert!(!is_uuid("0b2b1d7e-7c1a-4bd1-9a5e-0d0f3c2e1a7"));
        assert!(!is_uuid("0b2b1d7e+7c1a-4bd1-9a5e-0d0f3c2e1a77"));
    }

    #[test]
    fn parses_and_rejects() {
        let r = parse_rules(
            "agent { policy = \"read\" }\nnode { policy = \"write\" }\nnamespace \"default\" {\n  policy = \"read\"\n  capabilities = [\"read-job\"]\n}\n",
        )
        .unwrap();
        assert_eq!(
            (r.agent, r.node, r.operator),
            (Level::Read, Level::Write, Level::None)
        );
        assert_eq!(r.namespaces["default"].1, vec!["read-job"]);
        let cases = [
            (
                "agent { policy = \"foo\" }",
                "Invalid agent policy: \"foo\"",
            ),
            ("node { policy = \"all\" }", "Invalid node policy: \"all\""),
            ("bogus { policy = \"read\" }", "bogus"),
            ("agent {\n policy = \"read\"\n extra = 1\n}", "extra"),
            (
                "namespace \"x\" {\n capabilities = [\"fly\"]\n}",
                "unknown capability \"fly\"",
            ),
            ("agent {", "Failed to parse ACL policy"),
        ];
        for (text, want) in cases {
            let e = parse_rules(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn evaluation_table() {
        let p = |t: &str| parse_rules(t).unwrap();
        let read = p("agent { policy = \"read\" }");
        let write = p("agent { policy = \"write\" }");
        let deny = p("agent { policy = \"deny\" }");
        let node = p("node { policy = \"read\" }");
        let acl = Acl::from_rules([&read]);
        assert!(acl.allow_agent_read() && !acl.allow_agent_write() && !acl.allow_node_read());
        let acl = Acl::from_rules([&write]);
        assert!(
            acl.allow_agent_read() && acl.allow_agent_write(),
            "write implies read"
        );
        let acl = Acl::from_rules([&write, &deny]);
        assert!(
            !acl.allow_agent_read() && !acl.allow_agent_write(),
            "deny wins"
        );
        let acl = Acl::from_rules([&read, &node]);
        assert!(acl.allow_agent_read() && acl.allow_node_read() && !acl.allow_node_write());
        assert!(Acl::management().allow_operator_write());
        assert!(!Acl::deny_all().allow_agent_read());
        // scale grants nothing for agent/node.
        let acl = Acl::from_rules([&p("agent { policy = \"scale\" }")]);
        assert!(!acl.allow_agent_read());
    }

    #[test]
    fn store_rules() {
        let mut s = AclState::default();
        let t = s.bootstrap("a".into(), "s".into(), "now".into()).unwrap();
        assert_eq!(t.token_type, TokenType::Management);
        assert_eq!(
            s.bootstrap("b".into(), "t".into(), "now".into())
                .unwrap_err()
                .to_string(),
            "ACL bootstrap already done"
        );
        assert!(
            s.upsert_policy(
                "bad name",
                String::new(),
                "agent { policy = \"read\" }".into()
            )
            .is_err()
        );
        assert!(
            s.upsert_policy("p", String::new(), "agent { policy = \"nope\" }".into())
                .is_err()
        );
        s.upsert_policy("p", "d".into(), "agent { policy = \"read\" }".into())
            .unwrap();
        let token = |ty, policies: Vec<&str>| Token {
            accessor_id: "x".into(),
            secret_id: "y".into(),
            name: "n".into(),
            token_type: ty,
            policies: policies.into_iter().map(String::from).collect(),
            global: false,
            create_time: String::new(),
            create_index: 0,
            modify_index: 0,
        };
        assert!(s.create_token(token(TokenType::Client, vec![])).is_err());
        assert!(
            s.create_token(token(TokenType::Management, vec!["p"]))
                .is_err()
        );
        let t = s
            .create_token(token(TokenType::Client, vec!["p", "missing"]))
            .unwrap();
        let acl = s.acl_for(&t);
        assert!(acl.allow_agent_read() && !acl.allow_agent_write());
        assert!(!s.anonymous_acl().allow_agent_read());
        s.upsert_policy(
            ANONYMOUS_POLICY,
            String::new(),
            "node { policy = \"read\" }".into(),
        )
        .unwrap();
        assert!(s.anonymous_acl().allow_node_read());
    }
}
