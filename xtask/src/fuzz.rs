//! `cargo xtask fuzz [--secs N] [--runs N] [--seed S] [--stable] [--merge] [TARGET...]`: every fuzz target
//! of `fuzz/` (or the ones named), each for N seconds (default 60) or N executions, whichever
//! comes first. With a nightly toolchain and `cargo-fuzz` installed it runs libFuzzer
//! (`cargo +nightly fuzz run`, RSS limit 2 GiB, inputs up to 64 KiB, new inputs kept in
//! `target/fuzz-corpus/<target>` and the committed `fuzz/corpus/<target>` read as well);
//! otherwise, or with `--stable`, the crate's stable engine (corpus replay, then mutations).
//! `--merge` (libFuzzer) adds to the committed corpus a small set of the inputs of
//! `target/fuzz-corpus` that reaches new edges. Crashes are saved under `target/fuzz-crashes/<target>/`.
//!
//! `cargo xtask ci` runs the stable engine for [`CI_SECS`] per target: the whole corpus
//! replayed (a regression that panics on it fails CI) and a few seconds of mutations.
//! `ci --long` runs [`LONG_RUNS`] executions per target with the best engine available.

use std::process::Command;

use crate::{root, run, target_dir};

/// Seconds of mutations per target in `cargo xtask ci` (after the corpus replay).
pub const CI_SECS: u32 = 3;
/// The stable engine's seed in `cargo xtask ci`.
pub const CI_SEED: u64 = 18;
/// Executions per target in `cargo xtask ci --long`.
pub const LONG_RUNS: u64 = 1_000_000;
/// The time cap per target in `ci --long` (a slow target stops here short of its runs).
pub const LONG_SECS: u32 = 3_600;

/// Which engine runs the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    LibFuzzer,
    Stable,
}

struct Options {
    secs: u32,
    /// The stable engine's random seed (default: from the clock).
    seed: Option<u64>,
    runs: Option<u64>,
    stable: bool,
    merge: bool,
    targets: Vec<String>,
}

/// `cargo xtask fuzz …`.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut o = Options {
        secs: 60,
        seed: None,
        runs: None,
        stable: false,
        merge: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => o.secs = number(it.next(), "--secs")?,
            "--runs" => o.runs = Some(number(it.next(), "--runs")?),
            "--seed" => o.seed = Some(number(it.next(), "--seed")?),
            "--stable" => o.stable = true,
            "--merge" => o.merge = true,
            t if !t.starts_with('-') => o.targets.push(t.to_string()),
            other => return Err(format!("fuzz: unknown option {other}")),
        }
    }
    run_all(&o)
}

/// The short form `cargo xtask ci` runs: the stable engine, [`CI_SECS`] per target, with a
/// fixed seed, so a failure is the same mutations again when rerun.
pub fn ci_short() -> Result<(), String> {
    run_all(&Options {
        secs: CI_SECS,
        seed: Some(CI_SEED),
        runs: None,
        stable: true,
        merge: false,
        targets: Vec::new(),
    })
}

/// The long form `cargo xtask ci --long` runs: [`LONG_RUNS`] executions per target.
pub fn ci_long() -> Result<(), String> {
    run_all(&Options {
        secs: LONG_SECS,
        seed: None,
        runs: Some(LONG_RUNS),
        stable: false,
        merge: false,
        targets: Vec::new(),
    })
}

fn number<T: std::str::FromStr>(v: Option<&String>, flag: &str) -> Result<T, String> {
    v.and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{flag} takes a number"))
}

/// Whether `cargo +nightly fuzz` can run here.
fn has_libfuzzer() -> bool {
    let ok = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok(&["+nightly", "--version"]) && ok(&["+nightly", "fuzz", "--version"])
}

fn run_all(o: &Options) -> Result<(), String> {
    let engine = if !o.stable && has_libfuzzer() {
        Engine::LibFuzzer
    } else {
        Engine::Stable
    };
    if o.merge && engine != Engine::LibFuzzer {
        return Err("fuzz --merge needs libFuzzer (a nightly toolchain and cargo-fuzz)".into());
    }
    eprintln!("xtask fuzz: engine {engine:?}");
    match engine {
        Engine::Stable => stable(o),
        Engine::LibFuzzer => libfuzzer(o),
    }
}

fn stable(o: &Options) -> Result<(), String> {
    let secs = o.secs.to_string();
    let mut args = vec![
        "run",
        "-q",
        "-p",
        "caravan-fuzz",
        "--",
        "run",
        "--secs",
        &secs,
    ];
    let runs = o.runs.map(|r| r.to_string());
    if let Some(r) = &runs {
        args.extend(["--runs", r.as_str()]);
    }
    let seed = o.seed.map(|s| s.to_string());
    if let Some(s) = &seed {
        args.extend(["--seed", s.as_str()]);
    }
    args.extend(o.targets.iter().map(String::as_str));
    run("cargo", &args)
}

/// The targets' names, from the crate itself.
fn target_names(o: &Options) -> Result<Vec<String>, String> {
    if !o.targets.is_empty() {
        return Ok(o.targets.clone());
    }
    let out = Command::new("cargo")
        .args([
            "run",
            "-q",
            "-p",
            "caravan-fuzz",
            "--bin",
            "caravan-fuzz",
            "--",
            "list",
        ])
        .current_dir(root())
        .output()
        .map_err(|e| format!("caravan-fuzz list: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "caravan-fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// `cargo fuzz` flags: optimized, with debug assertions and overflow checks (openraft's
/// `debug_assert!`s are invariants worth failing on), no sanitizer (the code is safe Rust;
/// ASan would halve the executions), and the `libfuzzer` feature the binaries need.
const BUILD_FLAGS: [&str; 6] = ["-O", "-a", "-s", "none", "--features", "libfuzzer"];

fn libfuzzer(o: &Options) -> Result<(), String> {
    let names = target_names(o)?;
    let mut summary = Vec::new();
    let mut failed = Vec::new();
    for name in &names {
        let scratch = target_dir().join("fuzz-corpus").join(name);
        let crashes = target_dir().join("fuzz-crashes").join(name);
        let committed = root().join("fuzz").join("corpus").join(name);
        for dir in [&scratch, &crashes, &committed] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let (scratch_s, committed_s) = (scratch.to_string_lossy(), committed.to_string_lossy());
        let mut args: Vec<String> = ["+nightly", "fuzz", "run"]
            .iter()
            .chain(BUILD_FLAGS.iter())
            .map(|s| s.to_string())
            .collect();
        args.push(name.clone());
        if o.merge {
            // Into the committed corpus: a small set of inputs that reaches the edges the scratch
            // corpus reaches (edges only, not hit counts, so it stays small).
            args.extend([committed_s.to_string(), scratch_s.to_string()]);
            args.extend([
                "--".into(),
                "-merge=1".into(),
                "-set_cover_merge=1".into(),
                "-use_counters=0".into(),
            ]);
        } else {
            args.extend([scratch_s.to_string(), committed_s.to_string()]);
            args.extend([
                "--".into(),
                format!("-max_total_time={}", o.secs),
                "-rss_limit_mb=2048".into(),
                "-max_len=65536".into(),
                "-timeout=60".into(),
                "-print_final_stats=1".into(),
                format!("-artifact_prefix={}/", crashes.display()),
            ]);
            if let Some(r) = o.runs {
                args.push(format!("-runs={r}"));
            }
        }
        eprintln!("$ cargo {}", args.join(" "));
        // libFuzzer reports on stderr: echoed as it comes, kept for the final stats.
        let mut child = Command::new("cargo")
            .args(&args)
            .current_dir(root())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cargo fuzz: {e}"))?;
        let mut stderr = String::new();
        if let Some(pipe) = child.stderr.take() {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                stderr.push_str(&line);
                stderr.push('\n');
            }
        }
        let status = child.wait().map_err(|e| format!("cargo fuzz: {e}"))?;
        let stat = |key: &str| {
            stderr
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| "?".into())
        };
        let execs = stat("stat::number_of_executed_units:");
        let rate = stat("stat::average_exec_per_sec:");
        let rss = stat("stat::peak_rss_mb:");
        if status.success() {
            summary.push(format!(
                "{name:12} {execs:>10} executions  {rate:>6}/s  peak RSS {rss} MB"
            ));
        } else {
            summary.push(format!("{name:12} FAILED after {execs} executions"));
            failed.push(name.clone());
        }
    }
    eprintln!("xtask fuzz (libFuzzer):\n  {}", summary.join("\n  "));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz targets failed: {} (inputs under {})",
            failed.join(", "),
            target_dir().join("fuzz-crashes").display()
        ))
    }
}
