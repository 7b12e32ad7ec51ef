//! Embedding Caravan's configuration rules in another tool: parse Nomad-style HCL (HCL1 map blocks
//! included), merge a second source over it, and resolve defaults and validation.

use caravan_agent_core::config::{
    AgentConfig, Format, HostFacts, merge_trees, parse_config, tree_to_file,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = r#"
data_dir = "/var/lib/caravan"
server {
  enabled          = true
  bootstrap_expect = 3
}
client {
  enabled = true
  meta { "rack" = "r1" }
}
"#;
    let overrides =
        r#"{"region": "eu", "server": {"server_join": {"retry_join": ["10.0.0.2:4648"]}}}"#;

    let mut tree = parse_config("base.hcl", base, Format::Hcl)?.tree;
    merge_trees(
        &mut tree,
        parse_config("overrides.json", overrides, Format::Json)?.tree,
    );
    let host = HostFacts {
        hostname: "node-a".into(),
        num_cpus: 4,
        private_ip: "10.0.0.1".parse()?,
    };
    let config = AgentConfig::resolve(tree_to_file(&tree)?, false, &host, vec![])?;
    println!(
        "{} in {}: rpc advertised at {}, {} schedulers, meta {:?}, retry_join {:?}",
        config.member_name(),
        config.datacenter,
        config.advertise.rpc,
        config.server.num_schedulers,
        config.client.meta,
        config.server.server_join.retry_join,
    );

    // Errors name the source, the line and the key path.
    match parse_config("bad.hcl", "server {\n  bogus = 1\n}\n", Format::Hcl) {
        Err(err) => println!("rejected: {err}"),
        Ok(_) => return Err("an unknown key was accepted".into()),
    }
    Ok(())
}
