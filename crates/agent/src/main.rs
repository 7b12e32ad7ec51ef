//! `caravan`: a Nomad-compatible agent. `caravan agent -dev` runs one; the other subcommands talk
//! to a running agent's HTTP API. The agent is the `caravan_agent` library; this is its
//! allocator and entry point.

use std::process::ExitCode;

/// jemalloc as the allocator, with sampled heap profiling on (one sample per 512 KiB allocated),
/// so `/v1/agent/pprof/heap` has data from the start.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(target_os = "linux")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "malloc_conf")]
/// jemalloc's start-up options ([`caravan_agent::MALLOC_CONF`]).
pub static malloc_conf: &[u8] = caravan_agent::MALLOC_CONF;

fn main() -> ExitCode {
    caravan_agent::run_cli(std::env::args())
}
