//! `sim --plot DIR` and `sim --sweep KEY=V1,V2,…`: the gossip simulator's results as SVG charts
//! (plotters, SVG backend only).
//!
//! - `--plot DIR` runs one timeline on a seeded pool of the run's size, loss and seed: a quiet
//!   stretch, a join, then a crash, sampled every 100 ms of virtual time, and writes
//!   `knowledge.svg` (fraction of members that know of the join and of the crash, against the
//!   time since each), `false-failed.svg` (healthy members marked `failed`, cumulative, over the
//!   timeline) and `bytes.svg` (bytes sent per member per second, 1 s buckets).
//! - `--sweep members=100,1000` or `--sweep loss=0,0.05,0.1` runs the standard measurement
//!   ([`measure`]) once per value and writes `sweep-<key>.svg`: the time until every member
//!   knows of a crash (detection), of a join, and (pools formed by joins) the initial
//!   convergence from the last join on, against the swept value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use caravan_agent_core::member::MemberStatus;
use caravan_gossip::sim::{Bootstrap, Plan, Sim, SimConfig, measure, sim_name};
use plotters::prelude::*;

/// One line on a chart.
pub struct Series {
    /// Its legend.
    pub name: String,
    /// Its points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// What a chart shows.
pub struct Chart<'a> {
    /// The title.
    pub title: &'a str,
    /// The x axis' description.
    pub x: &'a str,
    /// The y axis' description.
    pub y: &'a str,
    /// Draw a marker at every point (few points: a sweep).
    pub markers: bool,
    /// Where the legend goes (a corner the curves leave empty).
    pub legend: SeriesLabelPosition,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(11, 110, 79),
    RGBColor(180, 35, 24),
    RGBColor(29, 78, 216),
    RGBColor(181, 71, 8),
];

/// Writes one line chart to `path` (SVG).
pub fn line_chart(path: &Path, chart: &Chart<'_>, series: &[Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0_f64);
    for &(x, y) in all() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(format!("{}: nothing to plot", path.display()));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.08 };
    let root = SVGBackend::new(path, (820, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc(chart.x)
        .y_desc(chart.y)
        .light_line_style(RGBColor(236, 238, 242))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        if chart.markers {
            c.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    c.configure_series_labels()
        .position(chart.legend.clone())
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(200, 204, 212))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One timeline's samples.
pub struct Timeline {
    /// (seconds since the join, fraction of the pool that sees the joiner alive).
    pub join: Vec<(f64, f64)>,
    /// (seconds since the crash, fraction of the live pool that sees the victim failed).
    pub crash: Vec<(f64, f64)>,
    /// (seconds since the timeline started, healthy members marked failed so far).
    pub false_failed: Vec<(f64, f64)>,
    /// (seconds since the timeline started, bytes sent per member per second in that second).
    pub bytes: Vec<(f64, f64)>,
    /// When the join and the crash happened (seconds since the start).
    pub join_at: f64,
    /// See `join_at`.
    pub crash_at: f64,
}

/// A seeded pool of `members - 1` that settles 10 s, then 5 s quiet, a join, 15 s later a crash,
/// and 30 s after that (longer while the crash is not yet known everywhere, up to 180 s).
pub fn timeline(members: usize, loss: f64, seed: u64, tags: bool) -> Timeline {
    let mut cfg = SimConfig::new(members, seed);
    cfg.loss = loss;
    cfg.tags = tags;
    let n = cfg.members;
    let joiner = n - 1;
    let victim = 1 + (seed as usize % (joiner - 1));
    let mut sim = Sim::new(cfg);
    sim.seed(0..joiner);
    sim.run_for(Duration::from_secs(10));
    let start = sim.now();
    let secs = |sim: &Sim| (sim.now() - start).as_secs_f64();
    let (join_at, crash_at) = (5.0, 20.0);
    let (joiner_name, victim_name) = (sim_name(joiner), sim_name(victim));
    let mut t = Timeline {
        join: Vec::new(),
        crash: Vec::new(),
        false_failed: Vec::new(),
        bytes: Vec::new(),
        join_at,
        crash_at,
    };
    let step = Duration::from_millis(100);
    let live_bytes = |sim: &Sim| -> (u64, usize) {
        let mut total = 0;
        let mut live = 0;
        for (i, traffic) in sim.traffic().iter().enumerate() {
            if sim.node(i).is_some() {
                total += traffic.bytes;
                live += 1;
            }
        }
        (total, live)
    };
    let (mut last_bytes, _) = live_bytes(&sim);
    let mut joined = false;
    let mut crashed = false;
    let mut crash_known_at = None;
    let mut tick = 0u64;
    loop {
        let now = secs(&sim);
        // Every second: the bytes the live members sent in it, and the false failed marks.
        if tick.is_multiple_of(10) {
            let (bytes, live) = live_bytes(&sim);
            if tick > 0 {
                t.bytes.push((
                    now,
                    bytes.saturating_sub(last_bytes) as f64 / live.max(1) as f64,
                ));
            }
            last_bytes = bytes;
            let healthy_failed = sim.false_failures(start, &[victim]);
            t.false_failed.push((now, healthy_failed as f64));
        }
        if !joined && now >= join_at {
            sim.join(joiner, 0);
            joined = true;
        }
        if !crashed && now >= crash_at {
            sim.crash(victim);
            crashed = true;
            // The victim's bytes leave the sum with it.
            last_bytes = live_bytes(&sim).0;
        }
        if joined {
            let seen = fraction(&sim, joiner, |n| {
                n.status_of(&joiner_name) == Some(MemberStatus::Alive)
            });
            t.join.push((now - join_at, seen));
        }
        if crashed {
            let seen = fraction(&sim, victim, |n| {
                n.status_of(&victim_name) == Some(MemberStatus::Failed)
            });
            t.crash.push((now - crash_at, seen));
            if seen >= 1.0 && crash_known_at.is_none() {
                crash_known_at = Some(now);
            }
        }
        let end = crash_known_at.map_or(crash_at + 30.0, |k| (k + 10.0).max(crash_at + 30.0));
        if now >= end || now >= 180.0 {
            break;
        }
        sim.run_for(step);
        tick += 1;
    }
    t
}

/// The fraction of running nodes other than `subject` for which `sees` holds.
fn fraction(sim: &Sim, subject: usize, sees: impl Fn(&caravan_gossip::Node) -> bool) -> f64 {
    let mut live = 0usize;
    let mut yes = 0usize;
    for i in 0..sim.traffic().len() {
        if i == subject {
            continue;
        }
        if let Some(node) = sim.node(i) {
            live += 1;
            if sees(node) {
                yes += 1;
            }
        }
    }
    if live == 0 {
        0.0
    } else {
        yes as f64 / live as f64
    }
}

/// `--plot DIR`: the timeline's three charts.
pub fn plot_timeline(
    dir: &Path,
    members: usize,
    loss: f64,
    seed: u64,
    tags: bool,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let t = timeline(members, loss, seed, tags);
    let about = format!("{members} members, {:.0} % loss, seed {seed}", loss * 100.0);
    let known = |points: &[(f64, f64)]| {
        points
            .iter()
            .find(|p| p.1 >= 1.0)
            .map_or("not within the run".to_string(), |p| {
                format!("{:.1} s", p.0)
            })
    };
    println!(
        "timeline ({about}, seeded pool): join known by all after {}, crash after {}, {} healthy members marked failed",
        known(&t.join),
        known(&t.crash),
        t.false_failed.last().map_or(0.0, |p| p.1)
    );
    let mut written = Vec::new();
    let path = dir.join("knowledge.svg");
    line_chart(
        &path,
        &Chart {
            title: &format!("Who knows: a join and a crash ({about})"),
            x: "seconds since the event",
            y: "fraction of members",
            markers: false,
            legend: SeriesLabelPosition::LowerRight,
        },
        &[
            Series {
                name: "know the joiner is alive".into(),
                points: t.join,
            },
            Series {
                name: "know the crashed member failed".into(),
                points: t.crash,
            },
        ],
    )?;
    written.push(path);
    let path = dir.join("false-failed.svg");
    line_chart(
        &path,
        &Chart {
            title: &format!(
                "Healthy members marked failed (join at {} s, crash at {} s; {about})",
                t.join_at, t.crash_at
            ),
            x: "seconds",
            y: "false failed marks (cumulative)",
            markers: false,
            legend: SeriesLabelPosition::UpperRight,
        },
        &[Series {
            name: "false failed".into(),
            points: t.false_failed,
        }],
    )?;
    written.push(path);
    let path = dir.join("bytes.svg");
    line_chart(
        &path,
        &Chart {
            title: &format!(
                "Bytes sent per member per second (join at {} s, crash at {} s; {about})",
                t.join_at, t.crash_at
            ),
            x: "seconds",
            y: "bytes / member / s",
            markers: false,
            legend: SeriesLabelPosition::UpperRight,
        },
        &[Series {
            name: "sent".into(),
            points: t.bytes,
        }],
    )?;
    written.push(path);
    Ok(written)
}

/// A swept parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sweep {
    /// Pool size.
    Members,
    /// Packet loss.
    Loss,
}

/// Parses `members=100,1000` or `loss=0,0.05`.
pub fn parse_sweep(spec: &str) -> Result<(Sweep, Vec<f64>), String> {
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| format!("--sweep {spec}: expected members=N,N,… or loss=P,P,…"))?;
    let kind = match key {
        "members" => Sweep::Members,
        "loss" => Sweep::Loss,
        other => return Err(format!("--sweep {other}: expected members or loss")),
    };
    let values = values
        .split(',')
        .map(|v| {
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("--sweep {key}: {v:?} is not a number"))?;
            let ok = match kind {
                Sweep::Members => x >= 3.0 && x.fract() == 0.0 && x <= 100_000.0,
                Sweep::Loss => (0.0..1.0).contains(&x),
            };
            if ok {
                Ok(x)
            } else {
                Err(format!(
                    "--sweep {key}: {v} out of range (members: a whole number 3-100000, loss: [0, 1))"
                ))
            }
        })
        .collect::<Result<Vec<f64>, String>>()?;
    if values.is_empty() {
        return Err(format!("--sweep {key}: no values"));
    }
    Ok((kind, values))
}

/// `--sweep`: the standard measurement per value, one chart.
pub fn plot_sweep(
    dir: &Path,
    spec: &str,
    base_members: usize,
    base_loss: f64,
    seed: u64,
    window: Duration,
) -> Result<PathBuf, String> {
    let (kind, values) = parse_sweep(spec)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut crash = Vec::new();
    let mut join = Vec::new();
    let mut converge = Vec::new();
    for &v in &values {
        let (members, loss) = match kind {
            Sweep::Members => (v as usize, base_loss),
            Sweep::Loss => (base_members, v),
        };
        let mut cfg = SimConfig::new(members, seed);
        cfg.loss = loss;
        let plan = Plan {
            bootstrap: Bootstrap::for_members(members),
            window,
            limit: Duration::from_secs(180),
            converge_limit: None,
        };
        let r = measure(cfg, plan);
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let shown = |d: Option<Duration>| {
            d.map_or_else(
                || "not reached".to_string(),
                |d| format!("{:.2} s", d.as_secs_f64()),
            )
        };
        println!(
            "sweep {} = {v}: crash known by all {}, join known by all {}, initial convergence {} ({} after the last join)",
            match kind {
                Sweep::Members => "members",
                Sweep::Loss => "loss",
            },
            shown(r.crash_known_by_all),
            shown(r.join_known_by_all),
            shown(r.converge),
            shown(r.converge_after_last_join)
        );
        let x = match kind {
            Sweep::Members => v,
            Sweep::Loss => v * 100.0,
        };
        if let Some(s) = secs(r.crash_known_by_all) {
            crash.push((x, s));
        }
        if let Some(s) = secs(r.join_known_by_all) {
            join.push((x, s));
        }
        if let Some(s) = secs(r.converge_after_last_join) {
            converge.push((x, s));
        }
    }
    let (name, x, about) = match kind {
        Sweep::Members => (
            "sweep-members.svg",
            "members",
            format!("{:.0} % loss, seed {seed}", base_loss * 100.0),
        ),
        Sweep::Loss => (
            "sweep-loss.svg",
            "packet loss (%)",
            format!("{base_members} members, seed {seed}"),
        ),
    };
    let mut series = vec![
        Series {
            name: "crash known by all (detection)".into(),
            points: crash,
        },
        Series {
            name: "join known by all".into(),
            points: join,
        },
    ];
    if !converge.is_empty() {
        series.push(Series {
            name: "initial convergence after the last join".into(),
            points: converge,
        });
    }
    let path = dir.join(name);
    line_chart(
        &path,
        &Chart {
            title: &format!("Detection and convergence time ({about})"),
            x,
            y: "seconds (virtual time)",
            markers: true,
            legend: SeriesLabelPosition::UpperLeft,
        },
        &series,
    )?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_specs() {
        let check = |spec: &str, want: Result<(Sweep, Vec<f64>), &str>| {
            let got = parse_sweep(spec);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{spec}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{spec}: {g}"),
                (g, w) => panic!("{spec}: got {g:?}, want {w:?}"),
            }
        };
        check(
            "members=100,1000",
            Ok((Sweep::Members, vec![100.0, 1000.0])),
        );
        check("loss=0,0.05, 0.2", Ok((Sweep::Loss, vec![0.0, 0.05, 0.2])));
        check("loss=1", Err("out of range"));
        check("members=2", Err("out of range"));
        check("members=10.5", Err("out of range"));
        check("members=x", Err("not a number"));
        check("latency=1", Err("expected members or loss"));
        check("members", Err("expected members=N"));
    }

    /// A small pool's timeline: the join and the crash reach everyone, no healthy member is
    /// marked failed, traffic is measured, and the charts are written as SVG.
    #[test]
    fn small_timeline_and_charts() {
        let t = timeline(12, 0.0, 3, true);
        assert_eq!(
            t.join.last().map(|p| p.1),
            Some(1.0),
            "join not known by all"
        );
        assert_eq!(
            t.crash.last().map(|p| p.1),
            Some(1.0),
            "crash not known by all"
        );
        assert_eq!(
            t.crash.first().map(|p| p.1),
            Some(0.0),
            "known before it happened"
        );
        assert!(t.bytes.iter().all(|p| p.1 > 0.0));
        assert_eq!(t.false_failed.last().map(|p| p.1), Some(0.0));
        let dir = std::env::temp_dir().join(format!("caravan-plot-{}", std::process::id()));
        let written = plot_timeline(&dir, 12, 0.0, 3, true).unwrap();
        for path in &written {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", path.display());
            assert!(svg.contains("<polyline"), "{} has no line", path.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
