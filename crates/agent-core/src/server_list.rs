//! A client's list of server RPC addresses.

use std::net::SocketAddr;

/// The servers a client talks to. Kept sorted and free of duplicates, so readers see the order
/// Nomad reports (lexicographic by `ip:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerList {
    servers: Vec<SocketAddr>,
}

impl ServerList {
    /// A list holding `servers`.
    pub fn new(servers: impl IntoIterator<Item = SocketAddr>) -> ServerList {
        let mut list = ServerList::default();
        list.replace(servers);
        list
    }

    /// Replaces the whole list.
    pub fn replace(&mut self, servers: impl IntoIterator<Item = SocketAddr>) {
        let mut servers: Vec<SocketAddr> = servers.into_iter().collect();
        servers.sort_by_key(|s| s.to_string());
        servers.dedup();
        self.servers = servers;
    }

    /// The servers as `ip:port` strings, sorted lexicographically.
    pub fn addresses(&self) -> Vec<String> {
        self.servers.iter().map(SocketAddr::to_string).collect()
    }

    /// The servers.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Whether no server is known.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_as_strings_and_deduplicated() {
        let list = ServerList::new([
            "10.0.0.2:4647".parse().unwrap(),
            "10.0.0.10:4647".parse().unwrap(),
            "10.0.0.2:4647".parse().unwrap(),
        ]);
        assert_eq!(list.addresses(), vec!["10.0.0.10:4647", "10.0.0.2:4647"]);
        assert!(!list.is_empty());
        assert!(ServerList::default().is_empty());
    }
}
