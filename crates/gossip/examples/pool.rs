//! A gossip pool inside another service, in about twenty lines: three members on loopback UDP
//! find each other through one seed, then one leaves gracefully. Exits non-zero if the pool does
//! not form, or the leave is not seen, within a few seconds.

use std::time::Duration;

use caravan_agent_core::member::MemberStatus;
use caravan_gossip::NodeConfig;
use caravan_gossip::udp::Gossip;

/// How long the pool may take to form, and the leave to be seen.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pool = Vec::new();
    for name in ["a", "b", "c"] {
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let mut cfg = NodeConfig::new(format!("{name}.example"), addr, 3);
        cfg.tags = Some([("service".to_string(), "demo".to_string())].into());
        pool.push(Gossip::start(cfg, addr).await?);
    }
    let seed = pool[0].local_addr().to_string();
    for member in &pool[1..] {
        let outcome = member.join(vec![seed.clone()]).await;
        println!("joined {} seed(s) {:?}", outcome.joined, outcome.errors);
    }
    let alive = |g: &Gossip| {
        let snapshot = g.snapshot();
        let up = snapshot.members.iter();
        up.filter(|m| m.status == MemberStatus::Alive).count()
    };
    if !wait_for(|| pool.iter().all(|g| alive(g) == 3)).await {
        let seen: Vec<usize> = pool.iter().map(alive).collect();
        return Err(
            format!("the pool did not form within {WAIT:?}: alive members seen {seen:?}").into(),
        );
    }
    pool[2].leave().await;
    let gone = |g: &Gossip| {
        g.snapshot()
            .members
            .iter()
            .any(|m| m.name == "c.example" && m.status != MemberStatus::Alive)
    };
    if !wait_for(|| gone(&pool[0])).await {
        return Err(format!("c.example's leave not seen by a.example within {WAIT:?}").into());
    }
    for m in &pool[0].snapshot().members {
        println!(
            "{} {}:{} {} {:?}",
            m.name,
            m.addr.map(|a| a.to_string()).unwrap_or_default(),
            m.port,
            m.status.as_str(),
            m.tags
        );
    }
    Ok(())
}

/// Polls `done` every 50 ms for at most [`WAIT`].
async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}
