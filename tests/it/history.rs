//! Operation histories of registers and their checker.
//!
//! A workload writes unique values to a few keys (a job's `Name`, an ACL policy's
//! `Description`) and reads them back, recording each operation's invocation and response on the
//! test process's monotonic clock (never another process's clock). A write that did not answer
//! 200 is indeterminate (it may still take effect, at any time after its invocation); a read that
//! did not answer is dropped. [`check`] then looks for what no linearizable register could show:
//!
//! - **phantom**: a read (default or `?stale`) returns a value nobody wrote to that key;
//! - **future**: a read returns a value whose write was invoked only after the read answered;
//! - **stale** (default reads): a read returns a value (or nothing) although a write that
//!   followed that value's write in real time had completed before the read was invoked;
//! - **inversion** (default reads): a read returns a value whose write strictly precedes the write
//!   of a value an earlier read (completed before this one began) returned;
//! - **lost**: after the cluster healed, a server's final value is not one a linearization could
//!   end with: an acknowledged write strictly follows the final value's write, or an acknowledged
//!   write was overwritten by nothing that could come after it; servers disagreeing is lost too.
//!
//! - **order** (default reads): no linearizable order of the key's writes and default reads
//!   exists at all. This is the complete check (the classes above name the common cases more
//!   precisely, but reads of several writes whose intervals overlap can admit no order while no
//!   single pair of them shows it, e.g. reads of `b`, `a`, `b` in turn while both writes were in
//!   flight).
//!
//! Values are unique per key, so each value names its write, and whether an order exists is
//! decided without a search over orders, by Gibbons and Korach's zones ("Testing shared
//! memories", SIAM J. Comput. 1997; as stated by Golab, Li and Shah, PODC 2011): the write of a
//! value and the reads that returned it form a cluster; with `f` the earliest response and `s`
//! the latest invocation among them, the cluster's zone is *forward* `[f, s]` when `f < s`, else
//! *backward* `[s, f]`. An order exists if and only if no read precedes its write, no two forward
//! zones overlap, and no backward zone lies inside a forward one.

use std::collections::{BTreeMap, HashMap};

/// Nanoseconds on the harness's monotonic clock since the run began; `u64::MAX` stands for
/// "never answered".
pub type Time = u64;

/// An indeterminate operation's response time.
pub const NEVER: Time = u64::MAX;

/// What an operation did.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Wrote this value.
    Write(String),
    /// Read this value (`None`: the key did not exist); `stale` reads may lag.
    Read { value: Option<String>, stale: bool },
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// Acknowledged (200).
    Ok,
    /// Refused or timed out: a write may or may not have happened; a read told nothing.
    Unknown,
}

/// One operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub kind: Kind,
    pub server: usize,
    pub invoked: Time,
    pub answered: Time,
    pub outcome: Outcome,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Acknowledged reads checked (default and stale).
    pub reads: usize,
    pub default_reads: usize,
    pub writes_acked: usize,
    pub writes_unknown: usize,
    /// One line per violation, starting with its class (`phantom`, `future`, `stale`,
    /// `inversion`, `lost`).
    pub violations: Vec<String>,
}

/// A write as the checker sees it: its interval, `answered` = [`NEVER`] unless acknowledged.
#[derive(Clone, Copy)]
struct W {
    invoked: Time,
    answered: Time,
    acked: bool,
}

/// Whether `a` strictly precedes `b` in real time.
fn before(a: W, b: W) -> bool {
    a.answered < b.invoked
}

/// Checks `history`; `finals` holds, per server, the value each key ended with after the heal
/// (keys missing from a server's map ended absent there).
pub fn check(history: &[Op], finals: &[BTreeMap<String, Option<String>>]) -> Report {
    let mut report = Report::default();
    // Writes per key, by value.
    let mut writes: HashMap<&str, HashMap<&str, W>> = HashMap::new();
    for op in history {
        if let Kind::Write(v) = &op.kind {
            let acked = op.outcome == Outcome::Ok;
            if acked {
                report.writes_acked += 1;
            } else {
                report.writes_unknown += 1;
            }
            let w = W {
                invoked: op.invoked,
                answered: if acked { op.answered } else { NEVER },
                acked,
            };
            if writes.entry(&op.key).or_default().insert(v, w).is_some() {
                report
                    .violations
                    .push(format!("workload: value {v} written twice to {}", op.key));
            }
        }
    }
    let empty = HashMap::new();
    // Default reads per key, for the inversion check.
    let mut reads: HashMap<&str, Vec<(&Op, Option<W>)>> = HashMap::new();
    for op in history {
        let Kind::Read { value, stale } = &op.kind else {
            continue;
        };
        if op.outcome != Outcome::Ok {
            continue;
        }
        report.reads += 1;
        let ws = writes.get(op.key.as_str()).unwrap_or(&empty);
        let read = W {
            invoked: op.invoked,
            answered: op.answered,
            acked: true,
        };
        let written = match value {
            Some(v) => match ws.get(v.as_str()) {
                Some(w) => Some(*w),
                None => {
                    report.violations.push(format!(
                        "phantom: s{} read {}={v}, never written",
                        op.server, op.key
                    ));
                    continue;
                }
            },
            None => None,
        };
        if let Some(w) = written
            && w.invoked > op.answered
        {
            report.violations.push(format!(
                "future: s{} read {}={:?} before its write was invoked",
                op.server, op.key, value
            ));
        }
        if *stale {
            continue;
        }
        report.default_reads += 1;
        // A completed write that followed the value's write (or any completed write, when the
        // read saw nothing) makes the read stale.
        let newer = ws.iter().find(|(v, w2)| {
            Some(**v) != value.as_deref()
                && w2.acked
                && before(**w2, read)
                && written.is_none_or(|w| before(w, **w2))
        });
        if let Some((v2, _)) = newer {
            report.violations.push(format!(
                "stale: s{} read {}={:?} after the write of {v2}, which followed it, had completed",
                op.server, op.key, value
            ));
        }
        reads.entry(&op.key).or_default().push((op, written));
    }
    for (key, rs) in &reads {
        let mut by_start = rs.clone();
        by_start.sort_by_key(|(op, _)| op.invoked);
        let mut by_end = rs.clone();
        by_end.sort_by_key(|(op, _)| op.answered);
        // Sweep: of the reads that ended before this one began, the latest write any returned
        // (by its interval: one that strictly follows another is later) decides.
        let mut done = 0;
        let mut seen: Vec<(Option<W>, &Op)> = Vec::new();
        for (op, w) in &by_start {
            while done < by_end.len() && by_end[done].0.answered < op.invoked {
                seen.push((by_end[done].1, by_end[done].0));
                done += 1;
            }
            let bad = seen.iter().find(|(earlier, _)| match (earlier, w) {
                (Some(_), None) => true,
                (Some(e), Some(w)) => before(*w, *e),
                (None, _) => false,
            });
            if let Some((_, earlier)) = bad {
                report.violations.push(format!(
                    "inversion: s{} read {key}={:?} after s{} had read {:?}, a later write",
                    op.server,
                    value_of(op),
                    earlier.server,
                    value_of(earlier)
                ));
            }
            // Keep only the latest reads' writes: drop what another seen write strictly follows.
            if seen.len() > 64 {
                let ws: Vec<Option<W>> = seen.iter().map(|(w, _)| *w).collect();
                seen.retain(|(w, _)| match w {
                    None => !ws.iter().any(Option::is_some),
                    Some(w) => !ws.iter().flatten().any(|o| before(*w, *o)),
                });
                seen.truncate(64);
            }
        }
    }
    for (key, rs) in &reads {
        let ws = writes.get(key).unwrap_or(&empty);
        report.violations.extend(zone_conflicts(key, ws, rs));
    }
    for (server, last) in finals.iter().enumerate() {
        for (key, ws) in &writes {
            let final_value = last.get(*key).cloned().flatten();
            let fw = match &final_value {
                Some(v) => match ws.get(v.as_str()) {
                    Some(w) => Some(*w),
                    None => {
                        report.violations.push(format!(
                            "phantom: s{server} ended with {key}={v}, never written"
                        ));
                        continue;
                    }
                },
                None => None,
            };
            for (v, w) in ws.iter().filter(|(_, w)| w.acked) {
                if Some(*v) == final_value.as_deref() {
                    continue;
                }
                let overwritten = ws.iter().any(|(v2, w2)| v2 != v && !before(*w2, *w));
                let after_final = fw.is_none_or(|f| before(f, *w));
                if !overwritten || after_final {
                    report.violations.push(format!(
                        "lost: s{server} ended with {key}={final_value:?}, but the acknowledged write of {v} is not there"
                    ));
                }
            }
        }
        if let Some(first) = finals.first()
            && first != last
        {
            report
                .violations
                .push(format!("lost: s{server} ended with other values than s0"));
        }
    }
    report
}

/// A cluster's zone: `forward` when its earliest response precedes its latest invocation.
#[derive(Clone, Copy, Debug)]
struct Zone {
    lo: Time,
    hi: Time,
    forward: bool,
}

impl Zone {
    /// The zone of a write interval with the intervals of the reads that returned its value.
    fn of(write: W, reads: &[W]) -> Zone {
        let f = reads
            .iter()
            .map(|r| r.answered)
            .fold(write.answered, Time::min);
        let s = reads
            .iter()
            .map(|r| r.invoked)
            .fold(write.invoked, Time::max);
        if f < s {
            Zone {
                lo: f,
                hi: s,
                forward: true,
            }
        } else {
            Zone {
                lo: s,
                hi: f,
                forward: false,
            }
        }
    }

    /// Two zones no order can satisfy together: forward zones that overlap, or a backward zone
    /// inside a forward one.
    fn conflicts(self, other: Zone) -> bool {
        match (self.forward, other.forward) {
            (true, true) => self.lo.max(other.lo) < self.hi.min(other.hi),
            (true, false) => self.lo < other.lo && other.hi < self.hi,
            (false, true) => other.conflicts(self),
            (false, false) => false,
        }
    }
}

/// The zone check of one key: its writes (by value) and its acknowledged default reads (with the
/// write of the value each returned; `None` for a read of the key before any write). Writes
/// that were never acknowledged and that no read returned are left out (they may not have
/// happened); reads of nothing belong to the key's initial state, a write at time 0.
fn zone_conflicts(key: &str, writes: &HashMap<&str, W>, reads: &[(&Op, Option<W>)]) -> Vec<String> {
    // Times move up by one so that the initial state's write, at 0, precedes every operation.
    let later = |w: W| W {
        invoked: w.invoked.saturating_add(1),
        answered: w.answered.saturating_add(1),
        acked: w.acked,
    };
    let mut clusters: BTreeMap<Option<&str>, (W, Vec<W>)> = BTreeMap::new();
    for (v, w) in writes {
        if w.acked {
            clusters.insert(Some(v), (later(*w), Vec::new()));
        }
    }
    let initial = W {
        invoked: 0,
        answered: 0,
        acked: true,
    };
    for (op, written) in reads {
        let value = match &op.kind {
            Kind::Read { value, .. } => value.as_deref(),
            Kind::Write(_) => continue,
        };
        let Some(write) = written.map(later).or(value.is_none().then_some(initial)) else {
            continue;
        };
        let read = later(W {
            invoked: op.invoked,
            answered: op.answered,
            acked: true,
        });
        clusters
            .entry(value)
            .or_insert_with(|| (write, Vec::new()))
            .1
            .push(read);
    }
    let zones: Vec<(Option<&str>, Zone)> = clusters
        .iter()
        .map(|(v, (w, rs))| (*v, Zone::of(*w, rs)))
        .collect();
    let mut out = Vec::new();
    for (i, (v1, z1)) in zones.iter().enumerate() {
        for (v2, z2) in &zones[i + 1..] {
            if z1.conflicts(*z2) {
                out.push(format!(
                    "order: no linearizable order of {key}'s writes and reads: the zones of {v1:?} {z1:?} and {v2:?} {z2:?} conflict"
                ));
            }
        }
    }
    out
}

fn value_of(op: &Op) -> Option<String> {
    match &op.kind {
        Kind::Read { value, .. } => value.clone(),
        Kind::Write(v) => Some(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &str, invoked: Time, answered: Time, ok: bool) -> Op {
        Op {
            key: "k".into(),
            kind: Kind::Write(v.into()),
            server: 0,
            invoked,
            answered,
            outcome: if ok { Outcome::Ok } else { Outcome::Unknown },
        }
    }

    fn r(v: Option<&str>, invoked: Time, answered: Time, stale: bool) -> Op {
        Op {
            key: "k".into(),
            kind: Kind::Read {
                value: v.map(String::from),
                stale,
            },
            server: 1,
            invoked,
            answered,
            outcome: Outcome::Ok,
        }
    }

    fn fin(v: Option<&str>) -> Vec<BTreeMap<String, Option<String>>> {
        vec![BTreeMap::from([("k".to_string(), v.map(String::from))])]
    }

    /// `history` with `finals` yields exactly the violation classes `expected` (sorted, once).
    fn check_case(
        name: &str,
        history: &[Op],
        finals: &[BTreeMap<String, Option<String>>],
        expected: &[&str],
    ) {
        let report = check(history, finals);
        let mut classes: Vec<&str> = report
            .violations
            .iter()
            .map(|v| v.split(':').next().unwrap_or_default())
            .collect();
        classes.sort();
        classes.dedup();
        assert_eq!(classes, expected, "{name}: {:#?}", report.violations);
    }

    /// A case: its name, the history, the final value, the violation classes expected.
    type Case = (
        &'static str,
        Vec<Op>,
        Option<&'static str>,
        Vec<&'static str>,
    );

    #[test]
    fn checker_flags_what_no_register_shows() {
        let a = w("a", 0, 10, true);
        let b = w("b", 20, 30, true);
        let cases: Vec<Case> = vec![
            (
                "fresh reads",
                vec![
                    a.clone(),
                    b.clone(),
                    r(Some("a"), 11, 15, false),
                    r(Some("b"), 31, 35, false),
                ],
                Some("b"),
                vec![],
            ),
            (
                "read concurrent with a write may see either",
                vec![
                    a.clone(),
                    b.clone(),
                    r(Some("a"), 21, 25, false),
                    r(Some("b"), 22, 26, false),
                ],
                Some("b"),
                vec![],
            ),
            (
                "stale read injected",
                vec![a.clone(), b.clone(), r(Some("a"), 40, 45, false)],
                Some("b"),
                vec!["order", "stale"],
            ),
            (
                "a stale read is allowed with ?stale",
                vec![a.clone(), b.clone(), r(Some("a"), 40, 45, true)],
                Some("b"),
                vec![],
            ),
            (
                "nothing read after an acknowledged write",
                vec![a.clone(), r(None, 12, 14, false)],
                Some("a"),
                vec!["order", "stale"],
            ),
            (
                "phantom value",
                vec![a.clone(), r(Some("zz"), 12, 14, true)],
                Some("a"),
                vec!["phantom"],
            ),
            (
                "read before its write was invoked",
                vec![w("a", 50, 60, true), r(Some("a"), 10, 20, false)],
                Some("a"),
                vec!["future"],
            ),
            (
                "new then old",
                vec![
                    a.clone(),
                    w("b", 20, 30, true),
                    r(Some("b"), 25, 28, false),
                    r(Some("a"), 29, 29, false),
                ],
                Some("b"),
                vec!["inversion", "order"],
            ),
            (
                "lost write injected",
                vec![a.clone(), b.clone()],
                Some("a"),
                vec!["lost"],
            ),
            (
                "acknowledged write missing entirely",
                vec![a.clone()],
                None,
                vec!["lost"],
            ),
            (
                "an indeterminate write may win",
                vec![a.clone(), w("c", 5, 100, false)],
                Some("c"),
                vec![],
            ),
            (
                "an indeterminate write may vanish",
                vec![a.clone(), w("c", 5, 100, false)],
                Some("a"),
                vec![],
            ),
            (
                "both writes in flight: b, a, b read in turn fits no order",
                vec![
                    w("a", 0, 100, true),
                    w("b", 0, 100, true),
                    r(Some("b"), 10, 20, false),
                    r(Some("a"), 30, 40, false),
                    r(Some("b"), 50, 60, false),
                ],
                Some("b"),
                vec!["order"],
            ),
            (
                "both writes in flight: b, a read in turn fits (b then a)",
                vec![
                    w("a", 0, 100, true),
                    w("b", 0, 100, true),
                    r(Some("b"), 10, 20, false),
                    r(Some("a"), 30, 40, false),
                ],
                Some("a"),
                vec![],
            ),
            (
                "an indeterminate write read in between fits no order either",
                vec![
                    w("a", 0, 10, true),
                    w("c", 5, 100, false),
                    r(Some("c"), 20, 30, false),
                    r(Some("a"), 40, 50, false),
                ],
                Some("a"),
                vec!["order"],
            ),
            (
                "stale read and lost write together",
                vec![a.clone(), b.clone(), r(Some("a"), 40, 45, false)],
                Some("a"),
                vec!["lost", "order", "stale"],
            ),
        ];
        for (name, history, last, expected) in cases {
            check_case(name, &history, &fin(last), &expected);
        }
    }

    #[test]
    fn checker_flags_servers_that_disagree() {
        let history = vec![w("a", 0, 10, true), w("b", 20, 30, false)];
        let mut finals = fin(Some("a"));
        finals.extend(fin(Some("b")));
        check_case("diverged", &history, &finals, &["lost"]);
    }
}
