//! `caravan`: a Nomad-compatible agent. `caravan agent -dev` runs one; the other subcommands talk
//! to a running agent's HTTP API.
//!
//! The library holds the whole agent; the `caravan` binary is [`run_cli`] (and jemalloc as its
//! allocator, with [`MALLOC_CONF`]). Its only other public item is [`inproc`], a real agent
//! started in this process for the fuzz targets and tests that need the agent's own RPC router.

mod agent;
mod certs;
mod cli;
mod client;
mod client_only;
mod client_role;
mod cluster;
mod completion;
mod handler;
mod host;
mod identity;
mod info;
pub mod inproc;
mod keyring;
mod load;
mod local;
mod logfile;
mod logging;
mod notify;
mod profiles;
mod raftstats;
mod reload;
mod rpc;
mod run;
mod server;
mod stacks;
mod telemetry;
mod tls;

use std::process::ExitCode;

/// jemalloc's start-up options for the `caravan` binary (its `malloc_conf`): sampled heap
/// profiling on from the start (one sample per 512 KiB allocated), so `/v1/agent/pprof/heap` has
/// data, and `background_thread:true`: freed pages go back to the system after the decay time
/// (10 s) as Go's scavenger does, not only when their arena next allocates (without it a
/// profile's transient 80 MiB stayed resident for minutes on an idle arena).
pub const MALLOC_CONF: &[u8] =
    b"prof:true,prof_active:true,lg_prof_sample:19,background_thread:true\0";

/// The unit tests run on the binary's allocator with its options, so the profile tests see
/// what the agent serves.
#[cfg(all(test, target_os = "linux"))]
#[global_allocator]
static TEST_ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(test, target_os = "linux"))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
static malloc_conf: &[u8] = MALLOC_CONF;

use clap::Parser;

use cli::{Cli, Command};

/// The `caravan` command line: parses `args` (the program name first, as
/// [`std::env::args`] gives them) and runs the subcommand they name, returning the process's
/// exit code. The `caravan` binary is this function and its allocator.
pub fn run_cli(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = cli::go_style(args);
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return report_clap_error(e),
    };
    match cli.command {
        Command::Version => {
            println!(
                "Caravan v{} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("CARAVAN_REVISION")
            );
            ExitCode::SUCCESS
        }
        Command::Agent(args) => run::agent(&args),
        Command::AgentInfo(args) => client::agent_info(&args),
        Command::Server(cmd) => client::server(cmd),
        Command::Acl(cmd) => client::acl(cmd),
        Command::Operator(cli::OperatorCommand::Scheduler(cmd)) => client::scheduler(cmd),
        Command::Operator(cli::OperatorCommand::Snapshot(cmd)) => client::snapshot(cmd),
        Command::Job(cmd) => client::job(cmd),
        Command::Node(cli::NodeCommand::Status(c)) => client::node_status(&c),
        Command::Tls(cli::TlsCommand::Ca(cli::TlsCaCommand::Create(a))) => certs::ca_create(&a),
        Command::Tls(cli::TlsCommand::Cert(cli::TlsCertCommand::Create(a))) => {
            certs::cert_create(&a)
        }
        Command::Config(cli::ConfigCommand::Validate { paths }) => match load::validate(&paths) {
            Ok(()) => {
                println!("Configuration is valid!");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                ExitCode::from(1)
            }
        },
        Command::Operator(cli::OperatorCommand::Gossip(cli::GossipCommand::Keyring(k))) => {
            client::gossip_keyring(&k)
        }
        Command::Operator(cli::OperatorCommand::Raft(cli::RaftCommand::ListPeers(c))) => {
            client::raft_list_peers(&c)
        }
        Command::Completion { shell } => {
            let cmd = <cli::Cli as clap::CommandFactory>::command();
            print!("{}", completion::script(shell, &cmd));
            ExitCode::SUCCESS
        }
        Command::Monitor(m) => match m.command {
            Some(cli::MonitorCommand::Export(e)) => client::monitor_export(&e),
            None => client::monitor(&m.client, &m.log_level, m.json, m.node_id, m.server_id),
        },
    }
}

/// Help and version go to stdout in full; a usage error is one line on stderr.
fn report_clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("caravan: {}", first.trim_start_matches("error: "));
            ExitCode::from(1)
        }
    }
}
