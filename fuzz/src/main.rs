//! The stable-toolchain fuzz engine: replays a target's committed corpus, then mutates it at
//! random (bit flips, byte sets, inserts, deletes, duplications, splices across inputs) for a
//! time budget. Without coverage feedback it finds less than libFuzzer; it is what CI can run
//! on stable, and a regression that panics on the corpus fails it at once.
//!
//! ```text
//! caravan-fuzz list
//! caravan-fuzz run [--secs N] [--runs N] [--seed S] [--rss-limit-mb M] [TARGET...]
//!                                    replay + mutate for N s or N inputs (default: all, 2 s)
//! caravan-fuzz replay TARGET FILE...                    run given inputs, timed (a crash to reproduce)
//! caravan-fuzz seed [TARGET...]                         write the built-in seeds to the corpus
//! ```
//!
//! A failure (a panic on any thread, an allocation over [`ALLOC_LIMIT`], the process's resident
//! memory over [`RSS_LIMIT`], an input running over [`HANG_LIMIT`]) saves the input under
//! `target/fuzz-crashes/<target>/` and fails the run. The committed corpus of every target run
//! must exist and hold inputs (`fuzz/corpus/<target>/`; `seed` starts one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use caravan_fuzz::{MAX_INPUT, TARGETS, Target};

/// The largest single allocation an input may cause (libFuzzer's `-malloc_limit_mb` defaults
/// to its RSS limit; inputs here are at most 64 KiB, so anything near this is unbounded).
const ALLOC_LIMIT: usize = 512 << 20;
/// An input running longer than this is a hang.
const HANG_LIMIT: Duration = Duration::from_secs(60);
/// The first word of the line `run` prints per target for tools to read:
/// `caravan-fuzz-stat TARGET EXECUTIONS SECONDS ok|failed`.
const STAT: &str = "caravan-fuzz-stat";
/// Mutated inputs kept for further mutation, at most.
const POOL_MAX: usize = 4096;
/// The most resident memory the process may hold, sampled once a second (libFuzzer's
/// `-rss_limit_mb=2048`): a leak or an input that builds a huge structure from small
/// allocations, which [`ALLOC_LIMIT`] does not see. `run --rss-limit-mb N` changes it.
const RSS_LIMIT: u64 = 2048 << 20;
static RSS_LIMIT_NOW: AtomicU64 = AtomicU64::new(RSS_LIMIT);

/// The input running now and its target, for the allocation and hang checks to save.
static CURRENT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
static CURRENT_TARGET: Mutex<&str> = Mutex::new("");
/// When the current input started (ms since [`EPOCH`]); 0 when none runs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static REPORTING: AtomicBool = AtomicBool::new(false);
/// The first panic message since the last check, from any thread.
static PANICKED: Mutex<Option<String>> = Mutex::new(None);

struct Capped;

// SAFETY: every call is passed to `System` unchanged; the check only reads the layout's size.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            oversized(layout.size());
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_LIMIT {
            oversized(layout.size());
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_LIMIT {
            oversized(new_size);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

fn oversized(size: usize) {
    if REPORTING.swap(true, Ordering::SeqCst) {
        return; // the report's own allocations
    }
    fail_now(&format!(
        "an allocation of {size} bytes (limit {ALLOC_LIMIT})"
    ));
}

/// Saves the current input and aborts (an allocation or a hang cannot be unwound).
fn fail_now(what: &str) -> ! {
    let ptr = CURRENT.load(Ordering::SeqCst);
    let len = CURRENT_LEN.load(Ordering::SeqCst);
    let target = CURRENT_TARGET.lock().map(|t| *t).unwrap_or("unknown");
    if !ptr.is_null() {
        // SAFETY: CURRENT points at the running input for as long as it runs (set and cleared
        // around each run by `run_one`, which holds the input borrowed).
        let input = unsafe { std::slice::from_raw_parts(ptr, len) };
        let path = save_crash(target, input);
        eprintln!(
            "caravan-fuzz: {target}: {what}; input saved as {}",
            path.display()
        );
    } else {
        eprintln!("caravan-fuzz: {target}: {what}");
    }
    std::process::abort()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["list"] => {
            for t in TARGETS {
                println!("{}", t.name);
            }
            Ok(())
        }
        ["seed", names @ ..] => seed(names),
        ["replay", name, files @ ..] => replay(name, files),
        ["run", rest @ ..] => run(rest),
        _ => Err("usage: caravan-fuzz list | run [--secs N] [--runs N] [--seed S] [--rss-limit-mb M] [TARGET...] | replay TARGET FILE... | seed [TARGET...]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("caravan-fuzz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn targets(names: &[&str]) -> Result<Vec<&'static Target>, String> {
    if names.is_empty() {
        return Ok(TARGETS.iter().collect());
    }
    names
        .iter()
        .map(|n| caravan_fuzz::target(n).ok_or_else(|| format!("no target {n:?}")))
        .collect()
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn crash_dir(target: &str) -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target_dir.join("fuzz-crashes").join(target)
}

fn hash_of(input: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    h.finish()
}

fn name_of(input: &[u8]) -> String {
    format!("{:016x}", hash_of(input))
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    let dir = crash_dir(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("crash-{}", name_of(input)));
    let _ = std::fs::write(&path, input);
    path
}

/// Writes every target's built-in seeds into its corpus directory.
fn seed(names: &[&str]) -> Result<(), String> {
    for t in targets(names)? {
        let dir = corpus_dir(t.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let seeds = (t.seeds)();
        for s in &seeds {
            let path = dir.join(format!("seed-{}", name_of(s)));
            std::fs::write(&path, s).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        println!("{}: {} seeds", t.name, seeds.len());
    }
    Ok(())
}

/// The corpus files of a target (sorted by name), read.
fn load_corpus(target: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    load_corpus_from(&corpus_dir(target), target)
}

/// The files of corpus directory `dir` (sorted by name), read. A missing or empty directory is
/// an error: a run would otherwise mutate the built-in seeds only and pass without saying that
/// the committed corpus (the regressions it holds) was never replayed.
fn load_corpus_from(dir: &Path, target: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{target}: no corpus at {} ({e}); start one with `caravan-fuzz seed {target}`",
            dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let corpus = files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((p.display().to_string(), bytes))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if corpus.is_empty() {
        return Err(format!(
            "{target}: the corpus at {} has no inputs; start one with `caravan-fuzz seed {target}`",
            dir.display()
        ));
    }
    Ok(corpus)
}

fn install_hooks() {
    std::panic::set_hook(Box::new(|info| {
        let mut slot = PANICKED.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            *slot = Some(format!("{}{at}", info.payload_as_str().unwrap_or("panic")));
        }
    }));
    let epoch = Instant::now();
    EPOCH.get_or_init(|| epoch);
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let started = STARTED_MS.load(Ordering::SeqCst);
            if started != 0 && now_ms().saturating_sub(started) > HANG_LIMIT.as_millis() as u64 {
                fail_now(&format!("an input ran over {HANG_LIMIT:?}"));
            }
            // Not on Linux: no /proc, no check (libFuzzer's is Linux-only as well).
            if let Ok(status) = std::fs::read_to_string("/proc/self/status")
                && let Some(what) = rss_over(&status, RSS_LIMIT_NOW.load(Ordering::SeqCst))
            {
                fail_now(&what);
            }
        }
    });
}

/// The resident set size (`VmRSS`) of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = line.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// Why the process fails the RSS check, from its `/proc/self/status` text: `Some` when its
/// `VmRSS` is over `limit` bytes (a status without a readable `VmRSS` passes).
fn rss_over(status: &str, limit: u64) -> Option<String> {
    let rss = vm_rss(status)?;
    (rss > limit).then(|| {
        format!(
            "the process's RSS of {} MiB is over the limit of {} MiB",
            rss >> 20,
            limit >> 20
        )
    })
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH
        .get()
        .map_or(0, |e| e.elapsed().as_millis() as u64)
        .max(1)
}

/// Runs one input; the panic message if it failed (on this thread or any other).
fn run_one(target: &Target, input: &[u8]) -> Option<String> {
    if let Ok(mut t) = CURRENT_TARGET.lock() {
        *t = target.name;
    }
    CURRENT.store(input.as_ptr().cast_mut(), Ordering::SeqCst);
    CURRENT_LEN.store(input.len(), Ordering::SeqCst);
    STARTED_MS.store(now_ms(), Ordering::SeqCst);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    STARTED_MS.store(0, Ordering::SeqCst);
    CURRENT.store(std::ptr::null_mut(), Ordering::SeqCst);
    let message = PANICKED.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (result, message) {
        (Ok(()), None) => None,
        (_, Some(m)) => Some(m),
        (Err(_), None) => Some("panic".into()),
    }
}

fn replay(name: &str, files: &[&str]) -> Result<(), String> {
    let t = targets(&[name])?[0];
    install_hooks();
    let mut failed = 0;
    for f in files {
        let input = std::fs::read(f).map_err(|e| format!("{f}: {e}"))?;
        let started = Instant::now();
        match run_one(t, &input) {
            None => println!("{f}: ok in {:.3} s", started.elapsed().as_secs_f64()),
            Some(m) => {
                failed += 1;
                println!("{f}: FAILED: {m}");
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} of {} inputs failed", files.len()))
    }
}

/// xorshift64*: fast, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u8; 10] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"', b'{', b'\n'];

/// A random byte, three times in four a printable ASCII one (or a newline): most targets read
/// text, and a byte over 0x7f usually makes it invalid UTF-8, which they refuse at once.
fn random_byte(rng: &mut Rng) -> u8 {
    const TEXT: &[u8] = b" \n!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";
    match rng.below(4) {
        0 => rng.next() as u8,
        _ => TEXT[rng.below(TEXT.len())],
    }
}

/// One to four stacked mutations of `input`, `other` giving splices their material.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    random_byte(rng)
                };
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| random_byte(rng)).collect();
                out.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                out.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = out[at..at + n].to_vec();
                let to = rng.below(len + 1);
                out.splice(to..to, chunk);
            }
            5 if !other.is_empty() => {
                // Cross-over: a chunk of another input inserted or written over.
                let at = rng.below(other.len());
                let n = 1 + rng.below((other.len() - at).min(256));
                let chunk = &other[at..at + n];
                let to = rng.below(len + 1);
                if rng.below(2) == 0 {
                    out.splice(to..to, chunk.iter().copied());
                } else {
                    let end = (to + n).min(len);
                    out.splice(to..end, chunk.iter().copied());
                }
            }
            6 if !other.is_empty() => {
                // Splice: this input's head, the other's tail.
                let head = rng.below(len + 1);
                let tail = rng.below(other.len());
                out.truncate(head);
                out.extend_from_slice(&other[tail..]);
            }
            7 if len > 0 => {
                // A byte range bumped, for numbers and lengths.
                let i = rng.below(len);
                out[i] = out[i].wrapping_add(if rng.below(2) == 0 { 1 } else { 255 });
            }
            _ => out.push(random_byte(rng)),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// Keeps a mutated input in the pool for further mutation: the first `corpus_len` inputs (the
/// corpus and the seeds) stay; mutated ones fill the pool up to [`POOL_MAX`] (or one past the
/// corpus, when the corpus alone fills it), then replace a random mutated one.
fn keep(pool: &mut Vec<Vec<u8>>, corpus_len: usize, input: Vec<u8>, rng: &mut Rng) {
    let cap = POOL_MAX.max(corpus_len + 1);
    if pool.len() < cap {
        pool.push(input);
    } else {
        let i = corpus_len + rng.below(cap - corpus_len);
        pool[i] = input;
    }
}

fn run(rest: &[&str]) -> Result<(), String> {
    let mut secs = 2.0f64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut runs = u64::MAX;
    let mut names = Vec::new();
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        match *w {
            "--secs" => {
                secs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--secs takes a number")?;
            }
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--runs takes a number")?;
            }
            "--seed" => {
                seed = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seed takes a number")?;
            }
            "--rss-limit-mb" => {
                let mb: u64 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--rss-limit-mb takes a number")?;
                RSS_LIMIT_NOW.store(mb.saturating_mul(1 << 20), Ordering::SeqCst);
            }
            name => names.push(name),
        }
    }
    let chosen = targets(&names)?;
    // Every corpus first: a missing one fails the run before any target has used its time.
    let corpora = chosen
        .iter()
        .map(|t| load_corpus(t.name))
        .collect::<Result<Vec<_>, String>>()?;
    install_hooks();
    println!("caravan-fuzz: stable engine, seed {seed}, {secs} s per target");
    let mut failures = Vec::new();
    for (t, corpus) in chosen.into_iter().zip(corpora) {
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let started = Instant::now();
        let mut failed = false;
        for (path, input) in &corpus {
            if let Some(m) = run_one(t, input) {
                failures.push(format!("{}: corpus input {path}: {m}", t.name));
                failed = true;
                break;
            }
        }
        let replayed = started.elapsed();
        pool.extend(corpus.into_iter().map(|(_, b)| b));
        pool.extend((t.seeds)());
        pool.sort();
        pool.dedup();
        if pool.is_empty() {
            pool.push(Vec::new());
        }
        let corpus_len = pool.len();
        // xorshift must not start at 0.
        let mut rng = Rng((seed ^ hash_of(t.name.as_bytes())) | 1);
        let mutating = Instant::now();
        let deadline = mutating + Duration::from_secs_f64(secs);
        let mut execs: u64 = 0;
        while !failed && execs < runs && Instant::now() < deadline {
            let a = rng.below(pool.len());
            let b = rng.below(pool.len());
            let input = mutate(&mut rng, &pool[a], &pool[b]);
            execs += 1;
            if let Some(m) = run_one(t, &input) {
                let path = save_crash(t.name, &input);
                failures.push(format!(
                    "{}: {m}\n  input saved as {}\n  reproduce: cargo run -p caravan-fuzz -- replay {} {}",
                    t.name,
                    path.display(),
                    t.name,
                    path.display()
                ));
                failed = true;
            } else if rng.below(64) == 0 {
                keep(&mut pool, corpus_len, input, &mut rng);
            }
        }
        println!(
            "{:12} corpus {:4} replayed in {:6.2} s, then {:8} mutated inputs in {:5.1} s{}",
            t.name,
            corpus_len,
            replayed.as_secs_f64(),
            execs,
            mutating.elapsed().as_secs_f64(),
            if failed { "  FAILED" } else { "" }
        );
        // For `cargo xtask fuzz`'s summary (executions are the mutated inputs, the corpus aside).
        println!(
            "{STAT} {} {execs} {:.3} {}",
            t.name,
            mutating.elapsed().as_secs_f64(),
            if failed { "failed" } else { "ok" }
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} target(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty scratch directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("caravan-fuzz-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_missing_or_empty_corpus_is_an_error_naming_its_path() {
        // (setup, Ok(number of inputs) or Err(words the message must hold))
        let check = |name: &str, setup: &dyn Fn(&Path), want: Result<usize, &[&str]>| {
            let dir = scratch(name);
            setup(&dir);
            let got = load_corpus_from(&dir, "duration");
            let _ = std::fs::remove_dir_all(&dir);
            match (got, want) {
                (Ok(corpus), Ok(n)) => assert_eq!(corpus.len(), n, "{name}"),
                (Err(e), Err(words)) => {
                    assert!(e.contains(&dir.display().to_string()), "{name}: {e}");
                    for w in words {
                        assert!(e.contains(w), "{name}: {e:?} lacks {w:?}");
                    }
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        };
        check("missing", &|_| {}, Err(&["no corpus at", "seed duration"]));
        check(
            "empty",
            &|d| std::fs::create_dir_all(d).unwrap(),
            Err(&["has no inputs", "seed duration"]),
        );
        check(
            "subdirectory-only",
            &|d| std::fs::create_dir_all(d.join("sub")).unwrap(),
            Err(&["has no inputs"]),
        );
        check(
            "two-inputs",
            &|d| {
                std::fs::create_dir_all(d).unwrap();
                std::fs::write(d.join("a"), b"1s").unwrap();
                std::fs::write(d.join("b"), b"").unwrap();
            },
            Ok(2),
        );
    }

    #[test]
    fn every_committed_corpus_loads() {
        for t in caravan_fuzz::TARGETS {
            let corpus = load_corpus(t.name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!corpus.is_empty(), "{}", t.name);
        }
    }

    #[test]
    fn the_pool_keeps_mutations_whatever_the_corpus_size() {
        // A corpus (with seeds) under, at and over POOL_MAX: keeping many mutated inputs never
        // indexes out of the pool, never replaces a corpus input, and bounds the pool.
        for corpus_len in [1, 10, POOL_MAX - 1, POOL_MAX, POOL_MAX + 1, POOL_MAX + 500] {
            let corpus: Vec<Vec<u8>> = (0..corpus_len)
                .map(|i| format!("corpus {i}").into_bytes())
                .collect();
            let mut pool = corpus.clone();
            let mut rng = Rng(18);
            for i in 0..(POOL_MAX + 2_000) {
                keep(
                    &mut pool,
                    corpus_len,
                    format!("mutated {i}").into_bytes(),
                    &mut rng,
                );
            }
            assert_eq!(&pool[..corpus_len], &corpus[..], "corpus of {corpus_len}");
            assert_eq!(
                pool.len(),
                POOL_MAX.max(corpus_len + 1),
                "corpus of {corpus_len}"
            );
            assert!(
                pool[corpus_len..].iter().all(|p| p.starts_with(b"mutated")),
                "corpus of {corpus_len}"
            );
        }
    }

    #[test]
    fn the_rss_check_reads_vmrss_and_fails_over_the_limit() {
        const MIB: u64 = 1 << 20;
        let status = |rss: &str| {
            format!("Name:\tcaravan-fuzz\nVmPeak:\t 9999999 kB\nVmRSS:\t{rss}\nThreads:\t3\n")
        };
        // (status text, limit, Some(words of the failure) or None when it passes)
        let rows: &[(String, u64, Option<&str>)] = &[
            (status("  1024 kB"), MIB, None), // exactly at the limit
            (
                status("  1025 kB"),
                MIB,
                Some("RSS of 1 MiB is over the limit of 1 MiB"),
            ),
            (status(" 2097152 kB"), RSS_LIMIT, None),
            (
                status(" 2097153 kB"),
                RSS_LIMIT,
                Some("over the limit of 2048 MiB"),
            ),
            (status(" 3145728 kB"), RSS_LIMIT, Some("RSS of 3072 MiB")),
            (status("  512 kB"), RSS_LIMIT, None),
            // Unreadable or absent: no verdict (VmPeak is not VmRSS).
            (status("  lots kB"), 0, None),
            (status("  1024 MB"), 0, None),
            (status(""), 0, None),
            ("Name:\tx\nVmPeak:\t 9999999 kB\n".to_string(), 0, None),
            (String::new(), 0, None),
        ];
        for (text, limit, want) in rows {
            let got = rss_over(text, *limit);
            match (&got, want) {
                (None, None) => {}
                (Some(m), Some(words)) => assert!(m.contains(words), "{text:?}: {m}"),
                _ => panic!("{text:?} at {limit}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(vm_rss(&status(" 7 kB")), Some(7 * 1024));
        // This process's own status has a VmRSS line (the check is live on Linux).
        if let Ok(own) = std::fs::read_to_string("/proc/self/status") {
            assert!(vm_rss(&own).is_some_and(|b| b > 0), "{own}");
        }
    }
}
