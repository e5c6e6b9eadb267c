//! Cheaper producers for s3-export. SQS bills a request per 64 KiB of
//! payload and a message holds up to 256 KiB, so one event per message pays
//! for a whole request per event; this crate packs many events (NDJSON) into
//! each message, compresses them (the batcher's `content-encoding`
//! attribute), and sends up to ten messages per `SendMessageBatch`,
//! retrying the entries SQS fails.
//!
//! [`pack`] is pure (events in, message bodies out); [`send`] talks to SQS.

pub mod pack;
pub mod send;

pub use pack::{Message, PackError, PackOptions, batches, pack};
pub use send::{FailedMessage, SendOptions, SendReport, send};
