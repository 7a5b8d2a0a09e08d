//! The console's line editor, on a terminal: editing keys and a history (the up and down
//! arrows recall earlier lines). It runs on a thread of its own (reading keys blocks) and
//! hands each entered line to the session's loop through a small queue. The console's own
//! words go through [`say!`]: above the prompt while the editor runs (it redraws the line being
//! typed), else to stderr in one write.

use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};

use rustyline::error::ReadlineError;
use rustyline::{Behavior, DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

/// Prints above the editor's prompt, once the editor runs.
static PRINTER: OnceLock<Mutex<Box<dyn ExternalPrinter + Send>>> = OnceLock::new();

/// Writes one line of the console's own (not a message): above the prompt while the line
/// editor runs, else to stderr in a single write, so that nothing else cuts into it.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::editor::say_line(format!($($arg)*))
    };
}
pub(crate) use say;

/// What [`say!`] does with its formatted line.
pub(crate) fn say_line(mut line: String) {
    line.push('\n');
    if let Some(printer) = PRINTER.get()
        && let Ok(mut printer) = printer.lock()
        && printer.print(line.clone()).is_ok()
    {
        return;
    }
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

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
        // The terminal itself, never stdout: that is for messages, and may be a file.
        .behavior(Behavior::PreferTerm)
        .build();
    let mut editor = DefaultEditor::with_config(config).map_err(io::Error::other)?;
    if let Ok(printer) = editor.create_external_printer() {
        let _ = PRINTER.set(Mutex::new(Box::new(printer)));
    }
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
