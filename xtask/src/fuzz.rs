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
//! `ci --long` runs [`LONG_RUNS`] executions per target with the best engine available, and
//! fails when a target stops at its time cap ([`LONG_SECS`]) short of them. Every run ends with
//! one table: each target's executions, seconds and executions per second.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::{root, target_dir};

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
    /// Fail when a target stops short of `runs` (its time cap reached first): `ci --long`.
    require_runs: bool,
    targets: Vec<String>,
}

/// What one target's run did, from the engine's report.
#[derive(Debug, Clone, PartialEq)]
struct TargetRun {
    name: String,
    /// Executions (the stable engine: mutated inputs; libFuzzer: every unit, corpus included).
    execs: Option<u64>,
    /// Seconds they took.
    secs: Option<f64>,
    failed: bool,
}

/// `cargo xtask fuzz …`.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let mut o = Options {
        secs: 60,
        seed: None,
        runs: None,
        stable: false,
        merge: false,
        require_runs: false,
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
        require_runs: false,
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
        require_runs: true,
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
    let (runs, result) = match engine {
        Engine::Stable => stable(o),
        Engine::LibFuzzer => libfuzzer(o),
    };
    if o.merge {
        return result; // no executions to report
    }
    let expected = if o.targets.is_empty() {
        target_names(o).unwrap_or_default()
    } else {
        o.targets.clone()
    };
    let (table, missed) = summary(engine, &runs, &expected, o.runs);
    eprintln!("{table}");
    for m in &missed {
        eprintln!("MISSED: {m}");
    }
    result?;
    if o.require_runs && !missed.is_empty() {
        return Err(format!(
            "fuzz: {} target(s) stopped short of {} executions:\n  {}",
            missed.len(),
            o.runs.unwrap_or(0),
            missed.join("\n  ")
        ));
    }
    Ok(())
}

/// The closing table of a run (one row per target: executions, seconds, executions per
/// second) and the targets that did not reach `runs` executions (`target X ran N of M`): every
/// one of `expected` without figures (the engine stopped before it) and, when `runs` is given,
/// every one that stopped short of it without failing (its time cap came first).
fn summary(
    engine: Engine,
    runs: &[TargetRun],
    expected: &[String],
    wanted: Option<u64>,
) -> (String, Vec<String>) {
    let mut table = format!(
        "xtask fuzz ({engine:?}): {:12} {:>12} {:>9} {:>9}",
        "target", "executions", "seconds", "exec/s"
    );
    let mut missed = Vec::new();
    let mut names: Vec<&str> = expected.iter().map(String::as_str).collect();
    for r in runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    for name in names {
        let run = runs.iter().find(|r| r.name == name);
        let (execs, secs, failed) = match run {
            Some(r) => (r.execs, r.secs, r.failed),
            None => (None, None, false),
        };
        let shown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        let rate = match (execs, secs) {
            (Some(n), Some(s)) if s > 0.0 => Some(format!("{:.0}", n as f64 / s)),
            _ => None,
        };
        let verdict = match (run, failed) {
            (None, _) => "  NOT RUN",
            (_, true) => "  FAILED",
            _ => "",
        };
        table.push_str(&format!(
            "\n  {name:12} {:>12} {:>9} {:>9}{verdict}",
            shown(execs.map(|n| n.to_string())),
            shown(secs.map(|s| format!("{s:.1}"))),
            shown(rate),
        ));
        if let Some(wanted) = wanted
            && !failed
            && execs.is_none_or(|n| n < wanted)
        {
            missed.push(format!(
                "target {name} ran {} of {wanted}",
                execs.map_or_else(|| "?".to_string(), |n| n.to_string())
            ));
        }
    }
    (table, missed)
}

/// The per-target figures the stable engine prints (`caravan-fuzz-stat TARGET EXECS SECS
/// ok|failed`, see `fuzz/src/main.rs`).
fn stable_stat(line: &str) -> Option<TargetRun> {
    let mut words = line.strip_prefix("caravan-fuzz-stat ")?.split_whitespace();
    let name = words.next()?.to_string();
    let execs = words.next()?.parse().ok()?;
    let secs = words.next()?.parse().ok()?;
    let failed = match words.next()? {
        "ok" => false,
        "failed" => true,
        _ => return None,
    };
    Some(TargetRun {
        name,
        execs: Some(execs),
        secs: Some(secs),
        failed,
    })
}

/// A libFuzzer run's figures from its stderr: `stat::number_of_executed_units` and the
/// `Done N runs in S second(s)` line (absent when it crashed).
fn libfuzzer_stat(name: &str, stderr: &str, failed: bool) -> TargetRun {
    let execs = stderr.lines().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    let secs = stderr.lines().find_map(|l| {
        let rest = l.split_once("Done ")?.1;
        let (_, after) = rest.split_once(" runs in ")?;
        after.split_whitespace().next()?.parse().ok()
    });
    TargetRun {
        name: name.to_string(),
        execs,
        secs,
        failed,
    }
}

fn stable(o: &Options) -> (Vec<TargetRun>, Result<(), String>) {
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
    eprintln!("$ cargo {}", args.join(" "));
    // The engine reports on stdout: echoed as it comes, its per-target figures kept.
    let mut child = match Command::new("cargo")
        .args(&args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return (Vec::new(), Err(format!("cargo: {e}"))),
    };
    let mut runs = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            match stable_stat(&line) {
                Some(r) => runs.push(r),
                None => println!("{line}"),
            }
        }
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`cargo {}` failed: {status}", args.join(" "))),
        Err(e) => Err(format!("cargo: {e}")),
    };
    (runs, result)
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

fn libfuzzer(o: &Options) -> (Vec<TargetRun>, Result<(), String>) {
    let mut runs = Vec::new();
    let result = libfuzzer_runs(o, &mut runs);
    (runs, result)
}

fn libfuzzer_runs(o: &Options, runs: &mut Vec<TargetRun>) -> Result<(), String> {
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
        if !o.merge {
            runs.push(libfuzzer_stat(name, &stderr, !status.success()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(name: &str, execs: Option<u64>, secs: Option<f64>, failed: bool) -> TargetRun {
        TargetRun {
            name: name.into(),
            execs,
            secs,
            failed,
        }
    }

    #[test]
    fn reads_the_engines_figures() {
        for (line, want) in [
            (
                "caravan-fuzz-stat gossip 1000000 812.250 ok",
                Some(ran("gossip", Some(1_000_000), Some(812.25), false)),
            ),
            (
                "caravan-fuzz-stat raft 17 0.500 failed",
                Some(ran("raft", Some(17), Some(0.5), true)),
            ),
            ("caravan-fuzz-stat raft 17 0.500 maybe", None),
            ("caravan-fuzz-stat raft lots 0.5 ok", None),
            (
                "gossip       corpus  199 replayed in 0.2 s, then 5 mutated",
                None,
            ),
        ] {
            assert_eq!(stable_stat(line), want, "{line}");
        }
        let stderr = "#1000000\tDONE   cov: 1 ft: 2 corp: 3/4b\nDone 1000000 runs in 558 second(s)\n\
                      stat::number_of_executed_units: 1000000\nstat::average_exec_per_sec:     1792\n";
        assert_eq!(
            libfuzzer_stat("rpc", stderr, false),
            ran("rpc", Some(1_000_000), Some(558.0), false)
        );
        assert_eq!(
            libfuzzer_stat("rpc", "==1== ERROR: libFuzzer: deadly signal\n", true),
            ran("rpc", None, None, true)
        );
    }

    #[test]
    fn a_target_short_of_its_runs_is_missed_and_every_target_is_tabled() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (figures, expected targets, wanted runs, the missed lines)
        let check = |runs: &[TargetRun], expected: &[&str], wanted, want: &[&str]| {
            let (table, missed) = summary(Engine::Stable, runs, &names(expected), wanted);
            assert_eq!(missed, names(want), "{table}");
            for name in expected {
                assert!(table.contains(name), "{name} not in\n{table}");
            }
            table
        };
        let done = ran("duration", Some(1_000_000), Some(100.0), false);
        let short = ran("raft", Some(912_345), Some(3600.0), false);
        let crashed = ran("gossip", Some(10), Some(1.0), true);
        let table = check(
            std::slice::from_ref(&done),
            &["duration"],
            Some(1_000_000),
            &[],
        );
        assert!(
            table.contains("1000000") && table.contains("10000"),
            "{table}"
        );
        check(
            &[done.clone(), short.clone()],
            &["duration", "raft"],
            Some(1_000_000),
            &["target raft ran 912345 of 1000000"],
        );
        // A crash fails the run by itself; a target the engine never reached is missed.
        let table = check(
            &[crashed, done.clone()],
            &["gossip", "duration", "cluster"],
            Some(1_000_000),
            &["target cluster ran ? of 1000000"],
        );
        assert!(
            table.contains("FAILED") && table.contains("NOT RUN"),
            "{table}"
        );
        // Without a number of runs (a timed run) nothing is missed.
        check(&[short], &["raft"], None, &[]);
    }
}
