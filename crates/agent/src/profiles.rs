//! Profiles for `/v1/agent/pprof/*`, with Rust's closest equivalents of Go's:
//! - `cmdline`: argv joined with NUL bytes.
//! - `profile`: a CPU profile (pprof-rs, SIGPROF sampling at 99 Hz), gzipped pprof protobuf.
//! - `heap`, `allocs`: jemalloc's sampled heap profile in pprof form (`debug≠0`: allocator stats).
//! - `goroutine`: every OS thread with its stack (a signal-directed unwind per thread, see
//!   [`crate::stacks`]), as a pprof profile with one sample per thread or as text with `debug≠0`.
//! - `threadcreate`: every OS thread (name, state, wait channel), without stacks.
//! - `trace`: every `tracing` event during `seconds`, as Chrome trace JSON.
//! - `block`, `mutex`: no Rust equivalent: `501`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use caravan_http::ApiError;
use caravan_http::api::ProfileRequest;
use caravan_http::monitor::{MonitorHub, SubscribeOptions};
use http::StatusCode;
use pprof::protos::{Function, Line, Location, Message, Profile, Sample, ValueType};

static CPU_PROFILE_RUNNING: AtomicBool = AtomicBool::new(false);

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(bytes)
        .and_then(|_| w.finish())
        .map_err(|e| internal(format!("gzip: {e}")))
}

/// Collects one profile.
pub async fn collect(req: ProfileRequest, hub: &MonitorHub) -> Result<Vec<u8>, ApiError> {
    // Decoding already validated it; this catches fields changed after decoding.
    req.validate()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    match req.name.as_str() {
        "cmdline" => Ok(cmdline()),
        "profile" => cpu(req.seconds).await,
        "trace" => trace(req.seconds, hub).await,
        "heap" | "allocs" => heap(req.debug).await,
        "goroutine" => goroutine(req.debug).await,
        "threadcreate" => threads(&req.name, req.debug, &thread_list(), &[]),
        other => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{other} profiles have no equivalent in Caravan (Rust has no runtime {other} profiler)"
            ),
        )),
    }
}

fn cmdline() -> Vec<u8> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    redact_args(args).join("\0").into_bytes()
}

/// What a secret flag value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Whether a flag's value is a secret: `encrypt` (the gossip key), or a name containing `key`,
/// `token`, `secret` or `password`, in any case.
fn is_secret_flag(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "encrypt"
        || ["key", "token", "secret", "password"]
            .iter()
            .any(|word| name.contains(word))
}

/// argv with the values of secret flags replaced by [`REDACTED`], in the `-flag=value`,
/// `--flag=value` and `-flag value` forms (Go's flag syntax, which the CLI accepts; any number
/// of leading dashes counts). The program name and positional arguments are kept.
pub fn redact_args(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut value_is_secret = false;
    for (i, arg) in args.into_iter().enumerate() {
        if std::mem::take(&mut value_is_secret) {
            out.push(REDACTED.to_string());
            continue;
        }
        let flag = Some(arg.trim_start_matches('-'))
            .filter(|f| i > 0 && !f.is_empty() && f.len() < arg.len());
        match flag {
            Some(flag) => match flag.split_once('=') {
                Some((name, _)) if is_secret_flag(name) => {
                    let dashes = &arg[..arg.len() - flag.len()];
                    out.push(format!("{dashes}{name}={REDACTED}"));
                }
                Some(_) => out.push(arg),
                None => {
                    value_is_secret = is_secret_flag(flag);
                    out.push(arg);
                }
            },
            None => out.push(arg),
        }
    }
    out
}

async fn cpu(seconds: u64) -> Result<Vec<u8>, ApiError> {
    if CPU_PROFILE_RUNNING.swap(true, Ordering::AcqRel) {
        return Err(internal("cpu profiling already in use"));
    }
    // jemalloc's sampled backtraces and SIGPROF unwinding must not overlap (pprof-rs #36).
    let heap_was_active = set_heap_profiling(false).await;
    let result = on_profile_thread("cpu profile", move || {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| internal(format!("cpu profile: {e}")))?;
        std::thread::sleep(Duration::from_secs(seconds));
        let report = guard
            .report()
            .build()
            .map_err(|e| internal(format!("cpu profile: {e}")))?;
        let profile = report
            .pprof()
            .map_err(|e| internal(format!("cpu profile: {e}")))?;
        drop(report);
        release_symbols();
        let mut bytes = Vec::new();
        profile
            .encode(&mut bytes)
            .map_err(|e| internal(format!("cpu profile: {e}")))?;
        gzip(&bytes)
    })
    .await;
    if heap_was_active {
        set_heap_profiling(true).await;
    }
    CPU_PROFILE_RUNNING.store(false, Ordering::Release);
    result
}

/// Runs a profile's `work` on a thread of its own, whose allocations come from an arena of
/// their own ([`use_profile_arena`]). A profile allocates in bursts of 100 MiB and more: the CPU
/// profiler makes a new sample table of 4,097 separate 20 KiB blocks each time one stops (its
/// old one still held), then the report and the symbol tables. Served from the arenas the rest
/// of the agent uses, every burst split their address space into tens of thousands of extents
/// whose headers jemalloc keeps for good: a soak server's jemalloc metadata grew by ~3.5 MiB an
/// hour, 12,000 spare extent headers after 14 minutes and 24,000 in the middle of a CPU profile.
/// In their own arena the bursts repeat the same pattern over the same space.
async fn on_profile_thread<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("profile".into())
        .spawn(move || {
            use_profile_arena();
            let _ = tx.send(work());
        })
        .map_err(|e| internal(format!("{what}: {e}")))?;
    rx.await.map_err(|_| {
        internal(format!(
            "{what}: the profile thread ended without an answer"
        ))
    })?
}

/// The jemalloc arena profiles allocate from (made by the first profile), or `None` if jemalloc
/// refused to make one (profiles then share the other arenas).
#[cfg(target_os = "linux")]
fn profile_arena() -> Option<u32> {
    static ARENA: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *ARENA.get_or_init(|| {
        // SAFETY: "arenas.create" is documented as readable, giving the new arena's index as an
        // unsigned: http://jemalloc.net/jemalloc.3.html#arenas.create
        unsafe { tikv_jemalloc_ctl::raw::read::<u32>(b"arenas.create\0") }.ok()
    })
}

/// Binds the calling thread to [`profile_arena`]: what it allocates from now on comes from
/// there (what it frees goes back to whichever arena it came from).
#[cfg(target_os = "linux")]
fn use_profile_arena() {
    if let Some(arena) = profile_arena() {
        // SAFETY: "thread.arena" is documented as writable, taking an unsigned arena index:
        // http://jemalloc.net/jemalloc.3.html#thread.arena
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"thread.arena\0", arena) };
    }
}

#[cfg(not(target_os = "linux"))]
fn use_profile_arena() {}

/// Pauses (or resumes) jemalloc's heap sampling; `true` if heap profiling is on. Only
/// `prof.active` changes: `jemalloc_pprof`'s `deactivate` also writes `prof.reset`, which drops
/// every sample taken so far, so each CPU profile would leave the next heap profile showing only
/// the allocations made since it (a few of the live heap's samples, not the heap).
#[cfg(target_os = "linux")]
async fn set_heap_profiling(on: bool) -> bool {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return false;
    };
    // Held while sampling changes, so no heap dump runs in between.
    let ctl = ctl.lock().await;
    let was = ctl.activated();
    if was {
        // SAFETY: "prof.active" is documented as writable and taking a bool:
        // http://jemalloc.net/jemalloc.3.html#prof.active
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", on) };
    }
    was
}

/// Frees the symbol tables a profile's symbolization loaded. `backtrace` keeps them for the
/// process's life once loaded (the binary's symbols, and the DWARF of every library a stack went
/// through whose debug file is installed): over 100 MiB after one profile of each kind, growing
/// in steps as new addresses need new units parsed. Profiles are rare; reading the tables again
/// for each costs less than holding them.
fn release_symbols() {
    backtrace::clear_symbol_cache();
}

#[cfg(not(target_os = "linux"))]
async fn set_heap_profiling(_on: bool) -> bool {
    false
}

#[cfg(target_os = "linux")]
async fn heap(debug: i64) -> Result<Vec<u8>, ApiError> {
    if debug != 0 {
        return heap_stats();
    }
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or_else(|| internal("heap profiling is not enabled in this build"))?
        .clone();
    on_profile_thread("heap profile", move || {
        let mut ctl = ctl.blocking_lock();
        if !ctl.activated() {
            return Err(internal("heap profiling is not active"));
        }
        let profile = ctl
            .dump_pprof()
            .map_err(|e| internal(format!("heap profile: {e}")));
        release_symbols();
        profile
    })
    .await
}

#[cfg(target_os = "linux")]
fn heap_stats() -> Result<Vec<u8>, ApiError> {
    use tikv_jemalloc_ctl::{epoch, stats};
    let e = |err: tikv_jemalloc_ctl::Error| internal(format!("heap stats: {err}"));
    epoch::advance().map_err(e)?;
    let text = format!(
        "# jemalloc statistics (bytes)\n# allocated = {}\n# active = {}\n# resident = {}\n# mapped = {}\n# retained = {}\n# metadata = {}\n",
        stats::allocated::read().map_err(e)?,
        stats::active::read().map_err(e)?,
        stats::resident::read().map_err(e)?,
        stats::mapped::read().map_err(e)?,
        stats::retained::read().map_err(e)?,
        stats::metadata::read().map_err(e)?,
    );
    Ok(text.into_bytes())
}

#[cfg(not(target_os = "linux"))]
async fn heap(_debug: i64) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "heap profiles need Linux (jemalloc)",
    ))
}

/// One OS thread of this process.
struct ThreadInfo {
    tid: String,
    name: String,
    state: String,
    wchan: String,
}

fn thread_list() -> Vec<ThreadInfo> {
    let read = |p: String| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let tid = entry.file_name().to_string_lossy().into_owned();
            let stat = read(format!("/proc/self/task/{tid}/stat"));
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?")
                .to_string();
            out.push(ThreadInfo {
                name: read(format!("/proc/self/task/{tid}/comm")),
                wchan: read(format!("/proc/self/task/{tid}/wchan")),
                tid,
                state,
            });
        }
    }
    out.sort_by(|a, b| a.tid.cmp(&b.tid));
    out
}

/// Every thread with its stack. jemalloc's sampling is paused meanwhile so the signal never
/// lands inside its unwinder.
async fn goroutine(debug: i64) -> Result<Vec<u8>, ApiError> {
    // Stack capture and the CPU profiler unwind in signal handlers: never both at once. While a
    // CPU profile runs, threads are listed without stacks.
    if CPU_PROFILE_RUNNING.swap(true, Ordering::AcqRel) {
        return threads("goroutine", debug, &thread_list(), &[]);
    }
    let heap_was_active = set_heap_profiling(false).await;
    let result = on_profile_thread("goroutine profile", move || {
        let list = thread_list();
        let me = crate::stacks::current_tid().to_string();
        let stacks: Vec<Option<Vec<usize>>> = list
            .iter()
            .map(|t| {
                if t.tid == me {
                    Some(crate::stacks::capture_self())
                } else {
                    t.tid.parse().ok().and_then(crate::stacks::capture)
                }
            })
            .collect();
        let profile = threads("goroutine", debug, &list, &stacks);
        release_symbols();
        profile
    })
    .await;
    if heap_was_active {
        set_heap_profiling(true).await;
    }
    CPU_PROFILE_RUNNING.store(false, Ordering::Release);
    result
}

/// A thread list as text or pprof; `stacks[i]` is thread i's stack when captured.
fn threads(
    name: &str,
    debug: i64,
    list: &[ThreadInfo],
    stacks: &[Option<Vec<usize>>],
) -> Result<Vec<u8>, ApiError> {
    if debug != 0 {
        let mut text = format!("{name} profile: total {}\n", list.len());
        for (i, t) in list.iter().enumerate() {
            text.push_str(&format!(
                "\nthread {} [{}] state={}",
                t.tid, t.name, t.state
            ));
            if debug >= 2 {
                let wchan = if t.wchan.is_empty() { "0" } else { &t.wchan };
                text.push_str(&format!(" wchan={wchan}"));
            }
            text.push('\n');
            match stacks.get(i) {
                Some(Some(ips)) => {
                    for &ip in ips {
                        let (func, location) = crate::stacks::symbolize(ip);
                        text.push_str(&format!("#\t{ip:#x}\t{func}\n"));
                        if debug >= 2 && !location.is_empty() {
                            text.push_str(&format!("#\t\t{location}\n"));
                        }
                    }
                }
                Some(None) if t.tid.parse().is_ok_and(crate::stacks::blocks_signal) => {
                    text.push_str("#\t(no stack: the thread blocks signals)\n");
                }
                Some(None) => {
                    text.push_str("#\t(no stack: the thread did not answer in time)\n");
                }
                None => {}
            }
        }
        return Ok(text.into_bytes());
    }
    // pprof: one sample per thread, its "stack" the thread name under the process.
    let mut strings = vec![String::new(), name.to_string(), "count".into()];
    let mut intern = |s: String| {
        strings.push(s);
        (strings.len() - 1) as i64
    };
    let root = intern("caravan".into());
    let mut functions = vec![Function {
        id: 1,
        name: root,
        system_name: root,
        ..Default::default()
    }];
    let mut locations = vec![Location {
        id: 1,
        line: vec![Line {
            function_id: 1,
            line: 0,
        }],
        ..Default::default()
    }];
    let mut samples = Vec::new();
    let mut ip_locations: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    // Every location has one function with the same ID, so the next ID is the count plus one.
    for (i, t) in list.iter().enumerate() {
        let id = locations.len() as u64 + 1;
        let label = intern(format!("{} [{}] {}", t.name, t.tid, t.state));
        functions.push(Function {
            id,
            name: label,
            system_name: label,
            ..Default::default()
        });
        locations.push(Location {
            id,
            line: vec![Line {
                function_id: id,
                line: 0,
            }],
            ..Default::default()
        });
        // Leaf first: the thread's frames, then the thread, then the process.
        let mut location_id = Vec::new();
        for &ip in stacks
            .get(i)
            .and_then(Option::as_ref)
            .map_or(&[][..], |v| v.as_slice())
        {
            let loc = *ip_locations.entry(ip).or_insert_with(|| {
                let loc = locations.len() as u64 + 1;
                let (func, _) = crate::stacks::symbolize(ip);
                let fname = intern(func);
                functions.push(Function {
                    id: loc,
                    name: fname,
                    system_name: fname,
                    ..Default::default()
                });
                locations.push(Location {
                    id: loc,
                    address: ip as u64,
                    line: vec![Line {
                        function_id: loc,
                        line: 0,
                    }],
                    ..Default::default()
                });
                loc
            });
            location_id.push(loc);
        }
        location_id.push(id);
        location_id.push(1);
        samples.push(Sample {
            location_id,
            value: vec![1],
            ..Default::default()
        });
    }
    let profile = Profile {
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        sample: samples,
        location: locations,
        function: functions,
        string_table: strings,
        time_nanos: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        period_type: Some(ValueType { ty: 1, unit: 2 }),
        period: 1,
        ..Default::default()
    };
    let mut bytes = Vec::new();
    profile
        .encode(&mut bytes)
        .map_err(|e| internal(format!("{name} profile: {e}")))?;
    gzip(&bytes)
}

/// Most events one trace collects; it ends early when this many have been seen (a trace-level
/// `tracing` stream can produce hundreds of thousands of events a second).
pub const MAX_TRACE_EVENTS: usize = 50_000;

async fn trace(seconds: u64, hub: &MonitorHub) -> Result<Vec<u8>, ApiError> {
    let deadline = tokio::time::Instant::now()
        .checked_add(Duration::from_secs(seconds))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("trace: {seconds} seconds is out of range"),
            )
        })?;
    let mut sub = hub.subscribe(SubscribeOptions {
        level: Some(tracing::Level::TRACE),
        json: true,
        include_location: true,
    });
    let start = SystemTime::now();
    let events = trace_events(&mut sub.lines, deadline, start, MAX_TRACE_EVENTS).await;
    let doc = serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" });
    Ok(doc.to_string().into_bytes())
}

/// Chrome trace events from JSON log lines until `deadline`, the stream's end, or `max` events.
async fn trace_events(
    lines: &mut tokio::sync::mpsc::Receiver<bytes::Bytes>,
    deadline: tokio::time::Instant,
    start: SystemTime,
    max: usize,
) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    while events.len() < max {
        let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await else {
            break;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let ts = v["@timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(start).ok())
            .map_or(0, |d| d.as_micros() as u64);
        events.push(serde_json::json!({
            "name": v["@message"],
            "cat": v["@module"],
            "ph": "i",
            "s": "p",
            "ts": ts,
            "pid": std::process::id(),
            "tid": 0,
            "args": v,
        }));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_secrets_are_redacted() {
        fn check(input: &[&str], expected: &[&str]) {
            let got = redact_args(input.iter().map(|s| s.to_string()).collect());
            assert_eq!(got, expected, "input {input:?}");
        }
        // The review's leak, and the other spellings Go's flag syntax allows.
        check(
            &[
                "./caravan",
                "agent",
                "-dev",
                "-encrypt=rvnIDIw6u/l/Scc8Gb3qpRCY6CsPqYUwOOVIxN3zvxc=",
                "-config=a.hcl",
            ],
            &[
                "./caravan",
                "agent",
                "-dev",
                "-encrypt=<redacted>",
                "-config=a.hcl",
            ],
        );
        check(&["c", "--encrypt=k"], &["c", "--encrypt=<redacted>"]);
        check(
            &["c", "-encrypt", "k", "-dev"],
            &["c", "-encrypt", "<redacted>", "-dev"],
        );
        check(&["c", "--encrypt", "k"], &["c", "--encrypt", "<redacted>"]);
        check(&["c", "-ENCRYPT=k"], &["c", "-ENCRYPT=<redacted>"]);
        // Any flag naming a key, token, secret or password, in any case.
        check(
            &["c", "-token", "t", "x"],
            &["c", "-token", "<redacted>", "x"],
        );
        check(
            &["c", "--Vault-Token=t"],
            &["c", "--Vault-Token=<redacted>"],
        );
        check(&["c", "-api-key=k"], &["c", "-api-key=<redacted>"]);
        check(&["c", "-KEYFILE", "/k"], &["c", "-KEYFILE", "<redacted>"]);
        check(
            &["c", "-client-secret=s=x"],
            &["c", "-client-secret=<redacted>"],
        );
        check(
            &["c", "-db_password", "p"],
            &["c", "-db_password", "<redacted>"],
        );
        check(&["c", "-encrypt="], &["c", "-encrypt=<redacted>"]);
        // A secret flag at the end has no value to hide.
        check(&["c", "-token"], &["c", "-token"]);
        // Other flags, positionals, the program name and `--` are kept as they are.
        check(
            &[
                "/bin/token-tool",
                "acl",
                "token",
                "create",
                "-name=key",
                "-config",
                "k.hcl",
            ],
            &[
                "/bin/token-tool",
                "acl",
                "token",
                "create",
                "-name=key",
                "-config",
                "k.hcl",
            ],
        );
        check(&["c", "--", "-x", "-"], &["c", "--", "-x", "-"]);
        check(&["c", "---token=x"], &["c", "---token=<redacted>"]);
        check(&[], &[]);
    }

    #[tokio::test]
    async fn trace_with_a_huge_duration_cannot_panic() {
        let hub = MonitorHub::new();
        let e = trace(u64::MAX, &hub).await.unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(hub.is_empty(), "no subscription is left behind");
        // Through `collect`, the request's own bound answers first.
        let mut req = ProfileRequest::new("trace", 1, 0, 0).unwrap();
        req.seconds = u64::MAX;
        let e = collect(req, &hub).await.unwrap_err();
        assert_eq!(e.message, "seconds must be at most 3600");
    }

    #[tokio::test]
    async fn trace_events_stop_at_the_bound() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        for i in 0..20 {
            let line = format!(r#"{{"@message":"m{i}","@module":"t"}}"#);
            tx.send(bytes::Bytes::from(line)).await.unwrap();
        }
        // The sender stays open and the deadline is an hour away: only the bound can end the
        // collection; the outer timeout keeps a broken bound from hanging the test.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        let events = tokio::time::timeout(
            Duration::from_secs(10),
            trace_events(&mut rx, deadline, SystemTime::now(), 5),
        )
        .await
        .expect("the collection ends at the bound, not at the deadline");
        assert_eq!(events.len(), 5);
        assert_eq!(events[4]["name"], "m4");
        drop(tx);
    }

    /// Bytes of in-use heap the current heap profile accounts for.
    #[cfg(target_os = "linux")]
    async fn heap_profile_bytes() -> i64 {
        use std::io::Read;
        let gz = heap(0).await.expect("heap profile");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .expect("gunzip");
        let p = Profile::decode(&raw[..]).expect("pprof");
        p.sample.iter().filter_map(|s| s.value.first()).sum()
    }

    /// Serializes the tests that hold or measure the process's heap (`cargo test` runs a
    /// binary's tests on threads of one process).
    static HEAP_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Bytes in live allocations, as jemalloc counts them.
    #[cfg(target_os = "linux")]
    fn allocated() -> u64 {
        tikv_jemalloc_ctl::epoch::advance().expect("epoch");
        tikv_jemalloc_ctl::stats::allocated::read().expect("stats.allocated") as u64
    }

    /// Fails when `work` leaves 16 MiB more allocated than before it (symbolizing a profile
    /// loads the binary's symbol tables, and its DWARF in this debug build: over 50 MiB here).
    #[cfg(target_os = "linux")]
    async fn check_gives_back(what: &str, work: impl std::future::Future<Output = ()>) {
        // From no tables loaded (a test before this one, or pprof-rs's start, may have).
        backtrace::clear_symbol_cache();
        let before = allocated();
        work.await;
        let after = allocated();
        let grew = after.saturating_sub(before);
        assert!(
            grew < 16 << 20,
            "{what} left {grew} more bytes allocated ({before} -> {after})"
        );
    }

    /// The tables a heap or goroutine profile's symbolization loaded are given back when it is
    /// done, not kept for the process's life (with a CPU profile's, they were over 100 MiB of a
    /// release agent's heap, growing in steps as new addresses needed new DWARF units).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn heap_and_thread_profiles_give_back_their_symbol_tables() {
        let _heap = HEAP_TESTS.lock().await;
        check_gives_back("a heap and a goroutine profile", async {
            heap(0).await.expect("heap profile");
            goroutine(2).await.expect("goroutine profile");
        })
        .await;
    }

    /// As above, for a CPU profile of a busy thread (whose samples must be symbolized).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_cpu_profile_gives_back_its_symbol_tables() {
        let _heap = HEAP_TESTS.lock().await;
        // pprof-rs allocates its sample table (about 70 MiB) once per process and keeps it:
        // made here, outside the measure, by a profile that takes no samples and symbolizes none.
        drop(
            pprof::ProfilerGuardBuilder::default()
                .build()
                .expect("profiler"),
        );
        check_gives_back("a CPU profile", async {
            let spin = std::thread::spawn(|| {
                let end = std::time::Instant::now() + Duration::from_millis(1500);
                let mut x = 0u64;
                while std::time::Instant::now() < end {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                x
            });
            cpu(1).await.expect("cpu profile");
            spin.join().expect("spinner");
        })
        .await;
    }

    /// A CPU profile pauses heap sampling; it must not drop the samples taken before it
    /// (`jemalloc_pprof`'s `deactivate` resets them).
    #[cfg(target_os = "linux")]
    /// A profile's work allocates from the profiles' own arena, not from the ones the rest of
    /// the process uses.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn profiles_allocate_from_an_arena_of_their_own() {
        // SAFETY (both reads): "thread.arena" reads as an unsigned arena index.
        let arena_here = || unsafe { tikv_jemalloc_ctl::raw::read::<u32>(b"thread.arena\0") };
        let outside = arena_here().expect("thread.arena");
        let inside = on_profile_thread("test", move || Ok(arena_here().ok()))
            .await
            .expect("the profile thread answers");
        let own = profile_arena().expect("an arena for profiles");
        assert_eq!(inside, Some(own));
        assert_ne!(outside, own, "the test's own thread uses another arena");
    }

    #[tokio::test]
    async fn a_cpu_profile_keeps_the_heap_profile() {
        let _heap = HEAP_TESTS.lock().await;
        // 64 MiB in one allocation: sampled for certain (one sample per 512 KiB).
        let held = std::hint::black_box(vec![7u8; 64 << 20]);
        let before = heap_profile_bytes().await;
        cpu(1).await.expect("cpu profile");
        let after = heap_profile_bytes().await;
        assert!(
            before >= 64 << 20,
            "the held block is in the profile: {before}"
        );
        assert!(
            after >= 64 << 20,
            "the held block is still in the profile after a CPU profile: {after} (was {before})"
        );
        drop(held);
    }
}
