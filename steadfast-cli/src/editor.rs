//! The console's line editor, on a terminal: editing keys and a history (the up and down
//! arrows recall earlier lines). It runs on a thread of its own (reading keys blocks) and
//! hands each entered line to the session's loop through a small queue.

use std::io;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::sync::mpsc;

/// Lines kept for recall.
const HISTORY: usize = 1_000;

/// What the person at the terminal did.
pub(crate) enum Key {
    /// Entered a line.
    Line(Vec<u8>),
    /// Pressed Ctrl-C (the terminal is raw while editing, so it arrives here, not as SIGINT).
    Interrupt,
}

/// Starts the editor: entered lines and Ctrl-C come out of the receiver, which ends at
/// Ctrl-D. An error if the terminal cannot be used.
pub(crate) fn start() -> io::Result<mpsc::Receiver<Key>> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY)
        .map_err(io::Error::other)?
        .auto_add_history(true)
        .build();
    let mut editor = DefaultEditor::with_config(config).map_err(io::Error::other)?;
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        loop {
            match editor.readline("> ") {
                Ok(line) => {
                    if tx.blocking_send(Key::Line(line.into_bytes())).is_err() {
                        return;
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    // The terminal is back to normal once readline returns: a second Ctrl-C
                    // is a signal again.
                    let _ = tx.blocking_send(Key::Interrupt);
                    return;
                }
                // Ctrl-D, or the terminal went away: the end of input.
                Err(_) => return,
            }
        }
    });
    Ok(rx)
}
