//! A server's metrics, through the `metrics` facade (feature `metrics`): the application
//! installs the recorder it wants (a Prometheus exporter, StatsD, …); without one every call
//! here costs next to nothing. Only server sessions are counted.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `steadfast_connections_total` | counter | connections that completed a handshake (new sessions and resumes) |
//! | `steadfast_resumes_total` | counter | of those, resumes |
//! | `steadfast_handshakes_refused_total` | counter, label `reason` | handshakes refused (see [`Refused`]) |
//! | `steadfast_messages_received_total` | counter | messages taken by the application, each once |
//! | `steadfast_messages_sent_total` | counter | messages acknowledged by the peer, each once |
//! | `steadfast_bytes_received_total` | counter | bytes read from established connections |
//! | `steadfast_bytes_sent_total` | counter | bytes of frames handed to established connections |
//! | `steadfast_retransmitted_messages_total` | counter | messages sent again on a new connection |
//! | `steadfast_rtt_seconds` | histogram | round-trip times measured by keepalive PINGs |
//! | `steadfast_sessions` | gauge, label `state` = `live` \| `lingering` | set by [`crate::Server::record_gauges`] |
//! | `steadfast_outbox_messages` | gauge | messages queued to peers and not yet acknowledged, idem |
//! | `steadfast_memory_budget_used_bytes` | gauge | [`crate::Server::queued_bytes`], idem |

use std::time::Duration;

/// Why a handshake was refused: the `reason` label of `steadfast_handshakes_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A REJECT (a bad token, an unknown session, a full server, …).
    Rejected,
    /// The first bytes were not a steadfast HELLO, or broke the protocol.
    ProtocolViolation,
    /// No HELLO within the handshake timeout.
    Timeout,
    /// The TLS handshake failed or timed out.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls,
    /// Over `max_connections`.
    ConnectionLimit,
    /// Over the handshake limits (refused, or a pending handshake closed for a newer one).
    HandshakeLimit,
    /// No well-formed PROXY protocol header where the listener expects one.
    ProxyHeader,
}

impl Refused {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::Rejected => "rejected",
            Refused::ProtocolViolation => "protocol_violation",
            Refused::Timeout => "timeout",
            Refused::Tls => "tls",
            Refused::ConnectionLimit => "connection_limit",
            Refused::HandshakeLimit => "handshake_limit",
            Refused::ProxyHeader => "proxy_header",
        }
    }
}

#[cfg(feature = "metrics")]
mod on {
    use super::{Duration, Refused};

    pub(crate) fn refused(why: Refused) {
        metrics::counter!("steadfast_handshakes_refused_total", "reason" => why.label())
            .increment(1);
    }

    pub(crate) fn connection(resumed: bool) {
        metrics::counter!("steadfast_connections_total").increment(1);
        if resumed {
            metrics::counter!("steadfast_resumes_total").increment(1);
        }
    }

    pub(crate) fn delivered(n: u64) {
        if n > 0 {
            metrics::counter!("steadfast_messages_received_total").increment(n);
        }
    }

    pub(crate) fn input(bytes: u64, acknowledged: u64) {
        metrics::counter!("steadfast_bytes_received_total").increment(bytes);
        if acknowledged > 0 {
            metrics::counter!("steadfast_messages_sent_total").increment(acknowledged);
        }
    }

    pub(crate) fn output(bytes: u64, retransmitted: u64) {
        if bytes > 0 {
            metrics::counter!("steadfast_bytes_sent_total").increment(bytes);
        }
        if retransmitted > 0 {
            metrics::counter!("steadfast_retransmitted_messages_total").increment(retransmitted);
        }
    }

    pub(crate) fn rtt(rtt: Duration) {
        metrics::histogram!("steadfast_rtt_seconds").record(rtt.as_secs_f64());
    }

    /// The counters and gauges with their help texts, at zero until something happens.
    pub(crate) fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        for (name, help) in super::COUNTERS {
            describe_counter!(*name, *help);
            metrics::counter!(*name).increment(0);
        }
        describe_histogram!(
            "steadfast_rtt_seconds",
            metrics::Unit::Seconds,
            "round-trip times measured by keepalive PINGs"
        );
        describe_gauge!("steadfast_sessions", "sessions by state (live, lingering)");
        describe_gauge!(
            "steadfast_outbox_messages",
            "messages queued to peers and not yet acknowledged"
        );
        describe_gauge!(
            "steadfast_memory_budget_used_bytes",
            "bytes of queued messages counted against the memory budget"
        );
    }

    pub(crate) fn gauges(live: usize, lingering: usize, outbox: usize, budget_used: u64) {
        metrics::gauge!("steadfast_sessions", "state" => "live").set(live as f64);
        metrics::gauge!("steadfast_sessions", "state" => "lingering").set(lingering as f64);
        metrics::gauge!("steadfast_outbox_messages").set(outbox as f64);
        metrics::gauge!("steadfast_memory_budget_used_bytes").set(budget_used as f64);
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use super::{Duration, Refused};
    pub(crate) fn refused(_: Refused) {}
    pub(crate) fn connection(_: bool) {}
    pub(crate) fn delivered(_: u64) {}
    pub(crate) fn input(_: u64, _: u64) {}
    pub(crate) fn output(_: u64, _: u64) {}
    pub(crate) fn rtt(_: Duration) {}
    pub(crate) fn gauges(_: usize, _: usize, _: usize, _: u64) {}
    pub(crate) fn describe() {}
}

pub(crate) use on::{connection, delivered, gauges, refused, rtt};

/// The counters (with `steadfast_handshakes_refused_total`, which has labels, left out).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const COUNTERS: &[(&str, &str)] = &[
    (
        "steadfast_connections_total",
        "connections that completed a handshake (new sessions and resumes)",
    ),
    (
        "steadfast_resumes_total",
        "connections that resumed a session",
    ),
    (
        "steadfast_messages_received_total",
        "messages taken by the application, each once",
    ),
    (
        "steadfast_messages_sent_total",
        "messages acknowledged by the peer, each once",
    ),
    (
        "steadfast_bytes_received_total",
        "bytes read from established connections",
    ),
    (
        "steadfast_bytes_sent_total",
        "bytes of frames handed to established connections",
    ),
    (
        "steadfast_retransmitted_messages_total",
        "messages sent again on a new connection",
    ),
];

/// Histogram buckets for `steadfast_rtt_seconds`, in seconds (50 µs to 5 s): what
/// `serve --metrics` and the Python package's `enable_metrics` give a Prometheus recorder.
pub const RTT_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Gives the recorder installed now the help text of every metric a [`crate::Server`]
/// records, and its counters at zero (so that a scrape shows them before anything happened).
/// Call it once the recorder is installed (feature `metrics`; without it this does nothing).
pub fn describe_metrics() {
    on::describe();
    #[cfg(feature = "metrics")]
    metrics::describe_counter!(
        "steadfast_handshakes_refused_total",
        "handshakes refused, by reason"
    );
}

/// A server session's counters before a step of its connection, to count what the step did.
#[derive(Clone, Copy)]
pub(crate) struct Before {
    acknowledged: u64,
    retransmitted: u64,
}

/// The counters now, for a server connection with a session (`None` otherwise: nothing to
/// count).
pub(crate) fn before(conn: &crate::proto::Connection) -> Option<Before> {
    if conn.role() != crate::proto::Role::Server {
        return None;
    }
    let s = conn.session()?.stats();
    Some(Before {
        acknowledged: s.acknowledged,
        retransmitted: s.retransmitted,
    })
}

/// Counts `bytes` read and the messages they acknowledged.
pub(crate) fn after_input(conn: &crate::proto::Connection, before: Option<Before>, bytes: u64) {
    if let (Some(b), Some(s)) = (before, conn.session()) {
        on::input(bytes, s.stats().acknowledged.saturating_sub(b.acknowledged));
    }
}

/// Counts `bytes` of frames produced and the messages sent again among them.
pub(crate) fn after_output(conn: &crate::proto::Connection, before: Option<Before>, bytes: u64) {
    if let (Some(b), Some(s)) = (before, conn.session()) {
        on::output(
            bytes,
            s.stats().retransmitted.saturating_sub(b.retransmitted),
        );
    }
}
