//! Fuzzes the handshake: a server or a client `Connection` fed arbitrary bytes from its peer.
//! The logic is shared with `steadfast/tests/fuzz_corpus.rs`, which replays the corpus in CI.
#![no_main]

#[allow(dead_code)]
#[path = "../../steadfast/tests/fuzz_logic/mod.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::handshake(data));
