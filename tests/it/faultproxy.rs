//! A userspace fault proxy between real agents: cut, delay and drop chosen links, per direction,
//! for gossip (UDP and the TCP member-list exchanges on the same port) and RPC (TCP), with no
//! root and no address but 127.0.0.1.
//!
//! Every server `i` listens on its real ports but advertises proxy ports (`advertise { rpc serf
//! }`), so its peers reach it only through the proxy. Gossip binds senders to their address (a
//! datagram whose claimed identity has another address than its source is dropped as spoofed),
//! so the proxy owns one UDP socket per server at that server's advertised address: a datagram
//! from server `i`'s real socket that arrives at `j`'s proxy socket is sent on to `j`'s real
//! socket *from `i`'s proxy socket*, and `j` sees it come from `i`'s advertised address, as
//! without the proxy. The sender is known by its source port (each server has one gossip socket).
//!
//! TCP connections come from ephemeral ports, so the proxy finds who opened one by the socket's
//! inode: `/proc/net/tcp` gives the inode of the connecting socket, and the server whose
//! `/proc/<pid>/fd` holds it is the sender. A connection nobody owns is closed.
//!
//! A cut link passes nothing: datagrams are dropped, and TCP bytes are held (the proxy stops
//! reading, so the sender's writes back up as they would behind a dead route) until the link
//! heals. A lossy link drops that share of datagrams and holds a TCP chunk for a retransmission
//! time (200 ms) with the same probability: TCP loses no bytes, it delivers them late.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// What happens on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fault {
    /// Nothing passes.
    pub cut: bool,
    /// The share of datagrams dropped (and of TCP chunks held for a retransmission time).
    pub drop: f64,
    /// Added to every datagram and TCP chunk.
    pub delay: Duration,
}

/// The retransmission time a "lost" TCP chunk waits.
const TCP_RETRANSMIT: Duration = Duration::from_millis(200);

/// How often a held TCP chunk looks whether its link healed.
const HOLD_POLL: Duration = Duration::from_millis(20);

/// How long the proxy looks for the owner of a new TCP connection (the server may not have been
/// registered yet while it joins).
const OWNER_WAIT: Duration = Duration::from_secs(5);

/// One server's addresses: the real ones it listens on and the proxy ones it advertises.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    pub real_serf: SocketAddr,
    pub real_rpc: SocketAddr,
    pub proxy_serf: SocketAddr,
    pub proxy_rpc: SocketAddr,
}

struct Inner {
    nodes: Vec<Endpoints>,
    pids: Mutex<Vec<Option<u32>>>,
    faults: Mutex<HashMap<(usize, usize), Fault>>,
    /// One UDP socket per server, at its advertised gossip address.
    udp: Vec<Arc<UdpSocket>>,
    rng: AtomicU64,
    /// Datagrams and connections passed on, datagrams dropped by a fault, TCP chunks held by
    /// one, datagrams or connections from nobody known.
    forwarded: AtomicU64,
    dropped: AtomicU64,
    held: AtomicU64,
    unknown: AtomicU64,
}

/// The proxy for a set of servers; its tasks run on the test's runtime until it is dropped.
pub struct Net {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A UDP socket and a TCP listener on one free port of 127.0.0.1.
async fn udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP in 100 tries");
}

impl Net {
    /// Proxies for `n` servers, with their real ports chosen free; nothing is cut.
    pub async fn start(n: usize) -> Net {
        let mut udp = Vec::new();
        let mut serf_listeners = Vec::new();
        let mut rpc_listeners = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..n {
            let (u, t) = udp_and_tcp().await;
            let rpc = TcpListener::bind("127.0.0.1:0").await.expect("bind RPC");
            let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
            nodes.push(Endpoints {
                real_serf: local(crate::support::free_udp_port()),
                real_rpc: local(crate::support::free_port()),
                proxy_serf: u.local_addr().expect("address"),
                proxy_rpc: rpc.local_addr().expect("address"),
            });
            udp.push(Arc::new(u));
            serf_listeners.push(t);
            rpc_listeners.push(rpc);
        }
        let seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        let inner = Arc::new(Inner {
            nodes,
            pids: Mutex::new(vec![None; n]),
            faults: Mutex::new(HashMap::new()),
            udp,
            rng: AtomicU64::new(seed | 1),
            dropped: AtomicU64::new(0),
            held: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let mut tasks = Vec::new();
        for j in 0..n {
            tasks.push(tokio::spawn(udp_loop(inner.clone(), j)));
        }
        for (j, l) in serf_listeners.into_iter().enumerate() {
            let to = inner.nodes[j].real_serf;
            tasks.push(tokio::spawn(tcp_accept(inner.clone(), j, l, to)));
        }
        for (j, l) in rpc_listeners.into_iter().enumerate() {
            let to = inner.nodes[j].real_rpc;
            tasks.push(tokio::spawn(tcp_accept(inner.clone(), j, l, to)));
        }
        Net { inner, tasks }
    }

    /// Server `i`'s addresses.
    pub fn endpoints(&self, i: usize) -> Endpoints {
        self.inner.nodes[i]
    }

    /// Tells the proxy which process is server `i` (how TCP senders are found); `None` once it
    /// stopped.
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.inner.pids.lock().expect("pids")[i] = pid;
    }

    /// Sets the fault on the directed link `from` → `to`.
    pub fn set(&self, from: usize, to: usize, fault: Fault) {
        let mut faults = self.inner.faults.lock().expect("faults");
        if fault == Fault::default() {
            faults.remove(&(from, to));
        } else {
            faults.insert((from, to), fault);
        }
    }

    /// Sets `fault` both ways between every server of `a` and every server of `b`.
    pub fn between(&self, a: &[usize], b: &[usize], fault: Fault) {
        for &x in a {
            for &y in b {
                self.set(x, y, fault);
                self.set(y, x, fault);
            }
        }
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.between(
            a,
            b,
            Fault {
                cut: true,
                ..Fault::default()
            },
        );
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.inner.faults.lock().expect("faults").clear();
    }

    /// What the proxy did so far, for a scenario's log.
    pub fn counters(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let i = &self.inner;
        format!(
            "{} datagrams and connections passed, {} datagrams dropped, {} TCP chunks held, {} from nobody known",
            n(&i.forwarded),
            n(&i.dropped),
            n(&i.held),
            n(&i.unknown)
        )
    }
}

impl Inner {
    fn fault(&self, from: usize, to: usize) -> Fault {
        self.faults
            .lock()
            .expect("faults")
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// A uniform draw in [0, 1) (xorshift64*; the proxy needs no better).
    fn draw(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Waits while `from` → `to` is cut; then applies its delay and loss to one TCP chunk.
    async fn pass_tcp(&self, from: usize, to: usize) {
        let mut held = false;
        loop {
            let f = self.fault(from, to);
            let mut wait = f.delay;
            if f.drop > 0.0 && self.draw() < f.drop {
                wait += TCP_RETRANSMIT;
            }
            if !f.cut && wait.is_zero() {
                return;
            }
            if !held {
                self.held.fetch_add(1, Ordering::Relaxed);
                held = true;
            }
            if f.cut {
                tokio::time::sleep(HOLD_POLL).await;
                continue;
            }
            tokio::time::sleep(wait).await;
            // Cut while it waited: hold it again.
            if !self.fault(from, to).cut {
                return;
            }
        }
    }

    /// The server whose process holds the TCP socket that connected from `peer` to `local`.
    fn owner(&self, peer: SocketAddr, local: SocketAddr) -> Option<usize> {
        let inode = socket_inode(peer, local)?;
        let want = format!("socket:[{inode}]");
        let pids = self.pids.lock().expect("pids").clone();
        pids.iter().enumerate().find_map(|(i, pid)| {
            let dir = std::fs::read_dir(format!("/proc/{}/fd", (*pid)?)).ok()?;
            dir.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
                .then_some(i)
        })
    }
}

/// The inode of the IPv4 TCP socket bound at `peer` and connected to `local`, from
/// `/proc/net/tcp`.
fn socket_inode(peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (p, l) = (hex(peer), hex(local));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == p && f[2] == l)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Datagrams arriving at server `to`'s advertised gossip address.
async fn udp_loop(inner: Arc<Inner>, to: usize) {
    let socket = inner.udp[to].clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, src)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some(from) = inner.nodes.iter().position(|e| e.real_serf == src) else {
            inner.unknown.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let f = inner.fault(from, to);
        if f.cut || (f.drop > 0.0 && inner.draw() < f.drop) {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        inner.forwarded.fetch_add(1, Ordering::Relaxed);
        let out = inner.udp[from].clone();
        let dest = inner.nodes[to].real_serf;
        let packet = buf[..len].to_vec();
        if f.delay.is_zero() {
            let _ = out.send_to(&packet, dest).await;
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(f.delay).await;
                let _ = out.send_to(&packet, dest).await;
            });
        }
    }
}

/// Connections arriving at one of server `to`'s advertised TCP addresses, passed on to `real`.
async fn tcp_accept(inner: Arc<Inner>, to: usize, listener: TcpListener, real: SocketAddr) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(HOLD_POLL).await;
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let local = stream.local_addr().expect("local address");
            let started = tokio::time::Instant::now();
            let from = loop {
                if let Some(i) = inner.owner(peer, local) {
                    break i;
                }
                if started.elapsed() > OWNER_WAIT {
                    inner.unknown.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let Ok(upstream) = TcpStream::connect(real).await else {
                return;
            };
            inner.forwarded.fetch_add(1, Ordering::Relaxed);
            let (down_r, down_w) = stream.into_split();
            let (up_r, up_w) = upstream.into_split();
            let a = tokio::spawn(pump(inner.clone(), from, to, down_r, up_w));
            let b = tokio::spawn(pump(inner, to, from, up_r, down_w));
            let _ = tokio::join!(a, b);
        });
    }
}

/// Copies one direction of a connection, chunk by chunk, through the link's fault.
async fn pump(
    inner: Arc<Inner>,
    from: usize,
    to: usize,
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        inner.pass_tcp(from, to).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram from server 1's real socket to server 0's advertised address arrives at
    /// server 0's real socket from server 1's advertised address; one sent while 1 → 0 is cut
    /// never arrives (the next one after the heal is the first to).
    #[tokio::test]
    async fn datagrams_keep_the_senders_advertised_address_and_a_cut_drops_them() {
        let net = Net::start(2).await;
        let (e0, e1) = (net.endpoints(0), net.endpoints(1));
        let s0 = UdpSocket::bind(e0.real_serf).await.expect("bind 0");
        let s1 = UdpSocket::bind(e1.real_serf).await.expect("bind 1");
        let mut buf = [0u8; 16];
        let recv = async |buf: &mut [u8]| {
            tokio::time::timeout(Duration::from_secs(10), s0.recv_from(buf))
                .await
                .expect("a datagram within 10 s")
                .expect("recv")
        };
        s1.send_to(b"one", e0.proxy_serf).await.expect("send");
        let (n, from) = recv(&mut buf).await;
        assert_eq!((&buf[..n], from), (&b"one"[..], e1.proxy_serf));

        net.partition(&[0], &[1]);
        s1.send_to(b"lost", e0.proxy_serf).await.expect("send");
        // Healed once the proxy has seen it (bounded); the next one is sent after it, so if the
        // cut had passed it, it would arrive first.
        let started = std::time::Instant::now();
        while net.inner.dropped.load(Ordering::Relaxed) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not seen in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        net.heal();
        s1.send_to(b"two", e0.proxy_serf).await.expect("send");
        let (n, _) = recv(&mut buf).await;
        assert_eq!(&buf[..n], b"two");
        assert!(
            net.counters().contains("1 datagrams dropped"),
            "{}",
            net.counters()
        );
    }

    /// A connection is owned by the server whose process holds its socket, and by nobody when
    /// no registered process does.
    #[tokio::test]
    async fn a_connection_belongs_to_the_process_holding_its_socket() {
        let net = Net::start(2).await;
        let to = net.endpoints(0).proxy_rpc;
        let conn = TcpStream::connect(to).await.expect("connect");
        let from = conn.local_addr().expect("address");
        assert_eq!(net.inner.owner(from, to), None, "no process registered");
        net.set_pid(1, Some(std::process::id()));
        assert_eq!(net.inner.owner(from, to), Some(1));
        net.set_pid(1, None);
        net.set_pid(0, Some(1)); // init holds no such socket
        assert_eq!(net.inner.owner(from, to), None);
    }
}
