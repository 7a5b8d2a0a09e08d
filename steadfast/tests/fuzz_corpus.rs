//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and the crashes kept as regressions
//! (`fuzz/artifacts-regressions/<target>/`) through the fuzz targets' logic, plus the seeds
//! that `fuzz_logic::seeds` makes, as ordinary tests: CI needs no fuzzer.
//!
//! `cargo test -p steadfast --test fuzz_corpus -- --ignored write_seed_corpus` writes the seeds
//! into `fuzz/corpus/<target>/` (before a fuzzing run).

#![allow(clippy::unwrap_used)]

mod fuzz_logic;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every input stored for `target`, with its path; the corpus must not be empty.
fn stored_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut inputs = Vec::new();
    for dir in ["corpus", "artifacts-regressions"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                inputs.push((path.display().to_string(), fs::read(&path).unwrap()));
            }
        }
    }
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} under {}",
        fuzz_dir().display()
    );
    inputs
}

/// Runs every stored input and every seed of `target` through `run`; reports all that fail.
fn replay(target: &str, run: fn(&[u8])) {
    let mut inputs = stored_inputs(target);
    inputs.extend(
        fuzz_logic::seeds()
            .into_iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, name, data)| (format!("generated {name}"), data)),
    );
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| run(data))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs of {target} fail:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
    println!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", fuzz_logic::frame_decoder);
}

#[test]
fn handshake_corpus() {
    replay("handshake", fuzz_logic::handshake);
}

#[test]
fn connection_ops_corpus() {
    replay("connection_ops", fuzz_logic::connection_ops);
}

#[test]
fn frames_v2_corpus() {
    replay("frames_v2", fuzz_logic::frames_v2);
}

/// Writes the generated seeds into `fuzz/corpus/<target>/seed-NN`.
#[test]
#[ignore = "writes files: run by hand before fuzzing"]
fn write_seed_corpus() {
    for (target, name, data) in fuzz_logic::seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    }
}

/// Runs one input, `FUZZ_FILE`, through the logic of target `FUZZ_TARGET` (to debug a crash
/// with the test build: `FUZZ_TARGET=frames_v2 FUZZ_FILE=path cargo test -p steadfast --test
/// fuzz_corpus -- --ignored --nocapture run_one_input`).
#[test]
#[ignore = "runs the input named by FUZZ_FILE"]
fn run_one_input() {
    let target = std::env::var("FUZZ_TARGET").unwrap();
    let data = fs::read(std::env::var("FUZZ_FILE").unwrap()).unwrap();
    let run: fn(&[u8]) = match target.as_str() {
        "frame_decoder" => fuzz_logic::frame_decoder,
        "handshake" => fuzz_logic::handshake,
        "connection_ops" => fuzz_logic::connection_ops,
        "frames_v2" => fuzz_logic::frames_v2,
        other => panic!("no target {other}"),
    };
    run(&data);
}
