//! The simulator's worker threads, started once per [`super::Sim`]: a batch's tasks (a node and
//! its events) are moved to whichever thread is free, the simulator's own included, and moved
//! back done. Spawning threads per batch cost a fifth of a 4,000-member run's storm; tasks taken
//! from one list balance nodes whose events cost a hundred times more than others' (a seed
//! answering joins with its whole member list).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// Threads that run tasks of type `T` with `run`.
pub(super) struct Pool<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    workers: Vec<JoinHandle<()>>,
    run: fn(&mut T),
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// A batch was queued, or the pool is shutting down.
    work: Condvar,
    /// The batch's last task is done.
    finished: Condvar,
}

struct State<T> {
    todo: Vec<T>,
    done: Vec<T>,
    /// Tasks of the batch not done yet.
    running: usize,
    /// What a task that panicked on a worker panicked with; the batch's caller panics with it.
    panic: Option<Box<dyn Any + Send>>,
    shutdown: bool,
}

impl<T: Send + 'static> Pool<T> {
    /// A pool of `workers` threads besides the caller's.
    pub(super) fn new(workers: usize, run: fn(&mut T)) -> Pool<T> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                todo: Vec::new(),
                done: Vec::new(),
                running: 0,
                panic: None,
                shutdown: false,
            }),
            work: Condvar::new(),
            finished: Condvar::new(),
        });
        let workers = (0..workers)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || work(&shared, run))
            })
            .collect();
        Pool {
            shared,
            workers,
            run,
        }
    }

    /// Runs every task, on the workers and on this thread, and returns them done (in no
    /// particular order). A task that panicked makes this panic with its payload.
    pub(super) fn run_all(&self, tasks: Vec<T>) -> Vec<T> {
        {
            let mut state = self.shared.state.lock();
            state.running = tasks.len();
            state.todo = tasks;
        }
        self.shared.work.notify_all();
        loop {
            let task = self.shared.state.lock().todo.pop();
            let Some(mut task) = task else {
                break;
            };
            let outcome = run_one(self.run, &mut task);
            finish(&mut self.shared.state.lock(), task, outcome);
        }
        let mut state = self.shared.state.lock();
        while state.running > 0 {
            self.shared.finished.wait(&mut state);
        }
        let done = std::mem::take(&mut state.done);
        if let Some(payload) = state.panic.take() {
            drop(state);
            std::panic::resume_unwind(payload);
        }
        done
    }
}

/// Runs `task`, catching a panic so the batch still ends (and the caller panics with it).
fn run_one<T>(run: fn(&mut T), task: &mut T) -> Result<(), Box<dyn Any + Send>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| run(task)))
}

/// Counts `task` done, or keeps the first panic of the batch.
fn finish<T>(state: &mut State<T>, task: T, outcome: Result<(), Box<dyn Any + Send>>) {
    match outcome {
        Ok(()) => state.done.push(task),
        Err(payload) => {
            state.panic.get_or_insert(payload);
        }
    }
    state.running -= 1;
}

/// A worker: takes tasks until the pool shuts down.
fn work<T>(shared: &Shared<T>, run: fn(&mut T)) {
    let mut state = shared.state.lock();
    loop {
        if state.shutdown {
            return;
        }
        let Some(mut task) = state.todo.pop() else {
            shared.work.wait(&mut state);
            continue;
        };
        drop(state);
        let outcome = run_one(run, &mut task);
        state = shared.state.lock();
        finish(&mut state, task, outcome);
        if state.running == 0 {
            shared.finished.notify_all();
        }
    }
}

impl<T: Send + 'static> Drop for Pool<T> {
    fn drop(&mut self) {
        self.shared.state.lock().shutdown = true;
        self.shared.work.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task comes back done once, whatever thread ran it, batch after batch.
    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3, |t: &mut (u32, u32)| t.1 += t.0 * 2);
        for round in 0..50u32 {
            let mut done = pool.run_all((0..round).map(|i| (i, 0)).collect());
            done.sort_unstable();
            let expected: Vec<(u32, u32)> = (0..round).map(|i| (i, i * 2)).collect();
            assert_eq!(done, expected);
        }
    }

    /// A task that panics on a worker makes the batch's caller panic, not wait forever.
    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let pool = Pool::new(1, |t: &mut u32| {
            if *t == 7 {
                std::panic::panic_any("task 7");
            }
        });
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| pool.run_all((0..64).collect())));
        assert!(result.is_err());
        assert_eq!(
            pool.run_all(vec![1, 2]).len(),
            2,
            "the pool still runs tasks"
        );
    }
}
