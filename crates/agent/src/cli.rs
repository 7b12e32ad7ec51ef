//! The command line: Go-style flags (`-dev`, `-config=x`) over clap.

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

/// `caravan`: a Nomad-compatible agent.
#[derive(Debug, Parser)]
#[command(
    name = "caravan",
    version,
    about = "A Nomad-compatible agent",
    disable_version_flag = true
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent.
    Agent(Box<AgentArgs>),
    /// Print the version.
    Version,
    /// Show the running agent's statistics (GET /v1/agent/self).
    #[command(name = "agent-info")]
    AgentInfo(ClientArgs),
    /// Server gossip membership commands.
    #[command(subcommand)]
    Server(ServerCommand),
    /// ACL bootstrap, policies and tokens.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Operator commands.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Configuration file commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Job commands.
    #[command(subcommand)]
    Job(JobCommand),
    /// Client node commands.
    #[command(subcommand)]
    Node(NodeCommand),
    /// A private CA and the role certificates `tls.rpc` checks.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Stream the agent's logs, or export its log file or journal (`monitor export`).
    Monitor(Box<MonitorArgs>),
    /// Print a shell completion script: `source <(caravan completion bash)`,
    /// `caravan completion fish | source`, or for zsh `source <(caravan completion zsh)`.
    Completion {
        /// bash, zsh or fish.
        #[arg(value_enum)]
        shell: crate::completion::Shell,
    },
}

/// `caravan monitor [flags]` and `caravan monitor export [flags]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MonitorArgs {
    /// `export`.
    #[command(subcommand)]
    pub command: Option<MonitorCommand>,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Level: trace, debug, info, warn, error.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Stream a client node's logs (this agent's node ID).
    #[arg(long = "node-id")]
    pub node_id: Option<String>,
    /// Stream a server's logs (this agent's server name or ID).
    #[arg(long = "server-id")]
    pub server_id: Option<String>,
}

/// `caravan monitor ...`.
#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Export an agent's log file (`-on-disk`) or its systemd unit's journal (`-service-name`).
    Export(ExportArgs),
}

/// `caravan monitor export` flags (Nomad's).
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Export a client node's logs (this agent's node ID).
    #[arg(long = "node-id")]
    pub node_id: Option<String>,
    /// Export a server's logs (a server's name or ID, or `leader`).
    #[arg(long = "server-id")]
    pub server_id: Option<String>,
    /// The agent's systemd unit (it must include `nomad`, as Nomad requires); not with
    /// `-on-disk`.
    #[arg(long = "service-name")]
    pub service_name: Option<String>,
    /// How far back the journal is read (Go duration).
    #[arg(long = "logs-since", default_value = "72h")]
    pub logs_since: String,
    /// Keep streaming what the journal adds until interrupted (journald only).
    #[arg(long)]
    pub follow: bool,
    /// Export the agent's `log_file`.
    #[arg(long = "on-disk")]
    pub on_disk: bool,
}

/// `caravan job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Register the job in a JSON file (`{"Job": {...}}` or the job itself); prints its
    /// evaluation's ID without waiting for it (Nomad's `-detach`).
    Run {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Accepted for Nomad compatibility; runs always return at once.
        #[arg(long)]
        detach: bool,
        /// The job file (JSON).
        file: std::path::PathBuf,
    },
    /// List jobs, or show one with its allocations.
    Status {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// A job ID.
        id: Option<String>,
    },
    /// Stop a job; prints its evaluation's ID.
    Stop {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Accepted for Nomad compatibility; stops always return at once.
        #[arg(long)]
        detach: bool,
        /// The job ID.
        id: String,
    },
}

/// `caravan node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List client nodes.
    Status(ClientArgs),
}

/// `caravan tls ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Certificate authority commands.
    #[command(subcommand)]
    Ca(TlsCaCommand),
    /// Certificate commands.
    #[command(subcommand)]
    Cert(TlsCertCommand),
}

/// `caravan tls ca ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCaCommand {
    /// Create a CA: `<domain>-agent-ca.pem` and `<domain>-agent-ca-key.pem` here.
    Create(CaArgs),
}

/// `caravan tls cert ...`.
#[derive(Debug, Subcommand)]
pub enum TlsCertCommand {
    /// Create a certificate for a server, client or CLI, signed by the CA:
    /// `<region>-<role>-<domain>.pem` and `-key.pem` here.
    Create(CertArgs),
}

/// `caravan tls ca create` flags.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Days the CA is valid.
    #[arg(long, default_value_t = 1825)]
    pub days: u32,
    /// Domain of the certificates it signs.
    #[arg(long, default_value = "nomad")]
    pub domain: String,
}

/// `caravan tls cert create` flags.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// A server certificate (`server.<region>.<domain>`).
    #[arg(long)]
    pub server: bool,
    /// A client certificate (`client.<region>.<domain>`).
    #[arg(long)]
    pub client: bool,
    /// A CLI certificate (`cli.<region>.<domain>`).
    #[arg(long)]
    pub cli: bool,
    /// The region in its name.
    #[arg(long, default_value = "global")]
    pub region: String,
    /// The domain in its name.
    #[arg(long, default_value = "nomad")]
    pub domain: String,
    /// The CA certificate.
    #[arg(long, default_value = "nomad-agent-ca.pem")]
    pub ca: String,
    /// The CA key.
    #[arg(long, default_value = "nomad-agent-ca-key.pem")]
    pub key: String,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Another DNS name for it; repeatable.
    #[arg(long = "additional-dnsname")]
    pub additional_dnsname: Vec<String>,
    /// Another IP address for it; repeatable.
    #[arg(long = "additional-ipaddress")]
    pub additional_ipaddress: Vec<String>,
}

/// `caravan config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check configuration files and directories as the agent would load them (no agent is
    /// started); every problem is named.
    Validate {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

/// `caravan operator ...`.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Scheduler worker configuration.
    #[command(subcommand)]
    Scheduler(SchedulerCommand),
    /// Save or restore the replicated state (management token).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Raft commands.
    #[command(subcommand)]
    Raft(RaftCommand),
    /// Gossip commands.
    #[command(subcommand)]
    Gossip(GossipCommand),
}

/// `caravan operator gossip ...`.
#[derive(Debug, Subcommand)]
pub enum GossipCommand {
    /// Manage the gossip encryption keys of the pool (agent:write), or generate a key.
    Keyring(KeyringArgs),
}

/// `caravan operator gossip keyring -list | -install KEY | -use KEY | -remove KEY | -generate`.
#[derive(Debug, clap::Args)]
pub struct KeyringArgs {
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
    /// List the keys installed in the pool and how many members hold each.
    #[arg(long)]
    pub list: bool,
    /// Install a new key (base64) on every member; members keep sealing with the primary.
    #[arg(long, value_name = "KEY")]
    pub install: Option<String>,
    /// Make an installed key the primary on every member.
    #[arg(long = "use", value_name = "KEY")]
    pub use_key: Option<String>,
    /// Remove a key (not the primary) from every member.
    #[arg(long, value_name = "KEY")]
    pub remove: Option<String>,
    /// Print a new random 32-byte key (base64) and do nothing else.
    #[arg(long)]
    pub generate: bool,
}

/// `caravan operator raft ...`.
#[derive(Debug, Subcommand)]
pub enum RaftCommand {
    /// List the servers of the Raft configuration (`operator:read`).
    #[command(name = "list-peers")]
    ListPeers(ClientArgs),
}

/// `caravan operator snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent snapshot of the replicated state to FILE (mode 0600: it holds every
    /// ACL secret).
    Save {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Where to write it.
        file: std::path::PathBuf,
    },
    /// Replace the replicated state with the snapshot in FILE.
    Restore {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// The snapshot `save` wrote.
        file: std::path::PathBuf,
    },
}

/// `caravan operator scheduler ...`.
#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Show the scheduler worker configuration.
    #[command(name = "get-config")]
    GetConfig(ClientArgs),
    /// Change the scheduler worker configuration.
    #[command(name = "set-config")]
    SetConfig {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Worker count.
        #[arg(long = "num-schedulers")]
        num_schedulers: Option<i64>,
        /// Comma-separated scheduler types (`_core` required).
        #[arg(long = "enabled-schedulers")]
        enabled_schedulers: Option<String>,
    },
}

/// `caravan acl ...`.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Create the initial management token (once per cluster).
    Bootstrap(ClientArgs),
    /// Policy commands.
    #[command(subcommand)]
    Policy(AclPolicyCommand),
    /// Token commands.
    #[command(subcommand)]
    Token(AclTokenCommand),
}

/// `caravan acl policy ...`.
#[derive(Debug, Subcommand)]
pub enum AclPolicyCommand {
    /// Create or replace a policy from an HCL rules file.
    Apply {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Policy name.
        name: String,
        /// Rules file (HCL).
        file: String,
    },
}

/// `caravan acl token ...`.
#[derive(Debug, Subcommand)]
pub enum AclTokenCommand {
    /// Create a token.
    Create {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Token name.
        #[arg(long)]
        name: Option<String>,
        /// `client` (default) or `management`.
        #[arg(long = "type")]
        token_type: Option<String>,
        /// Policy to attach; repeatable.
        #[arg(long)]
        policy: Vec<String>,
        /// Replicate to every region.
        #[arg(long)]
        global: bool,
    },
}

/// `caravan server ...`.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// List the gossip members.
    Members(ClientArgs),
    /// Join the agent to other servers' gossip addresses.
    Join {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Gossip addresses (`host[:port]`).
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Force a member into the `left` state.
    #[command(name = "force-leave")]
    ForceLeave {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
        /// Remove the member from the list at once.
        #[arg(long)]
        prune: bool,
        /// The member name.
        node: String,
    },
}

/// Flags that reach a running agent's HTTP API.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The agent's address (default: $NOMAD_ADDR, $CARAVAN_ADDR or http://127.0.0.1:4646).
    #[arg(long)]
    pub address: Option<String>,
    /// The ACL token (default: $NOMAD_TOKEN or $CARAVAN_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// CA certificate to verify an https agent with (default: $NOMAD_CACERT).
    #[arg(long = "ca-cert")]
    pub ca_cert: Option<String>,
    /// Client certificate to present (default: $NOMAD_CLIENT_CERT).
    #[arg(long = "client-cert")]
    pub client_cert: Option<String>,
    /// Client certificate's key (default: $NOMAD_CLIENT_KEY).
    #[arg(long = "client-key")]
    pub client_key: Option<String>,
    /// Server name to verify instead of the address's host (default: $NOMAD_TLS_SERVER_NAME).
    #[arg(long = "tls-server-name")]
    pub tls_server_name: Option<String>,
    /// Do not verify the agent's certificate (default: $NOMAD_SKIP_VERIFY).
    #[arg(long = "tls-skip-verify")]
    pub tls_skip_verify: bool,
}

/// `caravan agent` flags (see `shared/spec/agent-cli-config.md` §1).
#[derive(Debug, Clone, Args, Default)]
pub struct AgentArgs {
    /// Dev mode: server and client in one process, state in memory.
    #[arg(long)]
    pub dev: bool,
    /// A config file or directory; repeatable, later ones merge over earlier ones.
    #[arg(long)]
    pub config: Vec<String>,
    /// Enable the server role.
    #[arg(long)]
    pub server: bool,
    /// Enable the client role.
    #[arg(long)]
    pub client: bool,
    /// Address every listener binds to.
    #[arg(long)]
    pub bind: Option<String>,
    /// Node name.
    #[arg(long)]
    pub node: Option<String>,
    /// Region.
    #[arg(long)]
    pub region: Option<String>,
    /// Datacenter.
    #[arg(long)]
    pub dc: Option<String>,
    /// State directory.
    #[arg(long = "data-dir")]
    pub data_dir: Option<String>,
    /// Servers expected before a leader is elected.
    #[arg(long = "bootstrap-expect")]
    pub bootstrap_expect: Option<u32>,
    /// Gossip address to join at start; repeatable.
    #[arg(long)]
    pub join: Vec<String>,
    /// Gossip address to join at start, retried; repeatable.
    #[arg(long = "retry-join")]
    pub retry_join: Vec<String>,
    /// Server RPC address for the client; repeatable.
    #[arg(long)]
    pub servers: Vec<String>,
    /// Base64 gossip encryption key.
    #[arg(long)]
    pub encrypt: Option<String>,
    /// Enforce ACLs.
    #[arg(long = "acl-enabled")]
    pub acl_enabled: bool,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// JSON log lines.
    #[arg(long = "log-json")]
    pub log_json: bool,
}

impl AgentArgs {
    /// The flags as a configuration tree, merged over files (only flags given appear).
    pub fn to_tree(&self) -> Value {
        let mut top = Map::new();
        let mut server = Map::new();
        let mut client = Map::new();
        let put = |map: &mut Map<String, Value>, key: &str, value: Option<Value>| {
            if let Some(v) = value {
                map.insert(key.to_string(), v);
            }
        };
        let s = |v: &Option<String>| v.as_ref().map(|x| json!(x));
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| json!(v));
        let flag = |b: bool| b.then_some(json!(true));
        put(&mut top, "bind_addr", s(&self.bind));
        put(&mut top, "name", s(&self.node));
        put(&mut top, "region", s(&self.region));
        put(&mut top, "datacenter", s(&self.dc));
        put(&mut top, "data_dir", s(&self.data_dir));
        put(&mut top, "log_level", s(&self.log_level));
        put(&mut top, "log_json", flag(self.log_json));
        if self.acl_enabled {
            top.insert("acl".into(), json!({"enabled": true}));
        }
        put(&mut server, "enabled", flag(self.server));
        put(
            &mut server,
            "bootstrap_expect",
            self.bootstrap_expect.map(|n| json!(n)),
        );
        put(&mut server, "start_join", list(&self.join));
        put(&mut server, "encrypt", s(&self.encrypt));
        if let Some(retry) = list(&self.retry_join) {
            server.insert("server_join".into(), json!({ "retry_join": retry }));
        }
        put(&mut client, "enabled", flag(self.client));
        put(&mut client, "servers", list(&self.servers));
        if !server.is_empty() {
            top.insert("server".into(), Value::Object(server));
        }
        if !client.is_empty() {
            top.insert("client".into(), Value::Object(client));
        }
        Value::Object(top)
    }
}

/// Rewrites Go-style single-dash long flags (`-dev`, `-config=x`) to clap's `--dev`. Stops after
/// `--`; leaves `-h`, `-` and negative numbers alone.
pub fn go_style(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let switches = boolean_flags();
    let mut out = Vec::new();
    let mut pass = false;
    for arg in args {
        let rewrite = !pass
            && arg.len() > 2
            && arg.starts_with('-')
            && !arg.starts_with("--")
            && arg[1..].starts_with(|c: char| c.is_ascii_alphabetic());
        if arg == "--" {
            pass = true;
        }
        let arg = if rewrite { format!("-{arg}") } else { arg };
        // Go's flag package takes `-flag=true|false` for a boolean flag (strconv.ParseBool).
        let switch = (!pass)
            .then(|| arg.strip_prefix("--")?.split_once('='))
            .flatten()
            .filter(|(name, _)| switches.contains(*name));
        match switch.map(|(name, value)| (name.to_string(), go_bool(value))) {
            Some((name, Some(true))) => out.push(format!("--{name}")),
            Some((_, Some(false))) => {}
            _ => out.push(arg),
        }
    }
    out
}

/// Go's `strconv.ParseBool`.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The long names of every on/off flag of every subcommand.
fn boolean_flags() -> std::collections::HashSet<String> {
    fn walk(cmd: &clap::Command, out: &mut std::collections::HashSet<String>) {
        for arg in cmd.get_arguments() {
            if matches!(arg.get_action(), clap::ArgAction::SetTrue)
                && let Some(long) = arg.get_long()
            {
                out.insert(long.to_string());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = std::collections::HashSet::new();
    walk(&<Cli as clap::CommandFactory>::command(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(go_style(args.iter().map(|s| s.to_string())))
    }

    #[test]
    fn go_style_flags_parse() {
        let cli = parse(&[
            "caravan",
            "agent",
            "-dev",
            "-config=/a.hcl",
            "-config",
            "/b",
            "-bind=0.0.0.0",
            "-data-dir",
            "/d",
            "-servers=1.2.3.4",
            "-servers=5.6.7.8",
            "--acl-enabled",
        ])
        .unwrap();
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert!(a.dev && a.acl_enabled);
        assert_eq!(a.config, vec!["/a.hcl", "/b"]);
        assert_eq!(a.servers.len(), 2);
        let tree = a.to_tree();
        assert_eq!(tree["bind_addr"], "0.0.0.0");
        assert_eq!(tree["client"]["servers"][1], "5.6.7.8");
        assert_eq!(tree["acl"]["enabled"], true);
        assert!(tree.get("server").is_none());
    }

    /// Go's `-flag=true|false` on boolean flags, with ParseBool's spellings.
    #[test]
    fn boolean_flags_take_go_values() {
        let check = |args: &[&str], want: &[&str]| {
            let args = args.iter().map(|s| s.to_string());
            let got = go_style(args);
            assert_eq!(got, want, "{want:?}");
        };
        check(&["c", "agent", "-dev=true"], &["c", "agent", "--dev"]);
        check(&["c", "agent", "-dev=false"], &["c", "agent"]);
        check(
            &["c", "agent", "-dev=T", "-acl-enabled=0"],
            &["c", "agent", "--dev"],
        );
        check(
            &["c", "server", "force-leave", "-prune=1", "n"],
            &["c", "server", "force-leave", "--prune", "n"],
        );
        // Not a boolean flag, or not a boolean value: left for clap to take or refuse.
        check(
            &["c", "agent", "-bind=true"],
            &["c", "agent", "--bind=true"],
        );
        check(
            &["c", "agent", "-dev=maybe"],
            &["c", "agent", "--dev=maybe"],
        );
        check(
            &["c", "x", "--", "-dev=true"],
            &["c", "x", "--", "-dev=true"],
        );
        assert!(parse(&["caravan", "agent", "-dev=maybe"]).is_err());
        let Ok(Cli {
            command: Command::Agent(a),
            ..
        }) = parse(&["caravan", "agent", "-dev=false", "-acl-enabled=true"])
        else {
            panic!("not agent")
        };
        assert!(!a.dev && a.acl_enabled);
    }

    #[test]
    fn monitor_and_its_export_parse() {
        let Command::Monitor(m) = parse(&["caravan", "monitor", "-log-level=debug", "-json"])
            .unwrap()
            .command
        else {
            panic!("not monitor")
        };
        assert!(m.command.is_none() && m.json);
        assert_eq!(m.log_level, "debug");
        let Command::Monitor(m) = parse(&[
            "caravan",
            "monitor",
            "export",
            "-on-disk=true",
            "-server-id",
            "leader",
        ])
        .unwrap()
        .command
        else {
            panic!("not monitor")
        };
        let Some(MonitorCommand::Export(e)) = m.command else {
            panic!("not export")
        };
        assert!(e.on_disk && !e.follow);
        assert_eq!(
            (e.server_id.as_deref(), e.logs_since.as_str()),
            (Some("leader"), "72h")
        );
        assert!(parse(&["caravan", "monitor", "export", "-log-level=debug"]).is_err());
    }

    #[test]
    fn bad_flags_fail() {
        assert!(parse(&["caravan", "agent", "-nope"]).is_err());
        assert!(parse(&["caravan", "agent", "-bootstrap-expect=x"]).is_err());
        assert!(parse(&["caravan", "bogus"]).is_err());
    }

    #[test]
    fn rewrite_rules() {
        let out = go_style(["-h", "-", "-1", "-dev", "--", "-x"].map(String::from));
        assert_eq!(out, vec!["-h", "-", "-1", "--dev", "--", "-x"]);
    }
}
