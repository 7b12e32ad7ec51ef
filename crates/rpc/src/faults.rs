//! Fault injection for tests (feature `faults`, never in the agent's own build): the environment
//! variable `CARAVAN_RPC_FAULTS` names a file of `ip:port` lines; calls to those addresses fail
//! at once, as if the network were cut. The file is re-read at most every 100 ms.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Addresses calls must not reach.
pub struct Faults {
    path: Option<PathBuf>,
    cache: Mutex<(Option<Instant>, HashSet<SocketAddr>)>,
}

impl Faults {
    /// Reads the file named by `CARAVAN_RPC_FAULTS`, if set.
    pub fn from_env() -> Faults {
        Faults {
            path: std::env::var_os("CARAVAN_RPC_FAULTS").map(PathBuf::from),
            cache: Mutex::new((None, HashSet::new())),
        }
    }

    /// Whether calls to `addr` must fail.
    pub fn blocked(&self, addr: SocketAddr) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let mut cache = self.cache.lock();
        if cache
            .0
            .is_none_or(|t| t.elapsed() > Duration::from_millis(100))
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            cache.1 = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            cache.0 = Some(Instant::now());
        }
        cache.1.contains(&addr)
    }
}
