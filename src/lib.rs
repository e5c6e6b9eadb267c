//! The `s3-export` developer and operator tooling: runs the pipeline locally
//! against moto, and is the harness the integration tests in `tests/` share.

pub mod athena;
pub mod athena_cli;
pub mod cli_config;
pub mod dlq_replay;
pub mod errors_replay;
pub mod esm;
pub mod fault_proxy;
pub mod faults;
pub mod freshness;
pub mod inbox;
pub mod inspect;
pub mod inspect_cli;
pub mod local;
pub mod moto;
pub mod policy_cli;
pub mod recorder;
pub mod runtime_api;
pub mod status;
pub mod workload;
