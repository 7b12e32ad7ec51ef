//! The agent's log output: hclog-shaped lines on stdout (and in the `log_file`, when one is
//! configured) at the configured level, plus the monitor fan-out layer whose subscribers choose
//! their own levels.

use std::sync::Arc;

use caravan_agent_core::config::{LogFileConfig, LogLevel};
use caravan_http::logs::HclogFormat;
use caravan_http::monitor::MonitorHub;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Changes the stdout log level of a running agent (a reload).
pub struct LevelHandle(Box<dyn Fn(LevelFilter) -> Result<(), String> + Send + Sync>);

impl LevelHandle {
    /// Logs at `level` from now on.
    pub fn set(&self, level: LogLevel) -> Result<(), String> {
        (self.0)(filter_of(level))
    }
}

fn filter_of(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// Installs stdout logging at `level` (changeable through the returned handle), the same lines
/// in `file` when given, and the monitor layer of `hub`. Fails when the log file cannot be
/// opened.
pub fn init(
    level: LogLevel,
    json: bool,
    file: Option<LogFileConfig>,
    hub: &MonitorHub,
) -> Result<LevelHandle, String> {
    let file = match file {
        Some(config) => Some(Arc::new(parking_lot::Mutex::new(
            crate::logfile::LogFile::open(config)?,
        ))),
        None => None,
    };
    let tee = crate::logfile::Tee(file);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter_of(level));
    let stdout = tracing_subscriber::fmt::layer()
        .event_format(HclogFormat { json })
        .with_writer(move || tee.clone())
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
    Ok(LevelHandle(Box::new(move |level| {
        handle
            .modify(|f| *f = level)
            .map_err(|e| format!("cannot change the log level: {e}"))
    })))
}
