//! Fuzzes a client and a server driven by a random sequence of operations, with invariants.
//! The logic is shared with `steadfast/tests/fuzz_corpus.rs`, which replays the corpus in CI.
#![no_main]

#[allow(dead_code)]
#[path = "../../steadfast/tests/fuzz_logic/mod.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::connection_ops(data));
