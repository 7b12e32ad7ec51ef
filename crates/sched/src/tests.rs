//! Worker state machine tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use caravan_agent_core::sched::{WorkerStatus, WorkloadStatus};

use crate::broker::{BrokerConfig, Eval, EvalBroker};
use crate::workers::{Worker, WorkerPool};

fn types() -> Vec<String> {
    vec!["service".into(), "_core".into()]
}

fn wait_for(w: &Worker, status: WorkerStatus, workload: WorkloadStatus) -> Duration {
    let started = Instant::now();
    loop {
        let info = w.info();
        if info.status == status && info.workload_status == workload {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stuck at {:?}/{:?}, wanted {status:?}/{workload:?}",
            info.status,
            info.workload_status
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn eval(id: &str) -> Eval {
    Eval {
        id: id.into(),
        job_id: format!("job-{id}"),
        priority: 50,
        scheduler: "service".into(),
        create_index: 1,
    }
}

#[test]
fn transitions_pause_resume_stop() {
    let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let w = Worker::start(
        types(),
        broker.clone(),
        Arc::new(move |_e: &Eval| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
    );
    wait_for(&w, WorkerStatus::Started, WorkloadStatus::WaitingToDequeue);
    // A waiting worker pauses at once, not after its 500 ms poll.
    w.pause();
    let took = wait_for(&w, WorkerStatus::Paused, WorkloadStatus::Paused);
    assert!(took < Duration::from_millis(400), "pause took {took:?}");
    // A paused worker dequeues nothing.
    broker.enqueue(eval("e1"));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    w.pause(); // ignored while paused
    assert_eq!(w.info().status, WorkerStatus::Paused);
    w.resume();
    wait_for(&w, WorkerStatus::Started, WorkloadStatus::WaitingToDequeue);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ran.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    w.stop();
    wait_for(&w, WorkerStatus::Stopped, WorkloadStatus::Stopped);
    w.pause(); // a stopped worker stays stopped
    assert_eq!(w.info().status, WorkerStatus::Stopped);
    w.join();
}

#[test]
fn stopping_a_paused_worker_wakes_it() {
    let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
    let w = Worker::start(types(), broker, Arc::new(|_e: &Eval| Ok(())));
    w.pause();
    wait_for(&w, WorkerStatus::Paused, WorkloadStatus::Paused);
    w.stop();
    wait_for(&w, WorkerStatus::Stopped, WorkloadStatus::Stopped);
    w.join();
}

#[test]
fn failures_back_off_and_nack() {
    let broker = Arc::new(EvalBroker::new(BrokerConfig {
        nack_timeout: Duration::from_secs(60),
        delivery_limit: 2,
    }));
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = tries.clone();
    let w = Worker::start(
        types(),
        broker.clone(),
        Arc::new(move |_e: &Eval| {
            counter.fetch_add(1, Ordering::SeqCst);
            Err("no".into())
        }),
    );
    broker.enqueue(eval("bad"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.failed().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(broker.failed().len(), 1);
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    w.stop();
    w.join();
}

#[test]
fn pool_rebuild_and_leadership() {
    let broker = Arc::new(EvalBroker::new(BrokerConfig::default()));
    let mut pool = WorkerPool::new(4, &types(), broker, Arc::new(|_e: &Eval| Ok(())));
    let ids: Vec<String> = pool.info().into_iter().map(|w| w.id).collect();
    pool.set_leader(true);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let paused = pool
            .info()
            .iter()
            .filter(|w| w.status == WorkerStatus::Paused)
            .count();
        if paused == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "leader did not pause 3 of 4");
        std::thread::sleep(Duration::from_millis(2));
    }
    pool.set_leader(false);
    pool.rebuild(2, &types());
    let after = pool.info();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|w| !ids.contains(&w.id)), "new IDs");
    pool.shutdown();
    assert!(pool.info().is_empty());
}
