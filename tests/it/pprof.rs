//! `/v1/agent/pprof/*` against a real agent.

use std::io::Read;
use std::time::Duration;

use pprof::protos::{Message, Profile};

use crate::support::Agent;

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// Real profiles from a running agent: its command line, every thread's stack (binary and as
/// text), Nomad's ?profile= quirk, mutex's 501. The parameter rules and headers are
/// caravan-http's pprof table.
#[tokio::test]
async fn named_profiles_are_collected() {
    let agent = Agent::dev("").await;
    let r = agent.get("/v1/agent/pprof/cmdline").await;
    assert_eq!(r.status, 200);
    let argv: Vec<&[u8]> = r.body.split(|b| *b == 0).collect();
    assert!(argv[0].ends_with(b"caravan"), "{:?}", r.text());
    assert_eq!(argv[1], b"agent");
    assert_eq!(argv[2], b"-dev");

    let r = agent.get("/v1/agent/pprof/goroutine").await;
    assert_eq!(r.status, 200);
    let p = Profile::decode(&gunzip(&r.body)[..]).unwrap();
    assert!(p.sample.len() >= 2, "one sample per thread");
    // Each runtime thread's stack was captured (by a signal to that thread: only the collecting
    // thread captures its own), not just listed: a capture that timed out leaves a thread with
    // no frames under its name.
    let threads = thread_stacks(&p);
    let workers: Vec<&(String, Vec<String>)> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("tokio-rt-worker"))
        .collect();
    assert!(workers.len() >= 2, "{threads:?}");
    for (name, frames) in &workers {
        assert!(
            frames.iter().any(|f| f.contains("tokio::runtime")),
            "{name} has no captured stack: {frames:?}"
        );
    }
    // jemalloc's background threads block every signal (jemalloc creates them so): they are
    // listed by name, without frames, and not asked.
    let askable: Vec<_> = threads
        .iter()
        .filter(|(name, _)| !name.starts_with("jemalloc_bg_thd"))
        .collect();
    let captured = askable.iter().filter(|(_, f)| !f.is_empty()).count();
    assert!(
        captured * 4 > askable.len() * 3,
        "only {captured} of {} threads answered: {threads:?}",
        askable.len()
    );
    assert!(
        p.string_table.iter().any(|s| s.contains("tokio::runtime")),
        "stack frames are symbolized"
    );
    assert!(
        p.string_table.iter().any(|s| s.contains("tokio-rt-worker")),
        "{:?}",
        p.string_table
    );
    for debug in ["1", "2"] {
        let r = agent
            .get(&format!("/v1/agent/pprof/goroutine?debug={debug}"))
            .await;
        let text = r.text();
        assert!(text.starts_with("goroutine profile: total "), "{text}");
        // Frames are listed under the threads, and most threads answered in time.
        let total: usize = text["goroutine profile: total ".len()..]
            .lines()
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        let silent = text
            .matches("(no stack: the thread did not answer in time)")
            .count();
        assert!(
            silent * 4 < total,
            "{silent} of {total} threads without a stack: {text}"
        );
        assert!(text.contains("tokio::runtime"), "{text}");
    }
    // A caller-supplied ?profile= wins over the path (Nomad's quirk).
    let r = agent
        .get("/v1/agent/pprof/heap?profile=threadcreate&debug=1")
        .await;
    assert!(
        r.text().starts_with("threadcreate profile: total "),
        "{}",
        r.text()
    );
    // No Rust equivalent: the agent's answer.
    let r = agent.get("/v1/agent/pprof/mutex").await;
    assert_eq!(r.status, 501);
}

#[tokio::test]
async fn cpu_and_heap_profiles_decode() {
    let agent = Agent::dev("").await;
    // Keep the agent busy while it profiles itself.
    let busy = agent.http;
    let load = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < until {
            let _ = crate::support::get(busy, "/v1/agent/self?pretty").await;
        }
    });
    let r = agent.get("/v1/agent/pprof/profile?seconds=1").await;
    let _ = load.await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-disposition").as_deref(),
        Some("attachment; filename=\"profile\"")
    );
    let p = Profile::decode(&gunzip(&r.body)[..]).unwrap();
    assert!(!p.sample.is_empty(), "a busy second has samples");
    assert!(
        p.string_table.iter().any(|s| s.contains("caravan")),
        "function names of this program are in the profile"
    );

    let r = agent.get("/v1/agent/pprof/heap").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = Profile::decode(&gunzip(&r.body)[..]).unwrap();
    assert!(
        p.string_table.iter().any(|s| s.contains("space")),
        "{:?}",
        &p.string_table[..4.min(p.string_table.len())]
    );
    let r = agent.get("/v1/agent/pprof/heap?debug=1").await;
    assert!(r.text().contains("# allocated = "), "{}", r.text());

    // A trace records the agent's events while it runs: requests made meanwhile are in it.
    let marker = "trace-marker-7f3a";
    let addr = agent.http;
    let poke = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(900);
        while tokio::time::Instant::now() < until {
            let _ = crate::support::get(addr, &format!("/v1/agent/members?{marker}")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let r = agent.get("/v1/agent/pprof/trace?seconds=1").await;
    let _ = poke.await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let events = v["traceEvents"]
        .as_array()
        .expect("traceEvents is an array");
    assert!(!events.is_empty(), "a busy second traced no event");
    for e in events {
        assert_eq!(e["ph"], "i", "{e}");
        assert!(e["ts"].is_u64() && e["pid"].is_u64(), "{e}");
    }
    assert!(
        events.iter().any(|e| e.to_string().contains(marker)),
        "the requests made during the trace are not in it: {events:?}"
    );
}

/// Each sample of a thread profile as (thread label, its frames' function names, leaf first):
/// a sample's locations are the frames, then the thread, then the process.
fn thread_stacks(p: &Profile) -> Vec<(String, Vec<String>)> {
    let name_of = |location: u64| -> String {
        let loc = p
            .location
            .iter()
            .find(|l| l.id == location)
            .expect("location");
        let function = loc.line.first().map_or(0, |l| l.function_id);
        let f = p
            .function
            .iter()
            .find(|f| f.id == function)
            .expect("function");
        p.string_table[f.name as usize].clone()
    };
    p.sample
        .iter()
        .map(|s| {
            let names: Vec<String> = s.location_id.iter().map(|&l| name_of(l)).collect();
            assert!(names.len() >= 2, "thread and process: {names:?}");
            let thread = names[names.len() - 2].clone();
            (thread, names[..names.len() - 2].to_vec())
        })
        .collect()
}

#[tokio::test]
async fn concurrent_cpu_profiles_are_refused() {
    let agent = Agent::dev("").await;
    let addr = agent.http;
    let first = tokio::spawn(async move {
        crate::support::get(addr, "/v1/agent/pprof/profile?seconds=3").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = agent.get("/v1/agent/pprof/profile?seconds=1").await;
    let first = first.await.unwrap().unwrap();
    // Whichever started second is refused; the other profiles normally.
    let mut outcomes = [(first.status, first.text()), (second.status, second.text())];
    outcomes.sort();
    assert_eq!(outcomes[0].0, 200, "{outcomes:?}");
    assert_eq!(
        (outcomes[1].0, outcomes[1].1.as_str()),
        (500, "cpu profiling already in use")
    );
}
