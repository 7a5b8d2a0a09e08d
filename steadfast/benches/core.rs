//! Microbenchmarks of the I/O-free protocol core: the frame codec and the send → acknowledge
//! path through two [`Connection`]s joined in memory, on a virtual clock.
//!
//! `cargo bench -p steadfast --bench core` (add `-- --quick` for a fast pass). Throughput is
//! reported in elements: frames for the codec, messages for the connection pair. Set against
//! the `throughput` bench (the same work over tokio and TCP), it tells how much of a message's
//! cost is the core and how much the runtime.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use steadfast::proto::frame::Data;
use steadfast::proto::{
    Config, Connection, Decoder, Event, Frame, ResumeToken, Seq, Session, SessionId, Window,
};

/// Frames per codec iteration and messages per connection-pair iteration.
const BATCH: u64 = 1_000;
/// Message sizes of the codec benches.
const SIZES: [usize; 2] = [64, 1_024];
/// Payload limit for the decoder (the default maximum frame).
const MAX_FRAME: u32 = 65_536;

fn data_frame(seq: u64, size: usize) -> Frame {
    Frame::Data(Data {
        offset: None,
        seq: Seq(seq),
        timestamp_us: 1_700_000_000_000_000 + seq,
        more: false,
        body: Bytes::from(vec![0xa5; size]),
    })
}

fn ack_frame(seq: u64) -> Frame {
    Frame::Ack {
        delivered: Seq(seq),
        window: Window {
            messages: 8_192,
            bytes: 8 << 20,
        },
    }
}

/// `BATCH` frames, encoded back to back as they would arrive on the wire.
fn stream(frames: &[Frame]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

/// Decodes every frame of `wire` through one long-lived decoder (as `handle_input` does).
fn decode_all(decoder: &mut Decoder, wire: &[u8]) -> u64 {
    decoder.feed(wire);
    let mut n = 0;
    while let Some(frame) = decoder.decode().expect("valid frame") {
        black_box(&frame);
        n += 1;
    }
    n
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(BATCH));
    for size in SIZES {
        let frames: Vec<Frame> = (0..BATCH).map(|i| data_frame(i + 1, size)).collect();
        let wire = stream(&frames);
        let mut out = Vec::with_capacity(wire.len());
        g.bench_with_input(
            BenchmarkId::new("encode_data", size),
            &frames,
            |b, frames| {
                b.iter(|| {
                    out.clear();
                    for f in frames {
                        f.encode(&mut out);
                    }
                    black_box(out.len())
                })
            },
        );
        let mut decoder = Decoder::new(MAX_FRAME);
        g.bench_with_input(BenchmarkId::new("decode_data", size), &wire, |b, wire| {
            b.iter(|| assert_eq!(decode_all(&mut decoder, black_box(wire)), BATCH))
        });
    }
    let acks: Vec<Frame> = (0..BATCH).map(|i| ack_frame(i + 1)).collect();
    let wire = stream(&acks);
    let mut out = Vec::with_capacity(wire.len());
    g.bench_function("encode_ack", |b| {
        b.iter(|| {
            out.clear();
            for f in &acks {
                f.encode(&mut out);
            }
            black_box(out.len())
        })
    });
    let mut decoder = Decoder::new(MAX_FRAME);
    g.bench_function("decode_ack", |b| {
        b.iter(|| assert_eq!(decode_all(&mut decoder, black_box(&wire)), BATCH))
    });
    g.finish();
}

/// A client and a server core with an established session, bytes moved by hand.
struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
    buf: Vec<u8>,
}

impl Pair {
    fn new() -> Pair {
        let config = Config::default();
        let now = Instant::now();
        let session = Session::client(&config, None);
        let mut p = Pair {
            now,
            client: Connection::connect(config.clone(), now, session, None).expect("config"),
            server: Connection::accept(config, now).expect("config"),
            buf: Vec::with_capacity(256 << 10),
        };
        for _ in 0..8 {
            p.client_to_server();
            while let Some(ev) = p.server.poll_event() {
                if let Event::Hello(req) = ev {
                    assert!(req.resume.is_none());
                    p.server
                        .accept_new(p.now, SessionId([7; 16]), ResumeToken([9; 16]));
                }
            }
            p.server_to_client();
            while p.client.poll_event().is_some() {}
        }
        assert!(p.client.is_established() && p.server.is_established());
        p
    }

    /// Everything the client has to write, handed to the server.
    fn client_to_server(&mut self) {
        loop {
            self.buf.clear();
            if self.client.poll_transmit(self.now, &mut self.buf) == 0 {
                return;
            }
            self.server.handle_input(self.now, &self.buf);
        }
    }

    /// Everything the server has to write, handed to the client.
    fn server_to_client(&mut self) {
        loop {
            self.buf.clear();
            if self.server.poll_transmit(self.now, &mut self.buf) == 0 {
                return;
            }
            self.client.handle_input(self.now, &self.buf);
        }
    }

    /// Lets `d` pass on the virtual clock and fires the timers that are due.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        for conn in [&mut self.client, &mut self.server] {
            if conn.poll_timeout().is_some_and(|t| t <= self.now) {
                conn.handle_timeout(self.now);
            }
        }
    }

    /// Sends `n` copies of `body` from client to server, the server takes each one, and its
    /// acknowledgement comes back. Returns how many the client saw acknowledged.
    fn round(&mut self, body: &Bytes, n: u64) -> u64 {
        for i in 0..n {
            self.client.send(body.clone(), i).expect("outbox has room");
        }
        self.client_to_server();
        let mut got = 0;
        while let Some(m) = self.server.recv() {
            black_box(&m);
            got += 1;
        }
        debug_assert_eq!(got, n);
        while self.server.poll_event().is_some() {}
        // Below a quarter of the window the receiver delays its ACK (§5.2): let the delay pass.
        self.server_to_client();
        self.advance(Duration::from_millis(1));
        self.server_to_client();
        // Keepalive PINGs fall due on the virtual clock; their PONGs go back here.
        self.client_to_server();
        self.server_to_client();
        let mut acked = 0;
        while let Some(ev) = self.client.poll_event() {
            if let Event::Acknowledged { first, end } = ev {
                acked += end.distance_from(first);
            }
        }
        acked
    }
}

fn send_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("connection");
    g.throughput(Throughput::Elements(BATCH));
    let body = Bytes::from(vec![0x5a; 64]);
    let mut pair = Pair::new();
    g.bench_function("send_recv_ack_64B_x1000", |b| {
        b.iter(|| assert_eq!(pair.round(&body, BATCH), BATCH))
    });
    g.finish();
}

/// Short runs: the whole file takes well under a minute (`--quick` a few seconds).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

fn main() {
    let mut c = config().configure_from_args();
    codec(&mut c);
    send_ack(&mut c);
    c.final_summary();
}
