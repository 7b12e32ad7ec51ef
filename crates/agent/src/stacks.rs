//! Stacks of every thread of this process, for the `goroutine` profile: each thread is sent a
//! signal whose handler walks its own stack into a fixed buffer (no allocation, as pprof-rs does
//! in its SIGPROF handler); the collector then symbolizes the addresses. Threads are captured one
//! at a time, each bounded by a timeout, so a thread that cannot answer is reported without a
//! stack instead of holding the request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Deepest stack recorded.
pub const MAX_FRAMES: usize = 96;

/// How long one thread may take to answer.
const THREAD_TIMEOUT: Duration = Duration::from_millis(200);

/// The signal used (ignored by default, unused by the runtime).
const SIGNAL: libc::c_int = libc::SIGURG;

static FRAMES: [AtomicUsize; MAX_FRAMES] = [const { AtomicUsize::new(0) }; MAX_FRAMES];
static DEPTH: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
static ARMED: AtomicBool = AtomicBool::new(false);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();

extern "C" fn on_signal(_sig: libc::c_int) {
    if !ARMED.swap(false, Ordering::AcqRel) {
        return;
    }
    let mut n = 0usize;
    // SAFETY: the closure only stores into preallocated atomics; the unwinder is the one
    // pprof-rs uses in signal context.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if n < MAX_FRAMES {
                FRAMES[n].store(frame.ip() as usize, Ordering::Relaxed);
                n += 1;
                true
            } else {
                false
            }
        });
    }
    DEPTH.store(n, Ordering::Release);
    DONE.store(true, Ordering::Release);
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: installs a handler for a signal nothing else in this process uses.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            // Never nest with the CPU profiler's unwinding on the same thread.
            libc::sigaddset(&mut action.sa_mask, libc::SIGPROF);
            libc::sigaction(SIGNAL, &action, std::ptr::null_mut());
        }
    });
}

/// Whether thread `tid` of this process blocks the capture signal (jemalloc's background
/// threads block every signal): such a thread is not asked, since it cannot answer.
pub fn blocks_signal(tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (SIGNAL - 1)) != 0)
}

/// One thread's stack as instruction addresses (innermost first); `None` when it did not answer
/// (or blocks the signal, [`blocks_signal`]).
pub fn capture(tid: i32) -> Option<Vec<usize>> {
    if blocks_signal(tid) {
        return None;
    }
    install();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    DONE.store(false, Ordering::Release);
    ARMED.store(true, Ordering::Release);
    // SAFETY: tgkill to a thread of our own process.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid() as libc::c_long,
            tid as libc::c_long,
            SIGNAL as libc::c_long,
        )
    };
    if sent != 0 {
        ARMED.store(false, Ordering::Release);
        return None;
    }
    let deadline = Instant::now() + THREAD_TIMEOUT;
    while !DONE.load(Ordering::Acquire) {
        if Instant::now() >= deadline {
            // Disarm so a late signal does not write over the next capture.
            ARMED.store(false, Ordering::Release);
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let n = DEPTH.load(Ordering::Acquire);
    let ips: Vec<usize> = (0..n).map(|i| FRAMES[i].load(Ordering::Relaxed)).collect();
    Some(without_handler(ips))
}

/// Drops the capture machinery's own frames (the unwinder, the handler and the kernel's signal
/// trampoline) and a trailing null frame.
fn without_handler(mut ips: Vec<usize>) -> Vec<usize> {
    let handler = ips
        .iter()
        .take(8)
        .position(|&ip| symbolize(ip).0.contains("stacks::on_signal"));
    if let Some(at) = handler {
        ips.drain(..(at + 2).min(ips.len()));
    }
    while ips.last() == Some(&0) {
        ips.pop();
    }
    ips
}

/// This thread's own stack.
pub fn capture_self() -> Vec<usize> {
    let mut out = Vec::new();
    backtrace::trace(|frame| {
        out.push(frame.ip() as usize);
        out.len() < MAX_FRAMES
    });
    out
}

/// The thread ID of the calling thread.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// A symbolized frame: function name and `file:line` when known.
pub fn symbolize(ip: usize) -> (String, String) {
    let mut name = String::new();
    let mut location = String::new();
    backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
        if name.is_empty() {
            name = symbol.name().map(|n| format!("{n:#}")).unwrap_or_default();
            if let (Some(file), Some(line)) = (symbol.filename(), symbol.lineno()) {
                location = format!("{}:{line}", file.display());
            }
        }
    });
    if name.is_empty() {
        name = format!("{ip:#x}");
    }
    (name, location)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that blocks the capture signal is seen as such (and answers `None` at once);
    /// one that does not is asked and answers.
    #[test]
    fn a_thread_that_blocks_the_signal_is_not_asked() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let blocked = std::thread::spawn(move || {
            // SAFETY: a signal set on this thread's stack, then this thread's own mask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, SIGNAL);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let _ = tx.send(current_tid());
            let _ = stop_rx.recv_timeout(Duration::from_secs(30));
        });
        let tid = rx.recv_timeout(Duration::from_secs(10));
        let result = tid.map(|tid| (blocks_signal(tid), capture(tid).is_none()));
        let _ = stop_tx.send(());
        let _ = blocked.join();
        assert_eq!(result, Ok((true, true)));
        assert!(!blocks_signal(current_tid()));
    }
}
