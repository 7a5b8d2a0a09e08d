//! `steadfast request ADDR ROUTE [BODY]`: one request on the library's rpc, its reply to
//! stdout.

use std::process::ExitCode;
use std::time::Duration;

use steadfast::rpc::{RequestError, Router, Rpc, UNKNOWN_ROUTE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::client::{EXIT_SESSION_LOST, EXIT_TIMEOUT, Unconnected};
use crate::value::{Bin, Body};
use crate::{RequestArgs, fail};

/// What a request carries.
enum Request {
    /// Bytes, sent as MessagePack binary.
    Bytes(Vec<u8>),
    /// A JSON value, sent as the MessagePack value it denotes.
    Json(serde_json::Value),
}

pub(crate) async fn run(a: RequestArgs) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    // Ctrl-C is heard from the start: polled first below, before anything is read or sent.
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    let opened = async {
        crate::client::check_client_options(&a.addr, &a.security).map_err(fail)?;
        let request = read_request(&a).await.map_err(fail)?;
        let config =
            crate::client::client_config(a.name.clone(), &a.security, a.max_message, false)
                .map_err(fail)?;
        let client = crate::client::connect_first(&a.addr, config, Some(deadline), a.retry)
            .await
            .map_err(Unconnected::exit)?;
        Ok::<_, ExitCode>((request, client))
    };
    let (request, client) = tokio::select! {
        biased;
        () = &mut stop => {
            eprintln!("interrupted: nothing was sent");
            return ExitCode::from(crate::EXIT_INTERRUPTED);
        }
        opened = opened => match opened {
            Ok(o) => o,
            Err(code) => return code,
        },
    };
    // Replies come in through the session: an rpc with no routes of its own reads them.
    let rpc = Rpc::new(client.peer().clone(), Router::new());
    let asked = async {
        match request {
            Request::Bytes(b) => {
                rpc.request::<_, Body>(&a.route, &Bin(b), remaining(deadline))
                    .await
            }
            Request::Json(v) => rpc.request(&a.route, &v, remaining(deadline)).await,
        }
    };
    // The deadline covers sending too (a full outbox waits): the whole run is bounded.
    let reply = tokio::select! {
        r = tokio::time::timeout_at(deadline, asked) => r.unwrap_or(Err(RequestError::Timeout(Duration::from_secs(a.timeout)))),
        () = &mut stop => {
            eprintln!("interrupted: closing the session (Ctrl-C again to stop at once)");
            tokio::spawn(async {
                crate::stop_signal().await;
                std::process::exit(i32::from(crate::EXIT_INTERRUPTED));
            });
            close(&client, "interrupted").await;
            eprintln!("interrupted: no reply; the request may or may not have been handled");
            return ExitCode::from(crate::EXIT_INTERRUPTED);
        }
    };
    let code = match reply {
        Ok(v) => write(v).await,
        Err(RequestError::Handler(e)) if e == UNKNOWN_ROUTE => {
            fail(format!("{}: no handler for route {:?}", a.addr, a.route))
        }
        Err(RequestError::Handler(e)) => fail(format!("{}: {e}", a.route)),
        Err(RequestError::Timeout(_)) => {
            eprintln!(
                "error: no reply within {} (--timeout); the request may still be handled (is \
                 the server one that answers, such as `serve --exec`?)",
                crate::human::duration(Duration::from_secs(a.timeout))
            );
            ExitCode::from(EXIT_TIMEOUT)
        }
        Err(
            RequestError::OutcomeUnknown | RequestError::Send(steadfast::error::SendError::Closed),
        ) => {
            eprintln!(
                "error: the session was lost ({}) before the reply: the request may or may not \
                 have been handled",
                client
                    .peer()
                    .end_reason()
                    .map_or_else(|| "ended".into(), |r| r.to_string())
            );
            ExitCode::from(EXIT_SESSION_LOST)
        }
        Err(RequestError::Send(steadfast::error::SendError::TooLarge { len, max })) => {
            fail(format!(
                "the request is {} with its route, above the largest message of {} (--max-message, \
             and the server's own limit)",
                crate::human::plural(len as u64, "byte"),
                crate::human::plural(u64::from(max), "byte")
            ))
        }
        Err(e) => fail(e),
    };
    drop(rpc);
    close(&client, "done").await;
    code
}

/// The request's body: BODY, or stdin to its end when BODY is absent or `-`.
async fn read_request(a: &RequestArgs) -> Result<Request, String> {
    let bytes = match &a.body {
        Some(b) if b != "-" => os_bytes(b),
        _ => {
            // Bounded: one byte over the limit is enough to refuse it.
            let mut buf = Vec::new();
            tokio::io::stdin()
                .take(u64::from(a.max_message) + 1)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| format!("reading the body from stdin: {e}"))?;
            if buf.len() > a.max_message as usize {
                return Err(format!(
                    "the body on stdin is over the largest message of {} (--max-message)",
                    crate::human::plural(u64::from(a.max_message), "byte")
                ));
            }
            buf
        }
    };
    if a.json {
        serde_json::from_slice(&bytes)
            .map(Request::Json)
            .map_err(|e| format!("the body is not JSON (--json): {e}"))
    } else {
        Ok(Request::Bytes(bytes))
    }
}

#[cfg(unix)]
fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    s.as_bytes().to_vec()
}

#[cfg(not(unix))]
fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    s.to_string_lossy().into_owned().into_bytes()
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Writes the reply: bytes or a string unaltered (no newline added), any other value as one
/// line of JSON.
async fn write(reply: Body) -> ExitCode {
    let out = match reply {
        Body::Bytes(b) => b,
        Body::Json(mut line) => {
            line.push(b'\n');
            line
        }
    };
    let mut stdout = tokio::io::stdout();
    match stdout.write_all(&out).await.and(stdout.flush().await) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(crate::EXIT_BROKEN_PIPE)
        }
        Err(e) => fail(format!("writing to stdout: {e}")),
    }
}

/// Ends the session so that the server does not keep it lingering.
async fn close(client: &steadfast::Client, reason: &str) {
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close(reason)).await;
}
