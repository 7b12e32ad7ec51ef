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
    if let Some(line) = crate::config::file::hcl_nesting_error(text) {
        return Err(CoreError::Invalid(format!(
            "Failed to parse ACL policy: line {line}: blocks, lists and parentheses nested deeper than {} levels",
            crate::config::file::MAX_HCL_NESTING
        )));
    }
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

    /// Nomad's "debug" rule (host data, profiles): with ACLs off `enable_debug` decides; with
    /// ACLs on a management, `agent:read` or `agent:write` token passes.
    pub fn allow_debug(&self, acl_enabled: bool, enable_debug: bool) -> bool {
        if acl_enabled {
            self.allow_agent_read()
        } else {
            enable_debug
        }
    }

    /// Reading jobs, evaluations and allocations. Caravan has no namespace rules yet, so only a
    /// management token may (Nomad's `read-job` in the default namespace comes with them).
    pub fn allow_job_read(&self) -> bool {
        self.management
    }

    /// Submitting and stopping jobs: a management token, for the reason of
    /// [`Acl::allow_job_read`].
    pub fn allow_job_submit(&self) -> bool {
        self.management
    }

    /// Saving and restoring the whole replicated state (`/v1/operator/snapshot`), secrets
    /// included: a management token, as Nomad asks.
    pub fn allow_snapshot(&self) -> bool {
        self.management
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

/// What a caller asks for in a token (the ACL API's create and update bodies), before IDs and
/// times are minted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSpec {
    /// Name.
    pub name: String,
    /// `client` (also when empty) or `management`.
    pub token_type: String,
    /// Policy names (client tokens).
    pub policies: Vec<String>,
    /// Replicated to all regions.
    pub global: bool,
}

impl TokenSpec {
    /// The token asked for, with fresh accessor and secret IDs and the time now. (An update keeps
    /// the token's own IDs and time: [`AclState::apply`] ignores these there.) An unknown type
    /// is refused; everything else is checked when the write is applied.
    pub fn mint(self) -> Result<Token, CoreError> {
        let token_type = match self.token_type.as_str() {
            "" => TokenType::Client,
            t => TokenType::parse(t).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "token type must be client or management, got {t:?}"
                ))
            })?,
        };
        Ok(Token {
            accessor_id: new_id(),
            secret_id: new_id(),
            name: self.name,
            token_type,
            policies: self.policies,
            global: self.global,
            create_time: now_rfc3339(),
            create_index: 0,
            modify_index: 0,
        })
    }
}

impl AclWrite {
    /// The bootstrap write, with the management token's fresh IDs and the time now.
    pub fn bootstrap() -> AclWrite {
        AclWrite::Bootstrap {
            accessor_id: new_id(),
            secret_id: new_id(),
            create_time: now_rfc3339(),
        }
    }
}

/// A fresh accessor or secret ID (a random UUID).
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The time now as tokens record it: RFC 3339 with nanoseconds.
fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Every ACL object, with the index of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclState {
    /// Policies by name.
    pub policies: BTreeMap<String, Policy>,
    /// Tokens by accessor ID.
    pub tokens: BTreeMap<String, Token>,
    /// Whether bootstrap has happened.
    pub bootstrapped: bool,
    /// The index of the last change (a Raft log index on a cluster).
    pub index: u64,
}

/// Name of the policy applied to requests without a token.
pub const ANONYMOUS_POLICY: &str = "anonymous";

/// The longest policy description (Nomad's limit).
pub const MAX_DESCRIPTION_BYTES: usize = 256;

/// The largest policy rules text.
pub const MAX_RULES_BYTES: usize = 64 * 1024;

/// The longest token name (Nomad's limit).
pub const MAX_TOKEN_NAME_BYTES: usize = 256;

/// The most policies one token may name.
pub const MAX_TOKEN_POLICIES: usize = 256;

/// The longest creation time text (RFC 3339 with nanoseconds is 30 bytes).
pub const MAX_TIME_BYTES: usize = 64;

/// One change of the ACL state, as its proposer (an HTTP handler, an RPC) builds it: fresh IDs
/// and the time are inside, so applying it anywhere gives the same result. [`AclState::apply`]
/// checks everything the HTTP API checks, so a write that arrives any other way is held to the
/// same rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclWrite {
    /// Creates the first management token (once).
    Bootstrap {
        /// The new token's accessor ID (a UUID).
        accessor_id: String,
        /// Its secret ID (a UUID).
        secret_id: String,
        /// Creation time, RFC 3339.
        create_time: String,
    },
    /// Creates or replaces a policy.
    PolicyUpsert {
        /// Its name.
        name: String,
        /// Its description.
        description: String,
        /// Its HCL rules.
        rules: String,
    },
    /// Deletes a policy (deleting an absent one changes nothing).
    PolicyDelete {
        /// Its name.
        name: String,
    },
    /// Creates a token with the accessor and secret IDs it carries.
    TokenCreate {
        /// The token; its indexes are set when applied.
        token: Token,
    },
    /// Changes a token's name, type, policies and scope; its IDs and creation time stay.
    TokenUpdate {
        /// The token to change.
        accessor_id: String,
        /// The new name, type, policies and scope (other fields are ignored).
        changes: Token,
    },
    /// Deletes a token (deleting an absent one changes nothing).
    TokenDelete {
        /// Its accessor ID.
        accessor_id: String,
    },
}

impl AclState {
    /// The token whose secret is `secret`, compared with every token in constant time (the
    /// answer of `/v1/acl/token/self`).
    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        let mut found = None;
        for t in self.tokens.values() {
            if secrets_equal(&t.secret_id, secret) {
                found = Some(t);
            }
        }
        found
    }

    /// Checks `write` and applies it at `index` (which must not be before [`AclState::index`]:
    /// a reordered write is refused; several writes of one batched log entry share its index).
    /// Nothing changes when it is refused. Returns the token created or changed.
    pub fn apply(&mut self, index: u64, write: &AclWrite) -> Result<Option<Token>, CoreError> {
        if index < self.index {
            return Err(CoreError::Invalid(format!(
                "stale ACL write at index {index}: the state is at {}",
                self.index
            )));
        }
        match write {
            AclWrite::Bootstrap {
                accessor_id,
                secret_id,
                create_time,
            } => self
                .bootstrap(index, accessor_id, secret_id, create_time)
                .map(Some),
            AclWrite::PolicyUpsert {
                name,
                description,
                rules,
            } => self
                .upsert_policy(index, name, description, rules)
                .map(|()| None),
            AclWrite::PolicyDelete { name } => {
                if self.policies.remove(name).is_some() {
                    self.index = index;
                }
                Ok(None)
            }
            AclWrite::TokenCreate { token } => self.create_token(index, token).map(Some),
            AclWrite::TokenUpdate {
                accessor_id,
                changes,
            } => self.update_token(index, accessor_id, changes).map(Some),
            AclWrite::TokenDelete { accessor_id } => {
                if self.tokens.remove(accessor_id).is_some() {
                    self.index = index;
                }
                Ok(None)
            }
        }
    }

    fn bootstrap(
        &mut self,
        index: u64,
        accessor_id: &str,
        secret_id: &str,
        create_time: &str,
    ) -> Result<Token, CoreError> {
        if self.bootstrapped {
            return Err(CoreError::Invalid("ACL bootstrap already done".into()));
        }
        let token = Token {
            accessor_id: accessor_id.to_string(),
            secret_id: secret_id.to_string(),
            name: "Bootstrap Token".into(),
            token_type: TokenType::Management,
            policies: Vec::new(),
            global: true,
            create_time: create_time.to_string(),
            create_index: index,
            modify_index: index,
        };
        self.check_new_ids(&token)?;
        self.tokens.insert(token.accessor_id.clone(), token.clone());
        self.bootstrapped = true;
        self.index = index;
        Ok(token)
    }

    fn upsert_policy(
        &mut self,
        index: u64,
        name: &str,
        description: &str,
        rules: &str,
    ) -> Result<(), CoreError> {
        validate_policy(name, description, rules)?;
        let create_index = self.policies.get(name).map_or(index, |p| p.create_index);
        self.policies.insert(
            name.to_string(),
            Policy {
                name: name.to_string(),
                description: description.to_string(),
                rules: rules.to_string(),
                create_index,
                modify_index: index,
            },
        );
        self.index = index;
        Ok(())
    }

    /// A new token's IDs are UUIDs that no other token uses, and its time is bounded.
    fn check_new_ids(&self, token: &Token) -> Result<(), CoreError> {
        let bad = |m: &str| Err(CoreError::Invalid(m.into()));
        if !is_uuid(&token.accessor_id) || !is_uuid(&token.secret_id) {
            return bad("token accessor and secret IDs must be UUIDs");
        }
        if self.tokens.contains_key(&token.accessor_id) {
            return bad("token accessor ID already exists");
        }
        if self.tokens.values().any(|t| t.secret_id == token.secret_id) {
            return bad("token secret ID already exists");
        }
        if token.create_time.len() > MAX_TIME_BYTES {
            return bad("token creation time too long");
        }
        Ok(())
    }

    /// Type, name and policy checks shared by creation and update.
    fn check_token(&self, token: &Token) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Invalid(m));
        match token.token_type {
            TokenType::Client if token.policies.is_empty() => {
                return bad("client token missing policies".into());
            }
            TokenType::Management if !token.policies.is_empty() => {
                return bad("management token cannot be associated with policies".into());
            }
            _ => {}
        }
        if token.name.len() > MAX_TOKEN_NAME_BYTES {
            return bad("token name too long".into());
        }
        if token.policies.len() > MAX_TOKEN_POLICIES {
            return bad(format!(
                "token names {} policies; at most {MAX_TOKEN_POLICIES}",
                token.policies.len()
            ));
        }
        if let Some(missing) = token
            .policies
            .iter()
            .find(|p| !self.policies.contains_key(*p))
        {
            return bad(format!("token references non-existent policy {missing:?}"));
        }
        Ok(())
    }

    fn create_token(&mut self, index: u64, token: &Token) -> Result<Token, CoreError> {
        self.check_new_ids(token)?;
        self.check_token(token)?;
        let mut token = token.clone();
        token.create_index = index;
        token.modify_index = index;
        self.tokens.insert(token.accessor_id.clone(), token.clone());
        self.index = index;
        Ok(token)
    }

    fn update_token(
        &mut self,
        index: u64,
        accessor_id: &str,
        changes: &Token,
    ) -> Result<Token, CoreError> {
        let Some(old) = self.tokens.get(accessor_id) else {
            return Err(CoreError::Invalid("ACL token not found".into()));
        };
        self.check_token(changes)?;
        let token = Token {
            accessor_id: old.accessor_id.clone(),
            secret_id: old.secret_id.clone(),
            name: changes.name.clone(),
            token_type: changes.token_type,
            policies: changes.policies.clone(),
            global: changes.global,
            create_time: old.create_time.clone(),
            create_index: old.create_index,
            modify_index: index,
        };
        self.tokens.insert(token.accessor_id.clone(), token.clone());
        self.index = index;
        Ok(token)
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

    /// Checks a whole state (a snapshot being restored): every policy and token is held to
    /// the rules of a write, and the index is past every object's.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::Invalid(m));
        let mut secrets = std::collections::HashSet::new();
        for (name, p) in &self.policies {
            if name != &p.name {
                return bad(format!("policy {name:?} is stored under another name"));
            }
            validate_policy(&p.name, &p.description, &p.rules)?;
            if p.modify_index > self.index {
                return bad(format!("policy {name:?} is newer than the state"));
            }
        }
        for (accessor, t) in &self.tokens {
            if accessor != &t.accessor_id || !is_uuid(accessor) || !is_uuid(&t.secret_id) {
                return bad("a token's IDs are not UUIDs".into());
            }
            if !secrets.insert(t.secret_id.as_str()) {
                return bad("two tokens share a secret ID".into());
            }
            if t.modify_index > self.index {
                return bad("a token is newer than the state".into());
            }
            let mut shape = t.clone();
            // A policy deleted after the token was written grants nothing; it is not an error.
            shape.policies.retain(|p| self.policies.contains_key(p));
            if shape.token_type == TokenType::Client && shape.policies.is_empty() {
                continue;
            }
            self.check_token(&shape)?;
        }
        Ok(())
    }
}

/// Checks a policy as a write would: its name, description and rules.
fn validate_policy(name: &str, description: &str, rules: &str) -> Result<(), CoreError> {
    validate_policy_name(name)?;
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(CoreError::Invalid(format!(
            "description longer than {MAX_DESCRIPTION_BYTES}"
        )));
    }
    if rules.len() > MAX_RULES_BYTES {
        return Err(CoreError::Invalid(format!(
            "policy rules longer than {MAX_RULES_BYTES} bytes"
        )));
    }
    parse_rules(rules).map(|_| ())
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

/// Whether `text` has a UUID's shape (8-4-4-4-12 hex digits), as every secret ID does.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What a token grants before policies are merged.
#[derive(Debug, Clone)]
enum Grant {
    Management,
    Policies(Vec<String>),
}

/// Token resolution in O(1) per request, whatever the number of tokens: tokens are found by a
/// keyed hash (HMAC-SHA256) of their secret, and each policy's rules are compiled once, when it
/// is written, never per request. The key is the embedder's (random per process), so the table
/// in memory is no list of unsalted digests, and lookup time says nothing about the secret.
/// Kept in step with an [`AclState`] by [`AclTable`].
#[derive(Clone)]
pub struct AclIndex {
    key: [u8; 32],
    grants: std::collections::HashMap<[u8; 32], Grant>,
    rules: std::collections::HashMap<String, Rules>,
}

impl std::fmt::Debug for AclIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclIndex")
            .field("tokens", &self.grants.len())
            .field("policies", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl AclIndex {
    /// Indexes every token and compiles every policy of `state`, hashing secrets with `key`.
    pub fn build(state: &AclState, key: [u8; 32]) -> AclIndex {
        let mut index = AclIndex {
            key,
            grants: Default::default(),
            rules: Default::default(),
        };
        for p in state.policies.values() {
            index.set_policy(p);
        }
        for t in state.tokens.values() {
            index.set_token(t);
        }
        index
    }

    fn digest(&self, secret: &str) -> [u8; 32] {
        use hmac::Mac;
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(secret.as_bytes());
                mac.finalize().into_bytes().into()
            }
            Err(_) => [0; 32],
        }
    }

    fn set_policy(&mut self, p: &Policy) {
        match parse_rules(&p.rules) {
            Ok(rules) => self.rules.insert(p.name.clone(), rules),
            Err(_) => self.rules.remove(&p.name),
        };
    }

    fn set_token(&mut self, t: &Token) {
        let grant = match t.token_type {
            TokenType::Management => Grant::Management,
            TokenType::Client => Grant::Policies(t.policies.clone()),
        };
        self.grants.insert(self.digest(&t.secret_id), grant);
    }

    fn remove_token(&mut self, secret: &str) {
        self.grants.remove(&self.digest(secret));
    }

    /// The permissions of a request's token (`None`: the anonymous policy). `Err` is the
    /// authentication failure text: [`MALFORMED_TOKEN`] or `Permission denied`.
    pub fn resolve(&self, token: Option<&str>) -> Result<Acl, String> {
        let Some(secret) = token else {
            return Ok(self
                .rules
                .get(ANONYMOUS_POLICY)
                .map_or_else(Acl::deny_all, |r| Acl::from_rules([r])));
        };
        if !is_uuid(secret) {
            return Err(MALFORMED_TOKEN.into());
        }
        match self.grants.get(&self.digest(secret)) {
            Some(Grant::Management) => Ok(Acl::management()),
            Some(Grant::Policies(names)) => Ok(Acl::from_rules(
                names.iter().filter_map(|n| self.rules.get(n)),
            )),
            None => Err("Permission denied".into()),
        }
    }
}

/// The ACL state and its [`AclIndex`], changed together by [`AclTable::apply`].
#[derive(Debug, Clone)]
pub struct AclTable {
    state: AclState,
    index: AclIndex,
}

impl AclTable {
    /// An empty table whose index hashes secrets with `key` (random per process).
    pub fn new(key: [u8; 32]) -> AclTable {
        AclTable {
            state: AclState::default(),
            index: AclIndex::build(&AclState::default(), key),
        }
    }

    /// The state.
    pub fn state(&self) -> &AclState {
        &self.state
    }

    /// Resolves a token ([`AclIndex::resolve`]).
    pub fn resolve(&self, token: Option<&str>) -> Result<Acl, String> {
        self.index.resolve(token)
    }

    /// Applies a write ([`AclState::apply`]) and updates the index for what it changed.
    pub fn apply(&mut self, index: u64, write: &AclWrite) -> Result<Option<Token>, CoreError> {
        let replaced = match write {
            AclWrite::TokenDelete { accessor_id } => self.state.tokens.get(accessor_id).cloned(),
            _ => None,
        };
        let out = self.state.apply(index, write)?;
        match write {
            AclWrite::PolicyUpsert { name, .. } => {
                if let Some(p) = self.state.policies.get(name) {
                    self.index.set_policy(&p.clone());
                }
            }
            AclWrite::PolicyDelete { name } => {
                self.index.rules.remove(name);
            }
            AclWrite::TokenDelete { .. } => {
                if let Some(t) = replaced {
                    self.index.remove_token(&t.secret_id);
                }
            }
            _ => {
                if let Some(t) = &out {
                    self.index.set_token(t);
                }
            }
        }
        Ok(out)
    }

    /// Replaces the state (a snapshot) after [`AclState::validate`]; the index is rebuilt.
    pub fn restore(&mut self, state: AclState) -> Result<(), CoreError> {
        state.validate()?;
        self.index = AclIndex::build(&state, self.index.key);
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn uuid(n: u32) -> String {
        format!("aaaaaaaa-0000-4000-8000-{n:012}")
    }

    fn client(accessor: u32, secret: u32, policies: &[&str]) -> Token {
        Token {
            accessor_id: uuid(accessor),
            secret_id: uuid(secret),
            name: "c".into(),
            token_type: TokenType::Client,
            policies: policies.iter().map(|p| p.to_string()).collect(),
            global: false,
            create_time: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    fn policy(name: &str, rules: &str) -> AclWrite {
        AclWrite::PolicyUpsert {
            name: name.into(),
            description: String::new(),
            rules: rules.into(),
        }
    }

    /// A table with a management token (secret 1), policy `r` (agent read) and a client
    /// token (secret 3) naming it.
    fn table() -> AclTable {
        let mut t = AclTable::new(KEY);
        let writes = [
            AclWrite::Bootstrap {
                accessor_id: uuid(101),
                secret_id: uuid(1),
                create_time: "2026-01-01T00:00:00Z".into(),
            },
            policy("r", "agent {\n  policy = \"read\"\n}\n"),
            AclWrite::TokenCreate {
                token: client(102, 3, &["r"]),
            },
        ];
        for (i, w) in writes.iter().enumerate() {
            t.apply(i as u64 + 1, w).unwrap();
        }
        t
    }

    #[test]
    fn the_index_resolves_like_the_state() {
        let mut t = table();
        let token = t.state().tokens[&uuid(102)].clone();
        assert_eq!(t.resolve(Some(&uuid(1))), Ok(Acl::management()));
        let acl = t.resolve(Some(&uuid(3))).unwrap();
        assert_eq!(acl, t.state().acl_for(&token));
        assert!(acl.allow_agent_read() && !acl.allow_agent_write());
        assert_eq!(t.resolve(Some(&uuid(2))), Err("Permission denied".into()));
        assert_eq!(t.resolve(Some("not-a-uuid")), Err(MALFORMED_TOKEN.into()));
        assert_eq!(t.resolve(None), Ok(Acl::deny_all()));
        // A policy change reaches the tokens naming it, without rebuilding the index.
        t.apply(4, &policy("r", "agent { policy = \"write\" }"))
            .unwrap();
        assert!(t.resolve(Some(&uuid(3))).unwrap().allow_agent_write());
        t.apply(5, &policy(ANONYMOUS_POLICY, "node { policy = \"read\" }"))
            .unwrap();
        assert!(t.resolve(None).unwrap().allow_node_read());
        t.apply(6, &AclWrite::PolicyDelete { name: "r".into() })
            .unwrap();
        assert_eq!(t.resolve(Some(&uuid(3))), Ok(Acl::deny_all()));
        t.apply(
            7,
            &AclWrite::TokenDelete {
                accessor_id: uuid(102),
            },
        )
        .unwrap();
        assert_eq!(t.resolve(Some(&uuid(3))), Err("Permission denied".into()));
        // A rebuilt index (a restored snapshot) agrees with the one kept in step.
        let mut restored = AclTable::new(KEY);
        restored.restore(t.state().clone()).unwrap();
        for secret in [Some(uuid(1)), Some(uuid(3)), None] {
            assert_eq!(
                restored.resolve(secret.as_deref()),
                t.resolve(secret.as_deref())
            );
        }
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
        // Nested past MAX_HCL_NESTING (hcl-rs backtracks exponentially in the depth): refused
        // before parsing, naming the line.
        let deep = "oi= ae%ae%e%{\n".repeat(16);
        let cases = [
            cases.as_slice(),
            &[(deep.as_str(), "line 13: blocks, lists")],
        ]
        .concat();
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

    /// Every write the HTTP API would refuse is refused by `apply` and changes nothing.
    #[test]
    fn refused_writes_change_nothing() {
        let check = |write: AclWrite, at: u64, want: &str| {
            let mut t = table();
            let before = t.state().clone();
            let e = t.apply(at, &write).unwrap_err().to_string();
            assert!(e.contains(want), "{write:?}: {e}");
            assert_eq!(t.state(), &before, "{write:?} changed the state");
        };
        let mgmt = |p: &[&str]| Token {
            token_type: TokenType::Management,
            ..client(200, 201, p)
        };
        let cases = [
            (
                policy("r", "agent { policy = \"read\" }"),
                2,
                "stale ACL write",
            ),
            (
                policy("bad name", "agent { policy = \"read\" }"),
                9,
                "invalid name",
            ),
            (
                policy("p", "agent { policy = \"nope\" }"),
                9,
                "Invalid agent policy",
            ),
            (
                policy("p", &"#".repeat(MAX_RULES_BYTES + 1)),
                9,
                "longer than",
            ),
            (
                AclWrite::PolicyUpsert {
                    name: "p".into(),
                    description: "d".repeat(MAX_DESCRIPTION_BYTES + 1),
                    rules: String::new(),
                },
                9,
                "description longer",
            ),
            (
                AclWrite::Bootstrap {
                    accessor_id: uuid(300),
                    secret_id: uuid(301),
                    create_time: String::new(),
                },
                9,
                "ACL bootstrap already done",
            ),
            (
                AclWrite::TokenCreate {
                    token: client(200, 201, &[]),
                },
                9,
                "missing policies",
            ),
            (
                AclWrite::TokenCreate {
                    token: mgmt(&["r"]),
                },
                9,
                "cannot be associated",
            ),
            (
                AclWrite::TokenCreate {
                    token: client(200, 201, &["r", "missing"]),
                },
                9,
                "non-existent policy \"missing\"",
            ),
            (
                AclWrite::TokenCreate {
                    token: client(102, 201, &["r"]),
                },
                9,
                "accessor ID already",
            ),
            (
                AclWrite::TokenCreate {
                    token: client(200, 3, &["r"]),
                },
                9,
                "secret ID already",
            ),
            (
                AclWrite::TokenCreate {
                    token: Token {
                        secret_id: "s".into(),
                        ..client(200, 0, &["r"])
                    },
                },
                9,
                "must be UUIDs",
            ),
            (
                AclWrite::TokenCreate {
                    token: Token {
                        name: "n".repeat(257),
                        ..client(200, 201, &["r"])
                    },
                },
                9,
                "token name too long",
            ),
            (
                AclWrite::TokenUpdate {
                    accessor_id: uuid(999),
                    changes: client(0, 0, &["r"]),
                },
                9,
                "ACL token not found",
            ),
        ];
        for (write, at, want) in cases {
            check(write, at, want);
        }
    }

    #[test]
    fn updates_keep_ids_and_bad_snapshots_are_refused() {
        let mut t = table();
        let changed = t
            .apply(
                9,
                &AclWrite::TokenUpdate {
                    accessor_id: uuid(102),
                    changes: Token {
                        name: "renamed".into(),
                        ..client(0, 0, &["r"])
                    },
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                changed.secret_id.as_str(),
                changed.create_index,
                changed.modify_index
            ),
            (uuid(3).as_str(), 3, 9)
        );
        let mut bad = t.state().clone();
        bad.tokens.get_mut(&uuid(102)).unwrap().secret_id = uuid(1);
        assert!(
            t.restore(bad)
                .unwrap_err()
                .to_string()
                .contains("share a secret")
        );
        let mut bad = t.state().clone();
        bad.index = 1;
        assert!(t.restore(bad).unwrap_err().to_string().contains("newer"));
        assert_eq!(
            t.resolve(Some(&uuid(3))).unwrap(),
            t.state().acl_for(&changed)
        );
    }
}
