//! The agent's log output: hclog-shaped lines on stdout at the configured level, plus the
//! monitor fan-out layer whose subscribers choose their own levels.

use caravan_agent_core::config::LogLevel;
use caravan_http::logs::HclogFormat;
use caravan_http::monitor::MonitorHub;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs stdout logging at `level` and the monitor layer of `hub`.
pub fn init(level: LogLevel, json: bool, hub: &MonitorHub) {
    let filter = match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let stdout = tracing_subscriber::fmt::layer()
        .event_format(HclogFormat { json })
        .with_writer(std::io::stdout)
        .with_filter(filter);
    // openraft narrates every heartbeat at DEBUG; Caravan logs the Raft events that matter
    // itself (target `raft`), so openraft is kept to warnings, for stdout and monitors alike.
    let quiet = tracing_subscriber::filter::Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("openraft", LevelFilter::WARN);
    let _ = tracing_subscriber::registry()
        .with(quiet)
        .with(stdout)
        .with(hub.layer())
        .try_init();
}
