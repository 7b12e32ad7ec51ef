//! Connection limits for listeners that face a network: per client (an IPv4 address, or an
//! IPv6 /64, since one host holds a whole /64) and in all. Pure counting with a lock, no I/O:
//! the HTTP API and the agent RPC listener both admit connections through it, so the two doors
//! cannot count differently.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The key a connection is counted under: an IPv4 address as it is, an IPv4-mapped IPv6
/// address as its IPv4 address, any other IPv6 address as its /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client already has the per-client maximum open.
    PerClient,
    /// The listener already has the total maximum open.
    Total,
}

/// Counts open connections per client ([`client_key`]) and in total.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    max_per_client: u32,
    max_total: u32,
    open: Mutex<OpenCounts>,
}

#[derive(Debug, Default)]
struct OpenCounts {
    total: u32,
    by_client: HashMap<IpAddr, u32>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    key: IpAddr,
}

impl ConnLimiter {
    /// A limiter admitting `max_per_client` connections per client and `max_total` in all
    /// (0 = unlimited, for either).
    pub fn new(max_per_client: u32, max_total: u32) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max_per_client,
            max_total,
            open: Mutex::new(OpenCounts::default()),
        })
    }

    /// Admits a connection from `ip`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refused> {
        let key = client_key(ip);
        let mut open = self.lock();
        if self.max_total != 0 && open.total >= self.max_total {
            return Err(Refused::Total);
        }
        let count = open.by_client.entry(key).or_insert(0);
        if self.max_per_client != 0 && *count >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        *count += 1;
        open.total += 1;
        Ok(ConnGuard {
            limiter: self.clone(),
            key,
        })
    }

    /// Open connections counted for `ip`'s client ([`client_key`]).
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.lock()
            .by_client
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenCounts> {
        // A panic while counting leaves counts, not broken memory: keep using them.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open connections in total.
    pub fn total(&self) -> u32 {
        self.lock().total
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limiter.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_client.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.key);
            }
        }
    }
}
