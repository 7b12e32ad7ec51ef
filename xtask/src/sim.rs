//! `cargo xtask sim --members N --loss P --seed S`: the gossip simulator's figures, from a release
//! build; `--plot DIR` adds SVG charts of a timeline, `--sweep members=…|loss=…` charts detection
//! and convergence against the swept value ([`crate::plot`]).

use std::process::Command;
use std::time::{Duration, Instant};

use caravan_gossip::sim::{Bootstrap, Plan, SimConfig, measure_with, slow_member};

use crate::{run, target_dir};

/// Builds release xtask and hands over to `xtask sim-run` with the same arguments.
///
/// The run's heap is backed by transparent huge pages where the kernel offers them on request
/// (mimalloc's `MIMALLOC_ALLOW_LARGE_OS_PAGES=1`; unless it is set already): a large pool's
/// simulation is a random walk over gigabytes of member tables, and with 4 KiB pages nearly every
/// look-up also missed the TLB (with glibc's malloc, a 3,000-member join storm took 56 s of wall
/// time instead of 69 s; mimalloc, which xtask runs on, gained 2 % at 4,000 members).
pub fn sim(args: &[String]) -> Result<(), String> {
    run("cargo", &["build", "--release", "-p", "xtask"])?;
    let xtask = target_dir().join("release").join("xtask");
    let mut command = Command::new(&xtask);
    if std::env::var_os("MIMALLOC_ALLOW_LARGE_OS_PAGES").is_none() {
        command.env("MIMALLOC_ALLOW_LARGE_OS_PAGES", "1");
    }
    let status = command
        .arg("sim-run")
        .args(args)
        .status()
        .map_err(|e| format!("{}: {e}", xtask.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sim-run failed: {status}"))
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("{name}: bad value")),
    }
}

/// `xtask sim-run --slow-member`: a seeded pool where one member's packets arrive
/// `--slow-delay-ms` (2,000) late for `--slow-minutes` (10) of simulated time, with and without
/// Lifeguard; prints the `failed` marks of healthy members. Fails when Lifeguard lets a healthy
/// member be marked `failed`.
fn slow_run(args: &[String], members: usize, loss: f64, seed: u64) -> Result<(), String> {
    let delay = Duration::from_millis(flag(args, "--slow-delay-ms", 2000)?);
    let run = Duration::from_secs(60 * flag::<u64>(args, "--slow-minutes", 10)?);
    let mut with_lifeguard = None;
    for lifeguard in [false, true] {
        let started = Instant::now();
        let mut cfg = SimConfig::new(members, seed);
        cfg.loss = loss;
        cfg.lifeguard = lifeguard;
        let r = slow_member(cfg, delay, run);
        println!(
            "slow member ({} ms late) · members {} · loss {:.1} % · seed {seed} · {} s · Lifeguard {}: healthy members marked failed {} times ({} distinct members), the slow one {} times, its highest health score {}   (wall {:.1} s)",
            r.delay.as_millis(),
            r.members,
            loss * 100.0,
            r.run.as_secs(),
            if r.lifeguard { "on " } else { "off" },
            r.healthy_failed,
            r.healthy_members_failed,
            r.slow_failed,
            r.slow_max_health,
            started.elapsed().as_secs_f64()
        );
        if lifeguard {
            with_lifeguard = Some(r.healthy_failed);
        }
    }
    match with_lifeguard {
        Some(0) => Ok(()),
        other => Err(format!(
            "with Lifeguard, healthy members were marked failed {other:?} times (target 0)"
        )),
    }
}

/// This process's resident memory in MB (Linux `/proc/self/statm`; 0 elsewhere).
fn resident_mb() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (pages * 4096) >> 20
}

/// `xtask sim-run`: one measurement, printed.
pub fn sim_run(args: &[String]) -> Result<(), String> {
    let members: usize = flag(args, "--members", 1000)?;
    let loss: f64 = flag(args, "--loss", 0.05)?;
    let seed: u64 = flag(args, "--seed", 1)?;
    let window: u64 = flag(args, "--window", 20)?;
    let converge: u64 = flag(args, "--converge-limit", 0)?;
    let bootstrap = match flag(args, "--bootstrap", String::from("auto"))?.as_str() {
        "auto" => Bootstrap::for_members(members),
        // One join every 20 ms up to 2,000 members (the 1,000-member figures' pace); above
        // that the whole fleet joins within 40 s, as a fleet started together does (at 20 ms,
        // 10,000 joins take 200 s, and every node's packets are full of updates all along).
        "join" => Bootstrap::Join {
            pace: Duration::from_millis(flag(
                args,
                "--join-pace-ms",
                if members <= 2000 {
                    20
                } else {
                    (40_000 / members as u64).max(1)
                },
            )?),
        },
        "seed" => Bootstrap::Seeded {
            settle: Duration::from_secs(10),
        },
        other => return Err(format!("--bootstrap {other}: expected auto, join or seed")),
    };
    if !(0.0..1.0).contains(&loss) {
        return Err("--loss must be in [0, 1)".into());
    }
    if members < 3 {
        return Err("--members must be at least 3".into());
    }
    if args.iter().any(|a| a == "--slow-member") {
        return slow_run(args, members, loss, seed);
    }
    let plot_dir = flag(args, "--plot", String::new())?;
    let sweep = flag(args, "--sweep", String::new())?;
    if !sweep.is_empty() {
        let dir = if plot_dir.is_empty() {
            target_dir().join("sim-plots")
        } else {
            plot_dir.into()
        };
        let path = crate::plot::plot_sweep(
            &dir,
            &sweep,
            members,
            loss,
            seed,
            Duration::from_secs(window),
        )?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    let mut cfg = SimConfig::new(members, seed);
    cfg.loss = loss;
    // Tags on at every size unless --no-tags: they are part of what a member costs. Each node
    // holds every member's (N² in all), as one pointer into the process's shared copies, and a
    // joiner gets them with its member list.
    cfg.tags = !args.iter().any(|a| a == "--no-tags");
    cfg.threads = flag(args, "--threads", cfg.threads)?.max(1);
    let started = Instant::now();
    let converge_limit = (converge > 0).then(|| Duration::from_secs(converge));
    let plan = Plan {
        bootstrap,
        window: Duration::from_secs(window),
        limit: Duration::from_secs(180),
        converge_limit,
    };
    let tags = cfg.tags;
    let r = measure_with(cfg, plan, |phase, virtual_time| {
        eprintln!(
            "[{:.0} s wall, {} MB resident] {phase} ({:.0} s virtual)",
            started.elapsed().as_secs_f64(),
            resident_mb(),
            virtual_time.as_secs_f64()
        )
    });
    let fmt = |d: Option<Duration>, limit: Duration| {
        d.map_or(format!("not within {} s", limit.as_secs()), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    println!(
        "members {} · loss {:.1} % · seed {seed} · {} · timers jittered at boot (first tick at a random part of each interval)",
        r.members,
        loss * 100.0,
        if tags {
            "tags on (two per member)"
        } else {
            "tags off (--no-tags)"
        },
    );
    match bootstrap {
        Bootstrap::Join { pace } => {
            println!(
                "initial convergence:        {}   (joins through one seed, one every {} ms; {} member-pairs still missing)",
                fmt(r.converge, plan.converge_bound(r.members)),
                pace.as_millis(),
                r.missing_at_start
            );
            println!(
                "  of which after last join: {}   (target ≤ 30 s at N=1000, 5 % loss)",
                fmt(r.converge_after_last_join, plan.converge_bound(r.members))
            );
        }
        Bootstrap::Seeded { settle } => println!(
            "initial convergence:        seeded (every node starts knowing every other), then {} s of gossip; {} member-pairs missing",
            settle.as_secs(),
            r.missing_at_start
        ),
    }
    println!(
        "settled after:              {}   (every node has piggybacked the forming's last membership update, then one tags interval; the traffic windows start then)",
        fmt(r.settle, caravan_gossip::sync_interval(r.members as u32))
    );
    println!(
        "join known by all:          {}   (target ≤ 2 s at N=1000, 5 % loss)",
        fmt(r.join_known_by_all, plan.limit)
    );
    println!(
        "crash known by all:         {}   (target ≤ 8 s)",
        fmt(r.crash_known_by_all, plan.limit)
    );
    println!(
        "false-positive failed:      {}   (target 0)",
        r.false_failures
    );
    let sync = caravan_gossip::sync_interval(r.members as u32);
    let line = |label: &str, w: &caravan_gossip::sim::WindowTraffic, what: &str| {
        println!(
            "{label}{:.0} B/s, {:.1} packets/s over {} s {what}   (target ≤ 1024 B/s)",
            w.bytes_per_member_sec,
            w.packets_per_member_sec,
            w.window.as_secs()
        );
        println!(
            "                              of which anti-entropy {:.0} B/s ({:.2} rounds per member in the window), direct tags pushes/pulls {:.0} B/s, SWIM with its piggybacked updates and tags re-broadcasts {:.0} B/s",
            w.sync_bytes_per_member_sec,
            w.sync_rounds_per_member,
            w.tags_bytes_per_member_sec,
            w.bytes_per_member_sec - w.sync_bytes_per_member_sec - w.tags_bytes_per_member_sec
        );
    };
    println!(
        "traffic windows:             both start once the pool has formed and settled; sent by the {} pool members (the joiner excluded); the anti-entropy (push/pull) interval at this size is {} s",
        r.members - 1,
        sync.as_secs()
    );
    line(
        "traffic per member (short):  ",
        &r.steady,
        "(holds only the push/pull rounds whose jittered tick falls in it)",
    );
    line(
        "traffic per member (round):  ",
        &r.round,
        "= one whole anti-entropy interval (every member's push/pull and tags re-broadcasts included)",
    );
    println!(
        "wall time:                  {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if !plot_dir.is_empty() {
        let plotted = Instant::now();
        for path in crate::plot::plot_timeline(plot_dir.as_ref(), r.members, loss, seed, tags)? {
            println!("wrote {}", path.display());
        }
        println!(
            "plots:                      {:.1} s wall (a seeded pool of the same size, loss and seed: 5 s quiet, a join, a crash 15 s later)",
            plotted.elapsed().as_secs_f64()
        );
    }
    // A figure the run could not produce is an error; a target missed is only printed.
    let mut missing = Vec::new();
    if matches!(bootstrap, Bootstrap::Join { .. }) && r.converge.is_none() {
        missing.push("initial convergence");
    }
    if r.join_known_by_all.is_none() {
        missing.push("join known by all");
    }
    if r.crash_known_by_all.is_none() {
        missing.push("crash known by all");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("figures not produced: {}", missing.join(", ")))
    }
}
