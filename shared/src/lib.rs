//! The core shared by s3-export's Lambda functions. Everything here except
//! [`load`] and [`telemetry`] is a pure function of its inputs, so it is
//! tested without AWS.

pub mod alert;
pub mod config;
pub mod config_source;
pub mod content_encoding;
pub mod cross_account;
pub mod decode;
pub mod dedup;
pub mod destination_write;
pub mod diagnose;
pub mod encode;
pub mod export_options;
pub mod interval;
pub mod json_scan;
pub mod key_layout;
pub mod layout;
pub mod listing;
pub mod load;
pub mod manifest;
pub mod partition;
pub mod policy;
pub mod profile;
pub mod provenance;
pub mod rejection;
pub mod senders;
pub mod staged;
pub mod telemetry;
pub mod time;

pub use config::{Config, ConfigError};
