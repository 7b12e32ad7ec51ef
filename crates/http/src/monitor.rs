//! Log fan-out for `/v1/agent/monitor`: a `tracing` layer that hands every event to each
//! subscriber at the subscriber's own level and format, independent of the agent's own level.
//! Each subscriber has a bounded buffer (512 lines); a full buffer drops lines and counts them,
//! so no reader can slow the agent. With no subscriber the cost is one level comparison.
//!
//! **What subscribers never see.** A monitor stream is itself carried by hyper and h2 (and, over
//! TLS, rustls): at `trace` level, every frame a stream sends makes transport events, which the
//! stream would send, which makes more — a loop that fed one stream 300,000 lines in 3 s. So
//! events whose target is one of [`EXCLUDED_TARGETS`] (the crate itself or one of its modules)
//! are never delivered, and the callsites are never enabled on the monitor's account; and an
//! event emitted on a thread while this layer is delivering another one (a field's `Debug`
//! that logs, say) is dropped rather than delivered re-entrantly. The agent's own stdout log is
//! not affected.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::LevelFilter;
use tracing_core::subscriber::Interest;
use tracing_subscriber::layer::{Context, Filter, Layer};

use crate::logs::{Fields, Line, format_line, module_of};

/// Lines buffered per subscriber before dropping.
pub const BUFFER_LINES: usize = 512;

/// Crates whose events never reach monitor subscribers: the transports a monitor stream itself
/// runs on (see the module documentation).
pub const EXCLUDED_TARGETS: [&str; 10] = [
    "h2",
    "hyper",
    "hyper_util",
    "tokio",
    "rustls",
    "tokio_rustls",
    "yamux",
    "snow",
    "mio",
    "want",
];

/// Whether an event target belongs to one of [`EXCLUDED_TARGETS`]: the crate name itself or a
/// module below it (`h2::codec`), not merely a name that starts the same (`h2c`, `tokio_util`).
pub(crate) fn is_excluded_target(target: &str) -> bool {
    EXCLUDED_TARGETS.iter().any(|krate| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

thread_local! {
    /// Set while this thread is inside [`MonitorHub::dispatch`].
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as delivering; `None` when it already is (a re-entrant event).
struct Delivering(());

impl Delivering {
    fn enter() -> Option<Delivering> {
        // `then`, not `then_some`: a guard built eagerly would be dropped, clearing the flag,
        // when this thread is already delivering.
        DELIVERING
            .try_with(|d| (!d.replace(true)).then(|| Delivering(())))
            .ok()
            .flatten()
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        let _ = DELIVERING.try_with(|d| d.set(false));
    }
}

/// What a subscriber wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Most verbose level delivered (`None`: nothing, `off`).
    pub level: Option<Level>,
    /// JSON lines.
    pub json: bool,
    /// Add the caller's `file:line`.
    pub include_location: bool,
}

struct Sub {
    id: u64,
    opts: SubscribeOptions,
    tx: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

/// A subscription: log lines and the count of lines dropped because the buffer was full.
/// Dropping it unsubscribes.
pub struct Subscription {
    /// Formatted lines (each ends with `\n`).
    pub lines: mpsc::Receiver<Bytes>,
    /// Lines dropped so far.
    pub dropped: Arc<AtomicU64>,
    hub: MonitorHub,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[derive(Default)]
struct HubInner {
    subs: RwLock<Vec<Sub>>,
    /// The most verbose level any subscriber wants, as a `LevelFilter` index (0 = off).
    max: AtomicUsize,
    next_id: AtomicU64,
}

/// The set of log subscribers; cheap to clone.
#[derive(Clone, Default)]
pub struct MonitorHub(Arc<HubInner>);

fn rank(level: Option<Level>) -> usize {
    match level {
        None => 0,
        Some(Level::ERROR) => 1,
        Some(Level::WARN) => 2,
        Some(Level::INFO) => 3,
        Some(Level::DEBUG) => 4,
        Some(Level::TRACE) => 5,
    }
}

fn filter_of(rank: usize) -> LevelFilter {
    match rank {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

impl MonitorHub {
    /// An empty hub.
    pub fn new() -> MonitorHub {
        MonitorHub::default()
    }

    /// Adds a subscriber.
    pub fn subscribe(&self, opts: SubscribeOptions) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFER_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        self.0.subs.write().push(Sub {
            id,
            opts,
            tx,
            dropped: dropped.clone(),
        });
        self.recompute();
        Subscription {
            lines: rx,
            dropped,
            hub: self.clone(),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.0.subs.write().retain(|s| s.id != id);
        self.recompute();
    }

    /// Ends every subscription (their streams see the end), e.g. on shutdown.
    pub fn close_all(&self) {
        self.0.subs.write().clear();
        self.recompute();
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.0.subs.read().len()
    }

    /// Whether there is no subscriber.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn recompute(&self) {
        // One recomputation at a time, process-wide. tracing-core's rebuild reads every
        // dispatcher's level hint and then stores the global maximum level, and two rebuilds can
        // overlap: one that read a hint before another subscription changed it could store its
        // stale maximum last, so a new `trace` subscriber would get nothing below `info` until
        // the next change. Likewise two hubs' (or one hub's) compute-and-swap must not interleave.
        static RECOMPUTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = RECOMPUTING.lock().unwrap_or_else(|e| e.into_inner());
        let max = self
            .0
            .subs
            .read()
            .iter()
            .map(|s| rank(s.opts.level))
            .max()
            .unwrap_or(0);
        if self.0.max.swap(max, Ordering::Relaxed) != max {
            // Callsites cache whether they are enabled; a new, more verbose subscriber must see
            // events the agent's own level would skip.
            tracing_core::callsite::rebuild_interest_cache();
        }
    }

    /// The layer to install in the subscriber stack (already filtered by the hub's level).
    pub fn layer<S>(&self) -> tracing_subscriber::filter::Filtered<MonitorLayer, MonitorFilter, S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        MonitorLayer(self.clone()).with_filter(MonitorFilter(self.clone()))
    }

    fn dispatch(&self, event: &Event<'_>) {
        let meta = event.metadata();
        if is_excluded_target(meta.target()) {
            return;
        }
        // Held until the lines are queued: an event raised meanwhile on this thread (by a
        // field's `Debug`, a formatter, a channel) is dropped, never delivered re-entrantly, and
        // never takes the subscriber lock a second time.
        let Some(_delivering) = Delivering::enter() else {
            return;
        };
        let subs = self.0.subs.read();
        if subs.is_empty() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let module = module_of(meta.target());
        let caller = meta
            .file()
            .map(|f| format!("{f}:{}", meta.line().unwrap_or(0)));
        let now = SystemTime::now();
        // Formatted at most once per variant (json × location) in use.
        let mut cache: [Option<Bytes>; 4] = Default::default();
        for sub in subs.iter() {
            if rank(Some(*meta.level())) > rank(sub.opts.level) {
                continue;
            }
            let slot = usize::from(sub.opts.json) * 2 + usize::from(sub.opts.include_location);
            let bytes = cache[slot]
                .get_or_insert_with(|| {
                    let line = Line {
                        time: now,
                        level: meta.level(),
                        module: &module,
                        fields: &fields,
                        caller: sub.opts.include_location.then(|| caller.clone()).flatten(),
                    };
                    Bytes::from(format_line(&line, sub.opts.json))
                })
                .clone();
            if sub.tx.try_send(bytes).is_err() {
                sub.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The fan-out layer.
pub struct MonitorLayer(MonitorHub);

impl<S: Subscriber> Layer<S> for MonitorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.0.dispatch(event);
    }
}

/// The per-layer filter: the most verbose level any subscriber wants.
pub struct MonitorFilter(MonitorHub);

impl<S> Filter<S> for MonitorFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        rank(Some(*meta.level())) <= (self.0).0.max.load(Ordering::Relaxed)
            && !is_excluded_target(meta.target())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_excluded_target(meta.target()) {
            Interest::never()
        } else {
            Interest::sometimes()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter_of((self.0).0.max.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// Tests that install a `tracing` dispatcher run one at a time. tracing's callsite interest
    /// and maximum level are process-wide: with several scoped dispatchers alive on different
    /// threads, per-layer filters can have one test's events skipped while another test's
    /// dispatcher rebuilds them (seen as lines missing from `full_buffers_drop_and_count`, in
    /// the original two tests too). The agent has one global dispatcher.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn opts(level: Level, json: bool) -> SubscribeOptions {
        SubscribeOptions {
            level: Some(level),
            json,
            include_location: false,
        }
    }

    #[test]
    fn each_subscriber_gets_its_level_and_format() {
        let _serial = serial();
        let hub = MonitorHub::new();
        let subscriber = tracing_subscriber::registry()
            .with(hub.layer())
            .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::ERROR));
        tracing::subscriber::with_default(subscriber, || {
            let mut debug = hub.subscribe(opts(Level::DEBUG, false));
            let mut warn = hub.subscribe(opts(Level::WARN, true));
            tracing::debug!(target: "t", "a debug line");
            tracing::warn!(target: "t", "a warning <script>");
            let d1 = debug.lines.try_recv().unwrap();
            assert!(String::from_utf8_lossy(&d1).contains("[DEBUG] t: a debug line"));
            let d2 = debug.lines.try_recv().unwrap();
            assert!(String::from_utf8_lossy(&d2).contains("[WARN]  t: a warning <script>"));
            let w = warn.lines.try_recv().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&w).unwrap();
            assert_eq!(v["@message"], "a warning <script>");
            assert!(
                warn.lines.try_recv().is_err(),
                "the warn stream gets no debug line"
            );
            drop(debug);
            assert_eq!(hub.len(), 1);
        });
    }

    fn drain(sub: &mut Subscription) -> Vec<String> {
        std::iter::from_fn(|| sub.lines.try_recv().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    /// Every excluded crate, at its root and in a module, plus look-alike names that are kept.
    fn emit_transport_and_lookalikes() {
        tracing::trace!(target: "h2", "x");
        tracing::trace!(target: "h2::codec::framed_write", "x");
        tracing::trace!(target: "hyper", "x");
        tracing::trace!(target: "hyper::proto::h1::conn", "x");
        tracing::trace!(target: "hyper_util::client::legacy", "x");
        tracing::trace!(target: "tokio", "x");
        tracing::trace!(target: "tokio::task::waker", "x");
        tracing::trace!(target: "rustls::conn", "x");
        tracing::trace!(target: "tokio_rustls", "x");
        tracing::trace!(target: "yamux::connection", "x");
        tracing::trace!(target: "snow::resolvers", "x");
        tracing::trace!(target: "mio::poll", "x");
        tracing::error!(target: "want", "x");
        tracing::trace!(target: "h2c", "kept h2c");
        tracing::trace!(target: "hyperloop::x", "kept hyperloop");
        tracing::trace!(target: "tokio_util::codec", "kept tokio_util");
        tracing::trace!(target: "http", "kept http");
        tracing::trace!(target: "wanted", "kept wanted");
    }

    const KEPT: [&str; 5] = [
        "kept h2c",
        "kept hyperloop",
        "kept tokio_util",
        "kept http",
        "kept wanted",
    ];

    #[test]
    fn transport_events_never_reach_subscribers() {
        let _serial = serial();
        assert!(EXCLUDED_TARGETS.iter().all(|t| is_excluded_target(t)));
        // The layer as installed (with its filter), and the bare layer, which must hold the rule
        // by itself.
        let hub = MonitorHub::new();
        let filtered = tracing_subscriber::registry().with(hub.layer());
        let bare = tracing_subscriber::registry().with(MonitorLayer(hub.clone()));
        let mut sub = hub.subscribe(opts(Level::TRACE, false));
        tracing::subscriber::with_default(filtered, emit_transport_and_lookalikes);
        let lines = drain(&mut sub);
        assert_eq!(lines.len(), KEPT.len(), "{lines:#?}");
        for (line, kept) in lines.iter().zip(KEPT) {
            assert!(line.ends_with(&format!(": {kept}\n")), "{line}");
        }
        tracing::subscriber::with_default(bare, emit_transport_and_lookalikes);
        assert_eq!(drain(&mut sub).len(), KEPT.len());
    }

    #[test]
    fn other_layers_still_see_transport_events() {
        let _serial = serial();
        #[derive(Clone, Default)]
        struct Capture(Arc<parking_lot::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let hub = MonitorHub::new();
        let stdout = Capture::default();
        let writer = stdout.clone();
        let subscriber = tracing_subscriber::registry().with(hub.layer()).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_filter(LevelFilter::TRACE),
        );
        let mut sub = hub.subscribe(opts(Level::TRACE, false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "h2::proto", "an h2 frame");
        });
        assert!(drain(&mut sub).is_empty());
        let text = String::from_utf8_lossy(&stdout.0.lock()).into_owned();
        assert!(text.contains("an h2 frame"), "{text:?}");
    }

    #[test]
    fn events_raised_while_delivering_are_not_delivered() {
        let _serial = serial();
        let hub = MonitorHub::new();
        let subscriber = tracing_subscriber::registry().with(hub.layer());
        tracing::subscriber::with_default(subscriber, || {
            let mut sub = hub.subscribe(opts(Level::TRACE, false));
            // What `dispatch` holds while it formats and queues: an event raised then on this
            // thread (under a global dispatcher, tracing calls the layer again) is dropped.
            let delivering = Delivering::enter().expect("not delivering yet");
            assert!(Delivering::enter().is_none(), "the guard does not nest");
            tracing::info!(target: "t", "raised while delivering");
            drop(delivering);
            tracing::info!(target: "t", "after delivery");
            let lines = drain(&mut sub);
            assert_eq!(lines.len(), 1, "{lines:#?}");
            assert!(lines[0].ends_with("t: after delivery\n"), "{}", lines[0]);
        });
    }

    #[test]
    fn full_buffers_drop_and_count() {
        let _serial = serial();
        let hub = MonitorHub::new();
        let subscriber = tracing_subscriber::registry().with(hub.layer());
        tracing::subscriber::with_default(subscriber, || {
            let sub = hub.subscribe(opts(Level::INFO, false));
            for i in 0..(BUFFER_LINES + 10) {
                tracing::info!(target: "t", i, "line");
            }
            assert_eq!(sub.dropped.load(Ordering::Relaxed), 10);
            hub.close_all();
            assert!(hub.is_empty());
        });
    }
}

/// A local log stream for an already validated request: what `/v1/agent/monitor` serves, and
/// what a server relays to another one.
pub use endpoint::serve;

/// Streaming `/v1/agent/monitor` (spec §8).
pub(crate) mod endpoint {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use base64::Engine;
    use bytes::{Bytes, BytesMut};
    use http::header::{CONTENT_TYPE, HeaderValue};
    use http::{Response, StatusCode};
    use http_body_util::BodyExt;
    use tracing::Level;

    use super::{SubscribeOptions, Subscription};
    use crate::api::MonitorRequest;
    use crate::app::Caps;
    use crate::dto::StreamFrame;
    use crate::handlers::local_target;
    use crate::request::parse_bool;
    use crate::response::Body;
    use crate::{ApiError, Ctx};
    use caravan_agent_core::acl::Acl;

    /// Largest `Data` per frame.
    pub const FRAME_BYTES: usize = 1024;
    /// Batching window.
    pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
    /// Heartbeat period.
    pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
    /// How often drops are reported.
    pub const DROP_CHECK_EVERY: Duration = Duration::from_secs(3);

    /// Marks a streaming response (never buffered for compression).
    #[derive(Clone, Copy, Debug)]
    pub struct Streaming;

    fn parse_level(raw: Option<&str>) -> Result<Option<Level>, ApiError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(Some(Level::INFO));
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Some(Level::TRACE)),
            "debug" => Ok(Some(Level::DEBUG)),
            "info" => Ok(Some(Level::INFO)),
            "warn" => Ok(Some(Level::WARN)),
            "error" => Ok(Some(Level::ERROR)),
            "off" => Ok(None),
            _ => Err(ApiError::bad_request(format!("Unknown log level: {raw}"))),
        }
    }

    fn parse_flag(ctx: &Ctx, key: &str, what: &str) -> Result<bool, ApiError> {
        match ctx.query.get(key) {
            None | Some("") => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Unknown option for {what}: strconv.ParseBool: parsing {v:?}: invalid syntax"
                ))
            }),
        }
    }

    /// Whose logs a monitor or export request wants: `node_id` and `server_id` as spec §0.8
    /// says, except that a client-only agent ignores `server_id` and serves its own (spec §8).
    pub(crate) fn log_target(
        caps: &Caps,
        ctx: &Ctx,
    ) -> Result<Option<crate::handlers::Target>, ApiError> {
        let client_only = !caps.config().server.enabled;
        if client_only && ctx.query.get("node_id").unwrap_or("").is_empty() {
            return Ok(None);
        }
        local_target(
            caps,
            ctx,
            "Cannot target node and server simultaneously",
            StatusCode::BAD_REQUEST,
        )
    }

    /// Validates the request in the spec's order, then starts the stream (relayed from another
    /// server when `server_id` names one).
    pub(crate) async fn monitor(caps: &Caps, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
        parse_level(ctx.query.get("log_level"))?;
        let request = MonitorRequest {
            log_level: ctx.query.get("log_level").unwrap_or("").to_string(),
            log_json: parse_flag(ctx, "log_json", "log json")?,
            plain: parse_flag(ctx, "plain", "plain")?,
            include_location: parse_flag(ctx, "log_include_location", "log_include_location")?,
        };
        let target = log_target(caps, ctx)?;
        caps.require(ctx.token.as_deref(), Acl::allow_agent_read)?;
        match target {
            Some(t) if t.is_remote() => {
                let plain = request.plain;
                let rx = caps
                    .forwarder()?
                    .remote_monitor(t.remote(), ctx.token.as_deref(), request)
                    .await?;
                Ok(relay(rx, plain))
            }
            _ => serve(caps.debugging()?.monitor_hub(), &request),
        }
    }

    /// Starts a local stream for an already validated request (also what a server relays to
    /// another one).
    pub fn serve(
        hub: &super::MonitorHub,
        request: &MonitorRequest,
    ) -> Result<Response<Body>, ApiError> {
        let level = parse_level(Some(&request.log_level))?;
        let sub = hub.subscribe(SubscribeOptions {
            level,
            json: request.log_json,
            include_location: request.include_location,
        });
        Ok(stream(sub, request.plain))
    }

    pub(crate) fn streaming_response(body: Body, plain: bool) -> Response<Body> {
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        let content_type = if plain {
            "text/plain"
        } else {
            "application/json"
        };
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp.extensions_mut().insert(Streaming);
        resp
    }

    /// A streaming response that relays bytes from another agent's stream.
    pub(crate) fn relay(mut rx: tokio::sync::mpsc::Receiver<Bytes>, plain: bool) -> Response<Body> {
        let (mut tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(16);
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if tx.send_data(chunk).await.is_err() {
                    return;
                }
            }
        });
        streaming_response(body.boxed(), plain)
    }

    /// Turns a subscription into a streaming response.
    pub fn stream(sub: Subscription, plain: bool) -> Response<Body> {
        let (tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(16);
        tokio::spawn(pump(sub, plain, tx));
        streaming_response(body.boxed(), plain)
    }

    fn frames(batch: &[u8]) -> Vec<Bytes> {
        let engine = base64::engine::general_purpose::STANDARD;
        batch
            .chunks(FRAME_BYTES)
            .enumerate()
            .map(|(i, chunk)| {
                let data = engine.encode(chunk);
                let frame = StreamFrame {
                    offset: (i * FRAME_BYTES) as i64,
                    data: &data,
                    file_event: "log",
                };
                Bytes::from(serde_json::to_vec(&frame).unwrap_or_default())
            })
            .collect()
    }

    async fn pump(
        mut sub: Subscription,
        plain: bool,
        mut tx: http_body_util::channel::Sender<Bytes, std::convert::Infallible>,
    ) {
        let mut buf = BytesMut::new();
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut drops = tokio::time::interval(DROP_CHECK_EVERY);
        let mut sent_since_heartbeat = false;
        loop {
            let mut ended = false;
            let mut tick = false;
            tokio::select! {
                line = sub.lines.recv() => match line {
                    Some(line) => buf.extend_from_slice(&line),
                    None => ended = true,
                },
                _ = flush.tick() => tick = true,
                _ = heartbeat.tick() => {
                    if !plain && !sent_since_heartbeat && tx.send_data(Bytes::from_static(b"{}")).await.is_err() {
                        return;
                    }
                    sent_since_heartbeat = false;
                    continue;
                }
                _ = drops.tick() => {
                    let n = sub.dropped.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        buf.extend_from_slice(
                            format!("[WARN] Monitor dropped {n} logs during monitor request\n").as_bytes(),
                        );
                    }
                }
            }
            let due = buf.len() >= FRAME_BYTES || ended || tick;
            if due && !buf.is_empty() {
                let batch = buf.split().freeze();
                let out = if plain { vec![batch] } else { frames(&batch) };
                for piece in out {
                    if tx.send_data(piece).await.is_err() {
                        return;
                    }
                }
                sent_since_heartbeat = true;
            }
            if ended {
                return;
            }
        }
    }
}
