//! `steadfast chaos`: the library's fault proxy on the command line.

use std::process::ExitCode;
use std::time::Duration;

use steadfast::chaos::{Chaos, ChaosConfig};

use crate::{ChaosArgs, fail, stop_signal};

pub(crate) async fn run(a: ChaosArgs) -> ExitCode {
    let upstream = match tokio::net::lookup_host(&a.upstream)
        .await
        .map(|mut i| i.next())
    {
        Ok(Some(u)) => u,
        Ok(None) | Err(_) => return fail(format!("invalid upstream address {:?}", a.upstream)),
    };
    let config = ChaosConfig {
        seed: a.seed,
        bytes: (a.min_bytes, a.max_bytes.max(a.min_bytes)),
        interval: a.interval_ms.map(Duration::from_millis),
        stall_per_mille: a.stall_per_mille,
        stall_for: Duration::from_secs(a.stall_secs),
        reset_per_mille: a.reset_per_mille,
        max_stalls: None,
    };
    let mut chaos = match Chaos::start(&a.listen, upstream, config).await {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot listen on {}: {e}", a.listen)),
    };
    eprintln!(
        "chaos proxy on {} -> {upstream} (seed {}); Ctrl-C to stop",
        chaos.local_addr(),
        a.seed
    );
    let Some(mut faults) = chaos.faults() else {
        return fail("fault stream unavailable");
    };
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            f = faults.recv() => match f {
                Some(f) => {
                    use std::io::Write;
                    let line = format!(
                        "fault: {:?} on connection {} after {} bytes",
                        f.kind, f.connection, f.after_bytes
                    );
                    // The reader of stdout went away (`chaos | head -1`): stop quietly.
                    let mut out = std::io::stdout().lock();
                    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            return ExitCode::from(crate::EXIT_BROKEN_PIPE);
                        }
                        return fail(format!("writing to stdout: {e}"));
                    }
                }
                None => break,
            },
        }
    }
    ExitCode::SUCCESS
}
