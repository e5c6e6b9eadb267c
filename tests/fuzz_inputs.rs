//! The fuzz targets' checks (`fuzz/fuzz_targets/checks.rs`) on seeded
//! structured random inputs, bounded for CI: mutations (byte flips, JSON
//! tokens and field names inserted, cuts, splices) of the fixtures, the
//! sample events' bodies and a generated workload, plus any saved fuzz
//! inputs (`fuzz/corpus/`, `fuzz/artifacts/` after a `scripts/fuzz.sh` run).
//! The coverage-guided libFuzzer runs of the same checks are
//! `scripts/fuzz.sh`. `FUZZ_SEED` and `FUZZ_ITERATIONS` change the run.

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::Path;

use s3_export::workload::{self, StreamMix, WorkloadSpec};

const TOKENS: [&str; 24] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "\n",
    "\u{feff}",
    "..",
    "/",
    "\\u0000",
    "1e999",
    "-0",
    "\"organizationId\":",
    "\"eventTime\":",
    "\"type\":",
    "\"ORGANIZATION_ID\":",
    "\"EVENT_TIME\":",
    "\"EVENT_ID\":",
    "\"TopicArn\":\"arn:x\"",
    "\"Type\":\"Notification\"",
    "\"Message\":",
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn files_under(dir: &Path, into: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, into);
        } else if let Ok(bytes) = std::fs::read(&path) {
            into.push(bytes);
        }
    }
}

/// The starting inputs: fixtures, sample event bodies, a workload's bodies,
/// saved fuzz inputs.
fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = Vec::new();
    files_under(&root.join("tests/fixtures"), &mut seeds);
    files_under(&root.join("fuzz/corpus"), &mut seeds);
    files_under(&root.join("fuzz/artifacts"), &mut seeds);
    let mut events = Vec::new();
    files_under(&root.join("events"), &mut events);
    for event in events {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&event) else {
            continue;
        };
        for record in value["Records"].as_array().into_iter().flatten() {
            if let Some(body) = record["body"].as_str() {
                seeds.push(body.as_bytes().to_vec());
            }
        }
    }
    let generated = workload::generate(&WorkloadSpec {
        events: 200,
        tenants: 3,
        seed: 3,
        now_millis: 1_795_338_000_000,
        spread_millis: workload::HOUR_MILLIS,
        streams: StreamMix::Both,
    });
    seeds.extend(generated.messages.into_iter().map(|m| m.body.into_bytes()));
    seeds
}

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.usize(..seeds.len())].clone();
    for _ in 0..rng.usize(1..5) {
        let at = rng.usize(..=input.len());
        match rng.u8(..6) {
            0 if !input.is_empty() => {
                let i = rng.usize(..input.len());
                input[i] ^= 1 << rng.u8(..8);
            }
            1 => {
                let token = TOKENS[rng.usize(..TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            2 => input.truncate(at),
            3 => {
                let other = &seeds[rng.usize(..seeds.len())];
                let from = rng.usize(..=other.len());
                input.splice(at..at, other[from..].iter().copied());
            }
            4 => {
                let byte = rng.u8(..);
                input.splice(at..at, std::iter::repeat_n(byte, rng.usize(1..8)));
            }
            _ => {
                if at < input.len() {
                    input.remove(at);
                }
            }
        }
    }
    input
}

/// Inputs that once failed a check (`fuzz/regressions/<target>/`), and any
/// crash a local libFuzzer run left in `fuzz/artifacts/<target>/`.
fn saved(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Vec::new();
    files_under(&root.join("fuzz/regressions").join(target), &mut inputs);
    files_under(&root.join("fuzz/artifacts").join(target), &mut inputs);
    inputs
}

#[test]
fn saved_fuzz_inputs_pass_their_checks() {
    let batches = saved("batch");
    assert!(!batches.is_empty(), "the committed regressions are missing");
    for input in &batches {
        checks::check_batch(input);
    }
    for input in saved("record") {
        checks::check_record(&input);
    }
}

#[test]
fn record_checks_hold_on_seeded_random_bodies() {
    let seeds = seeds();
    let mut rng = fastrand::Rng::with_seed(env_number("FUZZ_SEED", 10));
    for seed in &seeds {
        checks::check_record(seed);
    }
    for _ in 0..env_number("FUZZ_ITERATIONS", 20_000) {
        checks::check_record(&mutate(&mut rng, &seeds));
    }
}

#[test]
fn batch_checks_hold_on_seeded_random_batches() {
    let seeds = seeds();
    let mut rng = fastrand::Rng::with_seed(env_number("FUZZ_SEED", 10));
    for _ in 0..env_number("FUZZ_ITERATIONS", 20_000) / 10 {
        let mut batch = Vec::new();
        for n in 0..rng.usize(1..=10) {
            if n > 0 {
                batch.push(0xFF);
            }
            batch.push(rng.u8(..));
            batch.extend(mutate(&mut rng, &seeds));
        }
        checks::check_batch(&batch);
    }
}
