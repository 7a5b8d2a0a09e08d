//! The `steadfast` command-line tool.
//!
//! Only `--help` and `--version` work yet: the commands (`serve`, `send`, `connect`, `bench`,
//! `chaos`, `cert`, `demo`) arrive with the runtime.

use clap::Parser;

/// Exactly-once, in-order, acknowledged messaging over TCP that survives connection loss.
#[derive(Parser, Debug)]
#[command(name = "steadfast", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("steadfast: no commands yet; the protocol core is in the library (see README.md)");
    std::process::exit(2);
}
