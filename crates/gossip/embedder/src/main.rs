//! An embedder of `caravan-gossip` that uses the foca fork's own API: two foca instances with
//! Caravan's identities, one announcing itself to the other, then `Foca::member_at` (the fork's
//! O(1) lookup by address, absent from stock foca 2.0.0) finding it.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use caravan_gossip::NodeId;
use caravan_gossip::foca::{AccumulatingRuntime, Config, Foca, PostcardCodec};
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let config = Config::new_lan(NonZeroU32::MIN);
    let id_a = NodeId::new(addr(7001), "a.embedder", 1);
    let id_b = NodeId::new(addr(7002), "b.embedder", 1);
    let mut a = Foca::new(
        id_a.clone(),
        config.clone(),
        SmallRng::seed_from_u64(1),
        PostcardCodec,
    );
    let mut b = Foca::new(
        id_b.clone(),
        config,
        SmallRng::seed_from_u64(2),
        PostcardCodec,
    );
    let mut rt_a = AccumulatingRuntime::new();
    let mut rt_b = AccumulatingRuntime::new();
    b.announce(id_a.clone(), &mut rt_b)?;
    let mut delivered = 0;
    while let Some((to, packet)) = rt_b.to_send() {
        if to == id_a {
            a.handle_data(&packet, &mut rt_a)?;
            delivered += 1;
        }
    }
    // Caravan fork only: the member at an address, found through the fork's address index.
    let found = a.member_at(&id_b.addr()).map(|m| m.id().clone());
    if found.as_ref() != Some(&id_b) {
        return Err(format!("a does not know b after {delivered} packets: {found:?}").into());
    }
    println!(
        "a.embedder knows b.embedder at {} through caravan-foca",
        id_b.addr()
    );
    Ok(())
}
