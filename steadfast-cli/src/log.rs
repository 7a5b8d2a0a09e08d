//! The log on stderr: timestamped lines (or JSON objects), filtered by `RUST_LOG` (or its
//! alias `STEADFAST_LOG`), `info` by default; colours only on a terminal. Where the server
//! listens is logged whatever the filter: scripts wait for that line.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// A timestamped line of text.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// The target of the `listening on ADDR` lines, always let through.
pub(crate) const LISTENING: &str = "listening";

/// Installs the log; says on stderr when the filter in the environment is unusable.
pub(crate) fn init(format: LogFormat) {
    let (filter, bad) = filter();
    let filter = match format!("{LISTENING}=info").parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some((var, e)) = bad {
        tracing::warn!("{var} is not a log filter ({e}); logging at info");
    }
}

/// `RUST_LOG`, else `STEADFAST_LOG`, else `info`; and the variable that did not parse.
fn filter() -> (EnvFilter, Option<(&'static str, String)>) {
    for var in ["RUST_LOG", "STEADFAST_LOG"] {
        if let Ok(v) = std::env::var(var) {
            return match EnvFilter::try_new(&v) {
                Ok(f) => (f, None),
                Err(e) => (EnvFilter::new("info"), Some((var, e.to_string()))),
            };
        }
    }
    (EnvFilter::new("info"), None)
}
