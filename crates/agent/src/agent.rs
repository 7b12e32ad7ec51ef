//! The composition root: builds this agent's roles from its configuration, the HTTP application
//! with each capability from the role that owns it, and the RPC handler; starts the roles'
//! background duties and leaves on shutdown. No other module sees all the roles at once.

use std::sync::Arc;

use caravan_agent_core::config::AgentConfig;
use caravan_http::monitor::MonitorHub;
use caravan_http::{App, AppBuilder};

use crate::cli::AgentArgs;
use crate::client_only::ClientOnly;
use crate::client_role::ClientRole;
use crate::handler::AgentHandler;
use crate::info::Info;
use crate::local::Local;
use crate::logging::LevelHandle;
use crate::reload::Reloader;
use crate::rpc::Rpc;
use crate::server::ServerRole;

/// A running agent: its roles and the HTTP application over them.
pub struct Agent {
    local: Arc<Local>,
    server: Option<Arc<ServerRole>>,
    client: Arc<ClientRole>,
    reloader: Arc<Reloader>,
    app: App,
    /// Ends the client node's heartbeats (on shutdown).
    stop: tokio::sync::watch::Sender<bool>,
}

impl Agent {
    /// Sets up identities (persisted under `data_dir` outside dev mode), the client role, the
    /// server role when the configuration enables one, and the HTTP application. A reload
    /// re-reads what `args` names and changes the log level through `level`, the TLS files
    /// through `tls`.
    pub async fn start(
        config: AgentConfig,
        hub: MonitorHub,
        args: AgentArgs,
        level: LevelHandle,
        tls: Option<Arc<crate::tls::LiveTls>>,
        metrics: caravan_http::metrics::MetricsSink,
        keyring: Option<Arc<crate::keyring::ServerKeyring>>,
    ) -> Result<Agent, String> {
        let server_id = id_if(config.server.enabled, &config, "server", "node-id")?;
        let node_id = id_if(config.client.enabled, &config, "client", "client-id")?;
        let node_secret = id_if(config.client.enabled, &config, "client", "secret-id")?;
        let rpc = Arc::new(Rpc::new(
            crate::rpc::dial(
                &config,
                tls.as_ref(),
                keyring.as_ref().map(|k| k.rpc_keys()),
            )?,
            crate::rpc::confirms_servers(&config, keyring.is_some()),
        ));
        let node = node_id.zip(node_secret);
        let client = Arc::new(ClientRole::new(&config, node, rpc.clone()).await);
        let local = Arc::new(Local::new(config, hub));
        let server = match server_id {
            Some(id) => Some(Arc::new(
                ServerRole::start(local.clone(), id, rpc.clone(), keyring).await?,
            )),
            None => None,
        };
        let reloader = Arc::new(Reloader::new(
            args,
            level,
            local.config.clone(),
            server.clone(),
            tls,
        ));
        let app = app(&local, server.as_ref(), &client)
            .reload(reloader.clone())
            .metrics(metrics)
            .build()
            .map_err(|e| e.to_string())?;
        reloader.attach(app.live());
        let agent = Agent {
            local,
            server,
            client,
            reloader,
            app,
            stop: tokio::sync::watch::channel(false).0,
        };
        // Servers call this agent back over the connections it opened (a client node's).
        rpc.serve_calls_back(Arc::new(agent.rpc_handler()));
        Ok(agent)
    }

    /// The running configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.local.config
    }

    /// The server role, when this agent runs one (for the telemetry sampler).
    pub fn server_role(&self) -> Option<Arc<ServerRole>> {
        self.server.clone()
    }

    /// The HTTP application.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The RPC handler, over the roles it serves.
    pub fn rpc_handler(&self) -> AgentHandler {
        AgentHandler {
            local: self.local.clone(),
            server: self.server.clone(),
            app: self.app.clone(),
        }
    }

    /// Starts the background duties: a server joins its peers and runs the cluster's duties;
    /// a client registers its node with its servers and heartbeats.
    pub fn spawn_duties(&self) {
        if let Some(server) = &self.server {
            server.spawn_start_joins();
            server.spawn_duties();
        }
        self.client.spawn(self.stop.subscribe());
    }

    /// Re-reads the configuration and applies what can change live (SIGHUP).
    pub async fn reload(&self) -> Result<(), String> {
        caravan_http::Reload::reload(&*self.reloader).await
    }

    /// Stops heartbeating and leaves the gossip pool gracefully (servers).
    pub async fn leave(&self) {
        self.stop.send_replace(true);
        if let Some(server) = &self.server {
            server.leave().await;
        }
    }

    /// Ends every log stream, so open monitor requests finish instead of holding shutdown.
    pub fn close_log_streams(&self) {
        self.local.hub.close_all();
    }
}

/// The ID of `kind` when `enabled` (see [`crate::identity::load`]).
fn id_if(
    enabled: bool,
    config: &AgentConfig,
    kind: &str,
    file: &str,
) -> Result<Option<String>, String> {
    enabled
        .then(|| crate::identity::load(config, kind, file))
        .transpose()
}

/// The agent's HTTP application: every capability, each from the role that owns it; a
/// client-only agent answers the server capabilities through [`ClientOnly`].
fn app(
    local: &Arc<Local>,
    server: Option<&Arc<ServerRole>>,
    client: &Arc<ClientRole>,
) -> AppBuilder {
    let info = Arc::new(Info {
        local: local.clone(),
        server: server.cloned(),
        client: client.clone(),
    });
    let builder = App::builder(info)
        .server_list(client.clone())
        .debugging(local.clone());
    match server {
        Some(server) => with_server_capabilities(builder, server).keyring(server.clone()),
        None => with_server_capabilities(builder, &Arc::new(ClientOnly::new(client.clone()))),
    }
}

/// Adds the capabilities a server answers (or a client-only agent in its stead).
fn with_server_capabilities<S>(builder: AppBuilder, server: &Arc<S>) -> AppBuilder
where
    S: caravan_http::Membership
        + caravan_http::Acls
        + caravan_http::Jobs
        + caravan_http::Schedulers
        + caravan_http::Forwarding
        + caravan_http::Operator,
{
    builder
        .membership(server.clone())
        .acls(server.clone())
        .jobs(server.clone())
        .schedulers(server.clone())
        .forwarding(server.clone())
        .operator(server.clone())
}
