//! `steadfast request ADDR ROUTE [BODY]`: one request on the library's rpc, its reply to
//! stdout.

use std::process::ExitCode;
use std::time::Duration;

use steadfast::rpc::{RequestError, Router, Rpc, UNKNOWN_ROUTE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::client::{EXIT_SESSION_LOST, EXIT_TIMEOUT, Unconnected};
use crate::{RequestArgs, fail};

/// What a request carries.
enum Body {
    /// Bytes, sent as MessagePack binary.
    Bytes(Vec<u8>),
    /// A JSON value, sent as the MessagePack value it denotes.
    Json(serde_json::Value),
}

pub(crate) async fn run(a: RequestArgs) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    if let Err(e) = crate::client::check_client_options(&a.addr, &a.security) {
        return fail(e);
    }
    let body = match body(&a).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let config =
        match crate::client::client_config(a.name.clone(), &a.security, a.max_message, false) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
    let client = match crate::client::connect_first(&a.addr, config, Some(deadline), a.retry).await
    {
        Ok(c) => c,
        Err(e) => return Unconnected::exit(e),
    };
    // Replies come in through the session: an rpc with no routes of its own reads them.
    let rpc = Rpc::new(client.peer().clone(), Router::new());
    let asked = async {
        match &body {
            Body::Bytes(b) => {
                rpc.request::<_, rmpv::Value>(
                    &a.route,
                    &rmpv::Value::Binary(b.clone()),
                    remaining(deadline),
                )
                .await
            }
            Body::Json(v) => rpc.request(&a.route, v, remaining(deadline)).await,
        }
    };
    let stop = crate::stop_signal();
    // The deadline covers sending too (a full outbox waits): the whole run is bounded.
    let reply = tokio::select! {
        r = tokio::time::timeout_at(deadline, asked) => r.unwrap_or(Err(RequestError::Timeout(Duration::from_secs(a.timeout)))),
        () = stop => {
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
        Ok(v) => write(&v).await,
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
async fn body(a: &RequestArgs) -> Result<Body, String> {
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
            .map(Body::Json)
            .map_err(|e| format!("the body is not JSON (--json): {e}"))
    } else {
        Ok(Body::Bytes(bytes))
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
async fn write(v: &rmpv::Value) -> ExitCode {
    let out = match crate::value::as_bytes(v) {
        Some(b) => b.to_vec(),
        None => {
            let mut line = crate::value::to_json(v).to_string().into_bytes();
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
