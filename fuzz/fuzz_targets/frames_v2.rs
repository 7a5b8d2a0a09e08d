//! Fuzzes protocol version 2: its frames (parser and decoder, roundtrip) and a client and a
//! server with large messages in flight across cuts, resumes and hostile bytes.
//! The logic is shared with `steadfast/tests/fuzz_corpus.rs`, which replays the corpus in CI.
#![no_main]

#[allow(dead_code)]
#[path = "../../steadfast/tests/fuzz_logic/mod.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::frames_v2(data));
