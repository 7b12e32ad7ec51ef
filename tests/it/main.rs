//! End-to-end tests: real `caravan` processes on free 127.0.0.1 ports. Every wait is bounded.

mod acl;
mod autopilot;
mod cli;
mod clients;
mod config_errors;
mod endpoints;
mod export;
mod faultproxy;
mod faults;
mod gossip;
mod history;
mod jobs;
mod keyring;
mod lifecycle;
mod monitor;
mod nomad_config;
mod pprof;
mod raft;
mod schedulers;
mod security;
mod support;
mod tls;
