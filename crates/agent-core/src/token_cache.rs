//! A client agent's cache of token resolutions. A client agent holds no ACL state: it asks a
//! server to resolve each token it is handed (`ACL.ResolveToken`) and remembers the answer for a
//! short time, as Nomad's clients do. Denials are remembered too, for less time and in a bounded
//! table, so a caller repeating a bad secret does not make the client ask a server each time, and
//! a caller trying many secrets cannot grow its memory (the agent also bounds how many
//! resolutions it asks of servers at once). Time is passed in: the cache reads no clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::acl::Acl;

/// How long a resolution is used before a server is asked again.
pub const TTL: Duration = Duration::from_secs(30);
/// How long a denial is remembered.
pub const DENIAL_TTL: Duration = Duration::from_secs(5);
/// Most resolutions kept.
pub const MAX_RESOLVED: usize = 4096;
/// Most denials kept.
pub const MAX_DENIED: usize = 1024;

/// Resolutions by secret (`""` for requests without a token).
#[derive(Debug, Default)]
pub struct TokenCache {
    resolved: HashMap<String, (Acl, Instant)>,
    denied: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    /// What is known about `secret` at `now`: `Some(Ok)` resolved, `Some(Err)` denied (the
    /// reason), `None` ask a server.
    pub fn get(&self, secret: &str, now: Instant) -> Option<Result<Acl, String>> {
        if let Some((acl, at)) = self.resolved.get(secret)
            && now.saturating_duration_since(*at) < TTL
        {
            return Some(Ok(acl.clone()));
        }
        if let Some((reason, at)) = self.denied.get(secret)
            && now.saturating_duration_since(*at) < DENIAL_TTL
        {
            return Some(Err(reason.clone()));
        }
        None
    }

    /// Remembers a server's answer.
    pub fn put(&mut self, secret: &str, answer: Result<Acl, String>, now: Instant) {
        match answer {
            Ok(acl) => {
                self.denied.remove(secret);
                make_room(&mut self.resolved, MAX_RESOLVED, now, TTL);
                self.resolved.insert(secret.to_string(), (acl, now));
            }
            Err(reason) => {
                self.resolved.remove(secret);
                make_room(&mut self.denied, MAX_DENIED, now, DENIAL_TTL);
                self.denied.insert(secret.to_string(), (reason, now));
            }
        }
    }

    /// How many resolutions and denials are held.
    pub fn len(&self) -> (usize, usize) {
        (self.resolved.len(), self.denied.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.resolved.is_empty() && self.denied.is_empty()
    }
}

/// Below `max` entries: drop the expired ones, then, if still full, the oldest.
fn make_room<V>(map: &mut HashMap<String, (V, Instant)>, max: usize, now: Instant, ttl: Duration) {
    if map.len() < max {
        return;
    }
    map.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
    while map.len() >= max {
        let oldest = map
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => map.remove(&k),
            None => break,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_expire_and_denials_expire_sooner() {
        let t0 = Instant::now();
        let mut c = TokenCache::default();
        c.put("a", Ok(Acl::management()), t0);
        c.put("b", Err("Permission denied".into()), t0);
        assert_eq!(c.get("a", t0 + TTL / 2), Some(Ok(Acl::management())));
        assert_eq!(
            c.get("b", t0 + DENIAL_TTL / 2),
            Some(Err("Permission denied".into()))
        );
        assert_eq!(c.get("b", t0 + DENIAL_TTL), None);
        assert_eq!(c.get("a", t0 + TTL), None);
        assert_eq!(c.get("c", t0), None);
    }

    #[test]
    fn denials_are_bounded_in_number() {
        let t0 = Instant::now();
        let mut c = TokenCache::default();
        for i in 0..MAX_DENIED * 3 {
            c.put(&format!("guess-{i}"), Err("Permission denied".into()), t0);
        }
        assert_eq!(c.len(), (0, MAX_DENIED));
        for i in 0..MAX_RESOLVED + 10 {
            c.put(&format!("t-{i}"), Ok(Acl::deny_all()), t0);
        }
        assert!(c.len().0 <= MAX_RESOLVED);
    }

    #[test]
    fn a_new_answer_replaces_the_old_one() {
        let t0 = Instant::now();
        let mut c = TokenCache::default();
        c.put("a", Err("Permission denied".into()), t0);
        c.put("a", Ok(Acl::deny_all()), t0);
        assert_eq!(c.get("a", t0), Some(Ok(Acl::deny_all())));
        assert_eq!(c.len(), (1, 0));
    }
}
