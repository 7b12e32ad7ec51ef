//! A gossip pool inside another service, in about twenty lines: three members on loopback UDP
//! find each other through one seed, then one leaves gracefully.

use std::time::Duration;

use caravan_gossip::NodeConfig;
use caravan_gossip::udp::Gossip;

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
    for _ in 0..100 {
        if pool.iter().all(|g| g.snapshot().members.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool[2].leave().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
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
