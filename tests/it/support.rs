//! Starting agents and talking HTTP to them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The `caravan` binary next to this test binary (`target/<profile>/caravan`).
pub fn caravan_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let bin = dir.join("caravan");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p caravan-agent)",
        bin.display()
    );
    bin
}

/// A port nobody listens on right now, for TCP and UDP alike (see [`ports`]).
pub fn free_port() -> u16 {
    ports::take()
}

/// A free UDP port on 127.0.0.1 (for the gossip socket); the same allocator as [`free_port`],
/// whose ports are free for both.
pub fn free_udp_port() -> u16 {
    ports::take()
}

/// The ports tests give the agents they start.
///
/// A port chosen free is bound later, by another process, so three things could take it in
/// between: an outgoing connection's local port (the kernel draws those from its ephemeral
/// range), another pick in this process, and a pick in another test process (nextest runs one
/// process per test, several at once). So ports are drawn *below* the ephemeral range, never
/// twice in a process, and each is reserved across processes by an exclusive lock on a file
/// named after it, held until this process exits (the kernel drops the lock then, even on a
/// crash).
pub mod ports {
    use std::collections::HashSet;
    use std::fs::File;
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// The ports this process has taken, and the locks that reserve them.
    static TAKEN: Mutex<(Vec<File>, Option<HashSet<u16>>)> = Mutex::new((Vec::new(), None));

    /// How many candidates one pick tries before it gives up.
    const TRIES: usize = 2_000;

    /// A port below the ephemeral range, free for TCP and UDP on 127.0.0.1, reserved for this
    /// process.
    pub fn take() -> u16 {
        let (low, high) = range();
        let dir = lock_dir();
        let mut rng = seed();
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..TRIES {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let port = low + (rng % u64::from(high - low)) as u16;
            if taken.1.get_or_insert_with(HashSet::new).contains(&port) {
                continue;
            }
            let Some(lock) = reserve(&dir, port) else {
                continue;
            };
            if !free_for_both(port) {
                continue;
            }
            taken.0.push(lock);
            taken.1.get_or_insert_with(HashSet::new).insert(port);
            return port;
        }
        panic!("no free port in {low}..{high} after {TRIES} tries");
    }

    /// `[low, high)`: the 16,384 ports just below the kernel's ephemeral range.
    pub fn range() -> (u16, u16) {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        let high = ephemeral_low.max(2_048);
        (high.saturating_sub(16_384).max(1_024), high)
    }

    fn lock_dir() -> PathBuf {
        let dir = std::env::temp_dir().join("caravan-it-ports");
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// The lock on `port`'s file, if no other live process holds it.
    fn reserve(dir: &std::path::Path, port: u16) -> Option<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .ok()?;
        file.try_lock().ok()?;
        Some(file)
    }

    fn free_for_both(port: u16) -> bool {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
    }

    fn seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        (nanos ^ (u64::from(std::process::id()) << 32)) | 1
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn ports_are_below_the_ephemeral_range_distinct_and_reserved() {
            let (low, high) = range();
            let mut seen = HashSet::new();
            for _ in 0..64 {
                let port = take();
                assert!((low..high).contains(&port), "{port} outside {low}..{high}");
                assert!(seen.insert(port), "{port} handed out twice");
                // Another process's attempt is another open file description: it must fail.
                assert!(
                    reserve(&lock_dir(), port).is_none(),
                    "{port} is not reserved"
                );
            }
            let (ephemeral_low, _) =
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                    .ok()
                    .and_then(|s| {
                        let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
                        Some((it.next()??, it.next()??))
                    })
                    .unwrap_or((32_768, 60_999));
            assert!(high <= ephemeral_low.max(2_048));
        }
    }
}

/// A unique scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "caravan-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path.to_string_lossy().into_owned()
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three ports of an agent.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub http: u16,
    pub rpc: u16,
    pub serf: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            http: free_port(),
            rpc: free_port(),
            serf: free_udp_port(),
        }
    }

    pub fn hcl(&self) -> String {
        format!(
            "ports {{\n  http = {}\n  rpc = {}\n  serf = {}\n}}\n",
            self.http, self.rpc, self.serf
        )
    }
}

/// A running agent, killed on drop.
pub struct Agent {
    pub child: Child,
    pub http: SocketAddr,
    pub rpc: SocketAddr,
    pub serf: SocketAddr,
    pub ports: Ports,
    /// Holds the config file for the agent's lifetime.
    _scratch: Scratch,
}

/// The ports block for a fresh agent plus the addresses it will listen on.
pub fn ports_hcl() -> (String, SocketAddr, SocketAddr) {
    let (http, rpc, serf) = (free_port(), free_port(), free_port());
    let hcl = format!("ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n");
    (
        hcl,
        SocketAddr::from(([127, 0, 0, 1], http)),
        SocketAddr::from(([127, 0, 0, 1], rpc)),
    )
}

impl Agent {
    /// `caravan agent -dev` with `extra_hcl` merged over free ports. Without ACLs it waits
    /// (bounded) for the Raft leader, settled workers and the registered dev node. With ACLs on
    /// (`extra_hcl` enables them) nobody holds a token yet: it waits for the leader only (which
    /// bootstrap needs) and the caller waits for the node with [`Agent::wait_node_as`].
    pub async fn dev(extra_hcl: &str) -> Agent {
        let agent = Agent::start(&["-dev"], extra_hcl).await;
        if agent.acl_enabled().await {
            agent.wait_raft_leader().await;
        } else {
            agent.wait_leader().await;
            agent.wait_node().await;
        }
        agent
    }

    /// Whether ACLs are on: `/v1/acl/token/self` without a token answers 400 "ACL support
    /// disabled" when they are off and 403 "ACL token not found" when they are on.
    pub async fn acl_enabled(&self) -> bool {
        let r = self.get("/v1/acl/token/self").await;
        match (r.status, r.text().as_str()) {
            (400, "ACL support disabled") => false,
            (403, _) => true,
            (status, text) => panic!("/v1/acl/token/self answered {status}: {text}"),
        }
    }

    /// Waits (bounded) until the local client node is registered, reading `/v1/nodes` without a
    /// token (an agent without ACLs).
    pub async fn wait_node(&self) {
        self.wait_node_as(None).await
    }

    /// Waits (bounded) until `/v1/nodes`, read with `token`, lists a node. A refusal is a
    /// failure, not an answer: the node cannot be seen, so it is not known to be there.
    pub async fn wait_node_as(&self, token: Option<&str>) {
        let headers: Vec<(&str, &str)> = token
            .map(|t| vec![("X-Nomad-Token", t)])
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        while Instant::now() < deadline {
            match call(self.http, "GET", "/v1/nodes", &headers, Bytes::new()).await {
                Ok(r) if r.status == 200 && r.json().as_array().is_some_and(|a| !a.is_empty()) => {
                    return;
                }
                Ok(r) if r.status == 403 => {
                    panic!(
                        "/v1/nodes refused the token ({}): wait with one that may read nodes",
                        r.text()
                    )
                }
                Ok(r) => last = format!("{}: {}", r.status, r.text()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the node did not register within 15 s (last answer {last})");
    }

    /// Waits (bounded: 30 s, as the raft and fault tests wait for an election of three
    /// servers on a loaded machine) until this server knows a Raft leader (`/v1/status/leader`
    /// needs no token; enough to bootstrap ACLs).
    pub async fn wait_raft_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if get(self.http, "/v1/status/leader")
                .await
                .is_ok_and(|r| r.status == 200 && r.text().len() > 2)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no Raft leader on {} within 30 s", self.http);
    }

    /// Waits (bounded) until this server knows a Raft leader and its workers have settled
    /// (an agent without ACLs).
    pub async fn wait_leader(&self) {
        self.wait_leader_as(None).await
    }

    /// Like [`Agent::wait_leader`], reading the workers with `token`. A refused read of the
    /// workers is a failure (their state is unknown), not "settled".
    pub async fn wait_leader_as(&self, token: Option<&str>) {
        self.wait_raft_leader().await;
        let headers: Vec<(&str, &str)> = token
            .map(|t| vec![("X-Nomad-Token", t)])
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::new();
        while Instant::now() < deadline {
            match call(
                self.http,
                "GET",
                "/v1/agent/schedulers",
                &headers,
                Bytes::new(),
            )
            .await
            {
                Ok(r) if r.status == 403 => {
                    panic!(
                        "/v1/agent/schedulers refused the token ({}): wait with one that may read the agent",
                        r.text()
                    )
                }
                Ok(r) if r.status == 200 => {
                    let text = r.text();
                    if !text.contains("Pausing") && !text.contains("Resuming") {
                        return;
                    }
                    last = text;
                }
                Ok(r) => last = format!("{}: {}", r.status, r.text()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the workers on {} did not settle within 15 s: {last}",
            self.http
        );
    }

    /// `caravan agent <args> -config=<ports + extra_hcl>`, waiting until HTTP answers.
    pub async fn start(args: &[&str], extra_hcl: &str) -> Agent {
        Agent::start_at(Ports::free(), args, extra_hcl).await
    }

    /// Like [`Agent::start`] on the given ports (to restart an agent where it was).
    pub async fn start_at(ports: Ports, args: &[&str], extra_hcl: &str) -> Agent {
        Agent::start_env(ports, args, extra_hcl, &[]).await
    }

    /// Like [`Agent::start_at`] with extra environment variables.
    pub async fn start_env(
        ports: Ports,
        args: &[&str],
        extra_hcl: &str,
        env: &[(&str, &str)],
    ) -> Agent {
        let scratch = Scratch::new();
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (http, rpc, serf) = (local(ports.http), local(ports.rpc), local(ports.serf));
        let config = scratch.write("agent.hcl", &format!("{}{extra_hcl}", ports.hcl()));
        let child = Command::new(caravan_bin())
            .arg("agent")
            .args(args)
            .arg(format!("-config={config}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn caravan");
        let mut agent = Agent {
            child,
            http,
            rpc,
            serf,
            ports,
            _scratch: scratch,
        };
        agent.wait_ready().await;
        agent
    }

    /// `caravan agent -dev` with TLS settings; readiness is the process staying up while its
    /// HTTPS port accepts TCP connections.
    pub async fn start_tls(extra_hcl: &str, _keep: &Scratch) -> Agent {
        let scratch = Scratch::new();
        let ports = Ports::free();
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let config = scratch.write("agent.hcl", &format!("{}{extra_hcl}", ports.hcl()));
        let mut child = Command::new(caravan_bin())
            .args(["agent", "-dev", &format!("-config={config}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn caravan");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("caravan exited early: {status}: {err}");
            }
            if tokio::net::TcpStream::connect(local(ports.http))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "caravan did not listen within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Agent {
            child,
            http: local(ports.http),
            rpc: local(ports.rpc),
            serf: local(ports.serf),
            ports,
            _scratch: scratch,
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut log = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut log);
                }
                panic!("caravan exited early: {status}\n{log}");
            }
            if get(self.http, "/v1/agent/health").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("caravan did not answer on {} within 15 s", self.http);
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(self.http, path).await.expect("request")
    }

    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        call(self.http, method, path, headers, Bytes::new())
            .await
            .expect("request")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<Resp, String> {
    call(addr, "GET", path, &[], Bytes::new()).await
}

/// A request with an optional `X-Nomad-Token` and a JSON body (`null`: none). A transport
/// failure comes back as status 0 with the error as the body.
pub async fn send(
    agent: &Agent,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> Resp {
    let headers: Vec<(&str, &str)> = token
        .map(|t| vec![("X-Nomad-Token", t)])
        .unwrap_or_default();
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    call(agent.http, method, path, &headers, body)
        .await
        .unwrap_or_else(|e| Resp {
            status: 0,
            headers: Default::default(),
            body: e.into_bytes(),
        })
}

/// One HTTP/1.1 request on a new connection, bounded to 10 s.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Runs `caravan <args>` to completion (bounded to 20 s) and returns its output.
pub fn run_caravan(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(caravan_bin())
        .args(args)
        .env_remove("NOMAD_ADDR")
        .env_remove("NOMAD_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn caravan");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("caravan {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `caravan <args>` against the agent at `http` (as `NOMAD_ADDR`, plus `env`), off the
/// async workers.
pub async fn cli(http: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("NOMAD_ADDR".into(), format!("http://{http}")));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_caravan(&args, &env)
    })
    .await
    .expect("caravan subcommand")
}

/// Asserts a subcommand succeeded and returns its stdout.
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 50 ms until it yields a value; panics with `what` (and the last
/// reason `check` gave) after `limit`.
pub(crate) async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) => assert!(
                started.elapsed() < limit,
                "{what} not within {limit:?}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
