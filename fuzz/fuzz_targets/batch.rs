//! libFuzzer target: the batcher's plan on arbitrary batches (see `checks.rs`).
#![no_main]

#[allow(dead_code)] // each target uses one of the checks
#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_batch(data));
