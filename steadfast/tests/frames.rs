//! Property tests of the frame layer: encoding, incremental decoding and the refusal of
//! malformed input (PROTOCOL.md §3).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use steadfast::proto::frame::{
    Close, DATA_CONTINUED_PREFIX_LEN, DATA_PREFIX_LEN, Data, GoAway, HEADER_LEN, Hello, MAGIC,
    MAX_CREDENTIALS_LEN, MAX_NAME_LEN, MAX_REASON_LEN, MAX_TRANSFORMS, MIN_MAX_FRAME, Reject,
    Timings, Welcome, WelcomeKind, encode_data_header, kind,
};
use steadfast::proto::{
    CloseCode, Decoder, Frame, FrameError, Limits, RejectCode, ResumeRequest, ResumeToken, Seq,
    SessionId, Window,
};

// ------------------------------------------------------------------------------- helpers

const ALL_KINDS: [u8; 9] = [
    kind::HELLO,
    kind::WELCOME,
    kind::REJECT,
    kind::DATA,
    kind::ACK,
    kind::PING,
    kind::PONG,
    kind::GOAWAY,
    kind::CLOSE,
];

/// A decoder limit large enough for every frame the strategies generate.
const BIG: u32 = 1 << 20;

fn encode(frame: &Frame) -> Vec<u8> {
    let mut buf = Vec::new();
    frame.encode(&mut buf);
    buf
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

/// Decodes every complete frame buffered; panics on a decode error.
fn drain(dec: &mut Decoder, out: &mut Vec<Frame>) {
    while let Some(f) = dec.decode().unwrap() {
        out.push(f);
    }
}

/// Decodes one frame from exactly these bytes with a fresh decoder.
fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    let mut dec = v2_decoder(BIG);
    dec.feed(bytes);
    dec.decode()
}

fn payload_len(encoded: &[u8]) -> usize {
    u32::from_be_bytes([encoded[0], encoded[1], encoded[2], encoded[3]]) as usize
}

/// Rebuilds a frame with the given type, flags and payload (length prefix recomputed).
fn raw_frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(payload);
    v
}

fn kind_name(k: u8) -> &'static str {
    match k {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::REJECT => "REJECT",
        kind::DATA => "DATA",
        kind::ACK => "ACK",
        kind::PING => "PING",
        kind::PONG => "PONG",
        kind::GOAWAY => "GOAWAY",
        kind::CLOSE => "CLOSE",
        _ => "unknown",
    }
}

fn allowed_flags(k: u8) -> u8 {
    match k {
        kind::HELLO | kind::WELCOME | kind::DATA => 0x01,
        _ => 0,
    }
}

fn bytes_from_seed(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

// ---------------------------------------------------------------------------- strategies

/// Field size limits for the strategies: the protocol maxima, or small values for tests that
/// are quadratic in the stream length.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    name: usize,
    cred: usize,
    reason: usize,
    body: usize,
}

const FULL: Sizes = Sizes {
    name: MAX_NAME_LEN,
    cred: MAX_CREDENTIALS_LEN,
    reason: MAX_REASON_LEN,
    body: 60_000,
};

const SMALL: Sizes = Sizes {
    name: 20,
    cred: 20,
    reason: 20,
    body: 40,
};

fn arb_seq() -> impl Strategy<Value = Seq> {
    prop_oneof![
        2 => any::<u64>(),
        1 => 0u64..16,
        1 => (1u64 << 32) - 3..=(1u64 << 32) + 3,
        1 => (1u64 << 63) - 3..=(1u64 << 63) + 3,
        1 => u64::MAX - 3..=u64::MAX,
    ]
    .prop_map(Seq)
}

fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => any::<char>(),
        1 => prop::sample::select(vec!['é', 'ß', '€', '中', '😀', '𝄞', '\u{7f}', '\0']),
    ]
}

/// UTF-8 text of at most `max` bytes, including multibyte characters and strings that fill
/// the limit exactly.
fn arb_text(max: usize) -> BoxedStrategy<String> {
    let filled = prop::sample::select(vec!["a", "é", "€", "😀"]).prop_map(move |unit| {
        let mut s = unit.repeat(max / unit.len());
        s.push_str(&"z".repeat(max - s.len()));
        s
    });
    let free = vec(arb_char(), 0..=max).prop_map(move |cs| {
        let mut s = String::new();
        for c in cs {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    });
    prop_oneof![4 => free, 1 => filled].boxed()
}

/// `None`, or non-empty text (an empty one is encoded like `None`).
fn arb_opt_text(max: usize) -> BoxedStrategy<Option<String>> {
    prop_oneof![
        1 => Just(None),
        3 => arb_text(max).prop_filter_map("empty", |s| (!s.is_empty()).then_some(s)).prop_map(Some),
    ]
    .boxed()
}

/// Random bytes of a length in `range`, filled from a seed (fast for large sizes).
fn arb_bytes(min: usize, max: usize) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => Just(min),
        1 => Just(max),
        1 => min..=max.min(min + 64),
        1 => min..=max,
    ]
    .prop_flat_map(|len| any::<u64>().prop_map(move |seed| bytes_from_seed(len, seed)))
    .boxed()
}

fn arb_creds(max: usize) -> BoxedStrategy<Option<Bytes>> {
    prop_oneof![
        1 => Just(None),
        3 => arb_bytes(1, max).prop_map(|v| Some(Bytes::from(v))),
    ]
    .boxed()
}

fn arb_limits() -> impl Strategy<Value = Limits> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(f, m, wm, wb)| Limits {
        max_frame: f,
        max_message: m,
        window: Window {
            messages: wm,
            bytes: wb,
        },
    })
}

fn arb_id() -> impl Strategy<Value = SessionId> {
    any::<[u8; 16]>().prop_map(SessionId)
}

/// The fixed part of a DATA payload: longer with CONTINUED (version 2).
fn data_prefix(d: &Data) -> usize {
    if d.offset.is_some() {
        DATA_CONTINUED_PREFIX_LEN
    } else {
        DATA_PREFIX_LEN
    }
}

/// Up to 64 random cut points in `0..=len`, in order, ending with `len`.
fn random_cuts(len: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cuts: Vec<usize> = (0..rng.usize(1..64)).map(|_| rng.usize(..=len)).collect();
    cuts.sort_unstable();
    cuts.push(len);
    cuts
}

/// A decoder of a version-2 connection: the generated frames include DATA with CONTINUED.
fn v2_decoder(max_frame: u32) -> Decoder {
    let mut dec = Decoder::new(max_frame);
    dec.set_version(2);
    dec
}

fn arb_token() -> impl Strategy<Value = ResumeToken> {
    any::<[u8; 16]>().prop_map(ResumeToken)
}

fn arb_hello(s: Sizes, resume: bool) -> BoxedStrategy<Frame> {
    let req = (arb_id(), arb_token(), arb_seq(), any::<u64>()).prop_map(
        |(session_id, token, received, partial)| ResumeRequest {
            partial,
            session_id,
            token,
            received,
        },
    );
    let resume = if resume {
        req.prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    };
    (
        any::<u16>(),
        any::<u16>(),
        arb_limits(),
        resume,
        arb_seq(),
        arb_opt_text(s.name),
        (arb_creds(s.cred), arb_transforms()),
    )
        .prop_map(
            |(
                min_version,
                max_version,
                limits,
                resume,
                first_seq,
                name,
                (credentials, transforms),
            )| {
                Frame::Hello(Hello {
                    min_version,
                    max_version,
                    limits,
                    // Not encoded for a resume.
                    first_seq: if resume.is_some() { Seq(0) } else { first_seq },
                    // Only the version-2 layout (offering versions 2 and up) carries a partial.
                    resume: resume.map(|mut r| {
                        if min_version < 2 {
                            r.partial = 0;
                        }
                        r
                    }),
                    name,
                    credentials,
                    transforms,
                })
            },
        )
        .boxed()
}

/// Transform lists as the wire allows them: up to 8 names of 1 to 32 visible ASCII bytes.
fn arb_transforms() -> impl Strategy<Value = Vec<String>> {
    vec("[!-~]{1,32}", 0..=MAX_TRANSFORMS)
}

fn arb_welcome(resumed: bool) -> BoxedStrategy<Frame> {
    let kind = if resumed {
        (arb_seq(), arb_seq(), any::<u64>())
            .prop_map(|(received, delivered, partial)| WelcomeKind::Resumed {
                partial,
                received,
                delivered,
            })
            .boxed()
    } else {
        arb_seq()
            .prop_map(|first_seq| WelcomeKind::New { first_seq })
            .boxed()
    };
    (
        any::<u16>(),
        arb_id(),
        arb_token(),
        arb_limits(),
        kind,
        (arb_transforms(), any::<(u32, u32)>()),
    )
        .prop_map(
            |(version, session_id, token, limits, mut kind, (transforms, (ka, idle)))| {
                // Version 1 has neither timings nor a partial position.
                if let WelcomeKind::Resumed { partial, .. } = &mut kind
                    && version < 2
                {
                    *partial = 0;
                }
                Frame::Welcome(Welcome {
                    timings: (version >= 2).then_some(Timings {
                        keepalive_ms: ka,
                        idle_timeout_ms: idle,
                    }),
                    version,
                    session_id,
                    token,
                    limits,
                    kind,
                    transforms,
                })
            },
        )
        .boxed()
}

/// Codes through `from_u16`, so that the value is the one a decoder produces.
fn arb_reject_code() -> impl Strategy<Value = RejectCode> {
    prop_oneof![0u16..10, any::<u16>()].prop_map(RejectCode::from_u16)
}

fn arb_close_code() -> impl Strategy<Value = CloseCode> {
    prop_oneof![0u16..12, any::<u16>()].prop_map(CloseCode::from_u16)
}

fn arb_data(s: Sizes) -> BoxedStrategy<Frame> {
    (
        arb_seq(),
        any::<u64>(),
        any::<bool>(),
        prop::option::of(any::<u64>()),
        arb_bytes(0, s.body),
    )
        .prop_map(|(seq, timestamp_us, more, offset, body)| {
            Frame::Data(Data {
                offset,
                seq,
                timestamp_us,
                more,
                body: Bytes::from(body),
            })
        })
        .boxed()
}

/// REJECT, GOAWAY and CLOSE: the frames that end with a reason.
fn arb_reason_frame(s: Sizes) -> BoxedStrategy<Frame> {
    prop_oneof![arb_reject(s), arb_goaway(s), arb_close(s)].boxed()
}

fn arb_reject(s: Sizes) -> BoxedStrategy<Frame> {
    (
        arb_reject_code(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        arb_text(s.reason),
    )
        .prop_map(|(code, retry_after_ms, min_version, max_version, reason)| {
            Frame::Reject(Reject {
                code,
                retry_after_ms,
                min_version,
                max_version,
                reason,
            })
        })
        .boxed()
}

fn arb_goaway(s: Sizes) -> BoxedStrategy<Frame> {
    (arb_close_code(), any::<u32>(), arb_text(s.reason))
        .prop_map(|(code, retry_after_ms, reason)| {
            Frame::GoAway(GoAway {
                code,
                retry_after_ms,
                reason,
            })
        })
        .boxed()
}

fn arb_close(s: Sizes) -> BoxedStrategy<Frame> {
    (arb_close_code(), arb_seq(), arb_text(s.reason))
        .prop_map(|(code, delivered, reason)| {
            Frame::Close(Close {
                code,
                delivered,
                reason,
            })
        })
        .boxed()
}

fn arb_frame(s: Sizes) -> BoxedStrategy<Frame> {
    prop_oneof![
        arb_hello(s, false),
        arb_hello(s, true),
        arb_welcome(false),
        arb_welcome(true),
        arb_reject(s),
        // Twice: empty, small and large bodies, with and without MORE.
        arb_data(s),
        arb_data(s),
        (arb_seq(), any::<u32>(), any::<u32>()).prop_map(|(delivered, messages, bytes)| {
            Frame::Ack {
                delivered,
                window: Window { messages, bytes },
            }
        }),
        any::<u64>().prop_map(Frame::Ping),
        any::<u64>().prop_map(Frame::Pong),
        arb_goaway(s),
        arb_close(s),
    ]
    .boxed()
}

/// Input a hostile or broken peer might send: random bytes, random headers with random
/// payloads, and valid frames with bytes flipped or cut.
fn arb_hostile_bytes() -> BoxedStrategy<Vec<u8>> {
    let raw = vec(any::<u8>(), 0..600);
    let kinds = prop_oneof![
        4 => prop::sample::select(ALL_KINDS.to_vec()),
        1 => any::<u8>(),
    ];
    let flags = prop_oneof![Just(0u8), Just(1u8), any::<u8>()];
    let headed =
        vec((kinds, flags, vec(any::<u8>(), 0..90), any::<bool>()), 1..8).prop_map(|parts| {
            let mut v = Vec::new();
            for (k, f, payload, lie) in parts {
                let len = if lie {
                    payload.len() as u32 + 3
                } else {
                    payload.len() as u32
                };
                v.extend_from_slice(&len.to_be_bytes());
                v.push(k);
                v.push(f);
                v.extend_from_slice(&payload);
            }
            v
        });
    let mutated = (vec(arb_frame(SMALL), 1..5), any::<u64>()).prop_map(|(frames, seed)| {
        let mut v = encode_all(&frames);
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..rng.usize(1..4) {
            let i = rng.usize(..v.len());
            v[i] ^= 1 << rng.u8(0..8);
        }
        if rng.bool() {
            v.truncate(rng.usize(..=v.len()));
        }
        v
    });
    prop_oneof![raw, headed, mutated].boxed()
}

/// Fixed seed: the same cases on every run (set `PROPTEST_RNG_SEED` to explore others).
fn config() -> ProptestConfig {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f4a3e5);
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

// --------------------------------------------------------------------------------- tests

proptest! {
    #![proptest_config(config())]

    /// encode → feed → decode gives the same frame, the header states the right length and
    /// type, and nothing is left behind.
    #[test]
    fn roundtrip(frame in arb_frame(FULL)) {
        let bytes = encode(&frame);
        prop_assert_eq!(payload_len(&bytes), bytes.len() - HEADER_LEN);
        prop_assert_eq!(bytes[4], frame.kind());
        let mut dec = v2_decoder(BIG);
        dec.feed(&bytes);
        prop_assert_eq!(dec.decode().unwrap(), Some(frame));
        prop_assert_eq!(dec.decode().unwrap(), None);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// Fed one byte at a time, the decoder answers `Ok(None)` on every strict prefix and the
    /// frame on the last byte.
    #[test]
    fn every_strict_prefix_is_incomplete(frame in arb_frame(FULL)) {
        let bytes = encode(&frame);
        let mut dec = v2_decoder(BIG);
        for (i, b) in bytes.iter().enumerate() {
            dec.feed(std::slice::from_ref(b));
            let got = dec.decode().unwrap();
            if i + 1 < bytes.len() {
                prop_assert_eq!(got, None, "frame returned after {} of {} bytes", i + 1, bytes.len());
            } else {
                prop_assert_eq!(got.as_ref(), Some(&frame));
            }
        }
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// A stream of frames split into two at every possible point decodes to the same frames
    /// in order; a fresh decoder on every prefix returns exactly the frames completed by it.
    #[test]
    fn stream_split_at_every_point(frames in vec(arb_frame(SMALL), 1..6)) {
        let bytes = encode_all(&frames);
        let mut ends = Vec::new();
        let mut at = 0;
        for f in &frames {
            at += encode(f).len();
            ends.push(at);
        }
        for split in 0..=bytes.len() {
            let mut dec = v2_decoder(BIG);
            let mut out = Vec::new();
            dec.feed(&bytes[..split]);
            drain(&mut dec, &mut out);
            let complete = ends.iter().filter(|&&e| e <= split).count();
            prop_assert_eq!(&out[..], &frames[..complete], "prefix of {} bytes", split);
            dec.feed(&bytes[split..]);
            drain(&mut dec, &mut out);
            prop_assert_eq!(&out, &frames, "split at {}", split);
            prop_assert_eq!(dec.buffered(), 0);
        }
    }

    /// The same with full-size frames and many random cut points.
    #[test]
    fn stream_split_at_random_points(frames in vec(arb_frame(FULL), 1..8), seed in any::<u64>()) {
        let bytes = encode_all(&frames);
        let mut dec = v2_decoder(BIG);
        let mut out = Vec::new();
        let mut from = 0;
        for cut in random_cuts(bytes.len(), seed) {
            dec.feed(&bytes[from..cut]);
            from = cut;
            drain(&mut dec, &mut out);
        }
        prop_assert_eq!(out, frames);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// Input given to `decode_from` (frames parsed in place, the rest buffered) in random
    /// pieces decodes to the same frames in order, and leaves nothing buffered at a frame
    /// boundary: in-place parsing and buffering take turns however the stream is split.
    #[test]
    fn stream_decoded_in_place_at_random_points(
        frames in vec(arb_frame(FULL), 1..8),
        seed in any::<u64>(),
    ) {
        let bytes = encode_all(&frames);
        let mut dec = v2_decoder(BIG);
        let mut out = Vec::new();
        let mut from = 0;
        for cut in random_cuts(bytes.len(), seed) {
            let mut input = &bytes[from..cut];
            from = cut;
            while let Some(f) = dec.decode_from(&mut input).unwrap() {
                out.push(f);
            }
            // Whatever it did not parse, it buffered.
            prop_assert!(input.is_empty());
        }
        prop_assert_eq!(out, frames);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// Hostile bytes in any split never panic the decoder, never make it hold more than it was
    /// fed, and whatever it does accept is canonical: re-encoding it gives back exactly the
    /// bytes it was decoded from.
    #[test]
    fn hostile_bytes_never_panic(
        input in arb_hostile_bytes(),
        seed in any::<u64>(),
        max_frame in prop::sample::select(vec![0u32, 16, 100, MIN_MAX_FRAME, 65_536]),
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut dec = Decoder::new(max_frame);
        let mut fed = 0;
        let mut frame_start = 0;
        'outer: while fed < input.len() {
            let n = rng.usize(1..=input.len() - fed);
            dec.feed(&input[fed..fed + n]);
            fed += n;
            prop_assert!(dec.buffered() <= fed);
            loop {
                match dec.decode() {
                    Ok(Some(frame)) => {
                        let consumed = fed - dec.buffered();
                        let reencoded = encode(&frame);
                        prop_assert!(reencoded.len() - HEADER_LEN <= max_frame as usize);
                        prop_assert_eq!(&reencoded[..], &input[frame_start..consumed]);
                        frame_start = consumed;
                    }
                    Ok(None) => break,
                    // The stream cannot be trusted after an error: a connection closes.
                    Err(_) => break 'outer,
                }
                prop_assert!(dec.buffered() <= fed);
            }
        }
    }

    /// A length prefix above the limit is refused as soon as the six header bytes are in,
    /// with no payload byte fed, and nothing beyond the header stays buffered.
    #[test]
    fn oversized_length_refused_after_header(
        max in prop_oneof![0u32..64, Just(MIN_MAX_FRAME), Just(65_536u32), 0..u32::MAX],
        excess in prop_oneof![Just(1u32), any::<u32>()],
        k in any::<u8>(),
        flags in any::<u8>(),
    ) {
        let len = max.saturating_add(excess.max(1));
        prop_assume!(len > max);
        let mut header = len.to_be_bytes().to_vec();
        header.push(k);
        header.push(flags);
        let mut dec = Decoder::new(max);
        dec.feed(&header[..HEADER_LEN - 1]);
        prop_assert_eq!(dec.decode(), Ok(None));
        dec.feed(&header[HEADER_LEN - 1..]);
        prop_assert_eq!(dec.decode(), Err(FrameError::TooLarge { len, max }));
        prop_assert!(dec.buffered() <= HEADER_LEN);

        // At exactly the limit the header is accepted and the decoder waits for the payload.
        let mut at_limit = max.to_be_bytes().to_vec();
        at_limit.push(kind::DATA);
        at_limit.push(0);
        let mut dec = Decoder::new(max);
        dec.feed(&at_limit);
        if max == 0 {
            // A zero-length DATA payload is malformed (no sequence number).
            prop_assert_eq!(dec.decode(), Err(FrameError::Malformed("DATA")));
        } else {
            prop_assert_eq!(dec.decode(), Ok(None));
            prop_assert!(dec.buffered() <= HEADER_LEN);
        }
    }

    /// An unknown frame type is refused by its code, whatever the flags and payload.
    #[test]
    fn unknown_type(
        k in any::<u8>().prop_filter("known type", |k| !ALL_KINDS.contains(k)),
        flags in any::<u8>(),
        payload in vec(any::<u8>(), 0..32),
    ) {
        prop_assert_eq!(
            decode_one(&raw_frame(k, flags, &payload)),
            Err(FrameError::UnknownType(k))
        );
    }

    /// A flag bit not defined for the frame type is refused, even on an otherwise valid frame.
    #[test]
    fn reserved_flags(frame in arb_frame(SMALL), extra in 1u8..=255) {
        let mut bytes = encode(&frame);
        let k = frame.kind();
        let bad = extra & !allowed_flags(k);
        prop_assume!(bad != 0);
        bytes[5] |= bad;
        let flags = bytes[5];
        prop_assert_eq!(decode_one(&bytes), Err(FrameError::ReservedFlags { kind: k, flags }));
    }

    /// A payload cut short (the length prefix says so) is malformed, naming the frame type.
    /// A DATA frame cut after its fixed prefix is merely a shorter body.
    #[test]
    fn truncated_payload(frame in arb_frame(SMALL), cut_seed in any::<u64>()) {
        let bytes = encode(&frame);
        let k = frame.kind();
        let full = payload_len(&bytes);
        prop_assume!(full > 0);
        let keep = fastrand::Rng::with_seed(cut_seed).usize(..full);
        let cut = raw_frame(k, bytes[5], &bytes[HEADER_LEN..HEADER_LEN + keep]);
        let got = decode_one(&cut);
        match &frame {
            Frame::Data(d) if keep >= data_prefix(d) => {
                let mut shorter = d.clone();
                shorter.body = d.body.slice(..keep - data_prefix(d));
                prop_assert_eq!(got, Ok(Some(Frame::Data(shorter))));
            }
            _ => prop_assert_eq!(got, Err(FrameError::Malformed(kind_name(k)))),
        }
    }

    /// Bytes after the last field are malformed (DATA has no last field: its body is the rest).
    #[test]
    fn trailing_payload(frame in arb_frame(SMALL), extra in vec(any::<u8>(), 1..16)) {
        prop_assume!(!matches!(frame, Frame::Data(_)));
        let bytes = encode(&frame);
        let mut payload = bytes[HEADER_LEN..].to_vec();
        payload.extend_from_slice(&extra);
        let k = frame.kind();
        prop_assert_eq!(
            decode_one(&raw_frame(k, bytes[5], &payload)),
            Err(FrameError::Malformed(kind_name(k)))
        );
    }

    /// A HELLO without the magic is not a steadfast peer.
    #[test]
    fn bad_magic(frame in prop_oneof![arb_hello(SMALL, false), arb_hello(SMALL, true)], magic in any::<[u8; 4]>()) {
        prop_assume!(magic != MAGIC);
        let mut bytes = encode(&frame);
        bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&magic);
        prop_assert_eq!(decode_one(&bytes), Err(FrameError::BadMagic));
    }

    /// A reason (REJECT, GOAWAY, CLOSE) that is not UTF-8 makes the frame malformed.
    #[test]
    fn invalid_utf8_reason(
        frame in arb_reason_frame(SMALL),
        bad in prop::sample::select(vec![vec![0xffu8], vec![0xc3], vec![0xe2, 0x82], vec![0xed, 0xa0, 0x80], vec![0xf8, 0x88, 0x80, 0x80]]),
    ) {
        let k = frame.kind();
        // The reason is the last field: encode with an empty one, then append our own.
        let mut blank = frame.clone();
        match &mut blank {
            Frame::Reject(r) => r.reason.clear(),
            Frame::GoAway(g) => g.reason.clear(),
            Frame::Close(c) => c.reason.clear(),
            _ => unreachable!(),
        }
        let bytes = encode(&blank);
        let mut text = b"ok".to_vec();
        text.extend_from_slice(&bad);
        let fixed = &bytes[HEADER_LEN..bytes.len() - 2];
        let mut payload = fixed.to_vec();
        payload.extend_from_slice(&(text.len() as u16).to_be_bytes());
        payload.extend_from_slice(&text);
        prop_assert_eq!(
            decode_one(&raw_frame(k, 0, &payload)),
            Err(FrameError::Malformed(kind_name(k)))
        );
        // The same frame with the valid `ok` prefix only decodes.
        let mut valid = fixed.to_vec();
        valid.extend_from_slice(&2u16.to_be_bytes());
        valid.extend_from_slice(b"ok");
        prop_assert!(decode_one(&raw_frame(k, 0, &valid)).unwrap().is_some());
    }

    /// DATA, ACK and CLOSE positions near 2³², 2⁶³ and 2⁶⁴ − 1 survive the wire.
    #[test]
    fn seq_near_boundaries_roundtrip(
        seq in prop_oneof![
            (1u64 << 32) - 2..=(1u64 << 32) + 2,
            (1u64 << 63) - 2..=(1u64 << 63) + 2,
            u64::MAX - 2..=u64::MAX,
        ].prop_map(Seq),
        ts in any::<u64>(),
        more in any::<bool>(),
        body in vec(any::<u8>(), 0..32),
    ) {
        for frame in [
            Frame::Data(Data { offset: None, seq, timestamp_us: ts, more, body: Bytes::from(body.clone()) }),
            Frame::Ack { delivered: seq, window: Window { messages: 1, bytes: 1 } },
            Frame::Close(Close { code: CloseCode::Normal, delivered: seq, reason: String::new() }),
        ] {
            prop_assert_eq!(decode_one(&encode(&frame)).unwrap(), Some(frame));
        }
    }
}

// ------------------------------------------------------------------------ fixed examples

#[test]
fn data_seq_exact_boundaries_roundtrip() {
    for s in [
        (1u64 << 32) - 1,
        1 << 32,
        (1 << 32) + 1,
        (1 << 63) - 1,
        1 << 63,
        (1 << 63) + 1,
        u64::MAX - 1,
        u64::MAX,
    ] {
        let frame = Frame::Data(Data {
            offset: None,
            seq: Seq(s),
            timestamp_us: u64::MAX - s,
            more: s % 2 == 0,
            body: Bytes::from_static(b"x"),
        });
        let bytes = encode(&frame);
        // The sequence number is the first payload field, big-endian.
        assert_eq!(bytes[HEADER_LEN..HEADER_LEN + 8], s.to_be_bytes());
        assert_eq!(decode_one(&bytes).unwrap(), Some(frame), "seq {s}");
    }
    assert_eq!(Seq(u64::MAX).next(), None);
    assert_eq!(Seq((1 << 32) - 1).next(), Some(Seq(1 << 32)));
}

#[test]
fn data_wire_size_with_64_byte_body() {
    let body = Bytes::from(vec![0xab; 64]);
    let frame = Frame::Data(Data {
        offset: None,
        seq: Seq(1),
        timestamp_us: 0,
        more: false,
        body: body.clone(),
    });
    let bytes = encode(&frame);
    println!(
        "DATA frame with a 64-byte body: {} bytes on the wire",
        bytes.len()
    );
    assert_eq!(bytes.len(), HEADER_LEN + DATA_PREFIX_LEN + 64);
    assert_eq!(bytes.len(), 86);
    // The sender's zero-copy path writes the same bytes.
    let mut fast = Vec::new();
    encode_data_header(&mut fast, Seq(1), 0, false, body.len());
    fast.extend_from_slice(&body);
    assert_eq!(fast, bytes);
}

#[test]
fn oversized_header_refused_without_payload() {
    let mut dec = Decoder::new(65_536);
    let mut header = u32::MAX.to_be_bytes().to_vec();
    header.extend_from_slice(&[kind::DATA, 0]);
    dec.feed(&header);
    assert_eq!(
        dec.decode(),
        Err(FrameError::TooLarge {
            len: u32::MAX,
            max: 65_536
        })
    );
    assert!(dec.buffered() <= HEADER_LEN);
    let mut dec = Decoder::new(65_536);
    dec.feed(&65_537u32.to_be_bytes());
    dec.feed(&[kind::HELLO, 0]);
    assert_eq!(
        dec.decode(),
        Err(FrameError::TooLarge {
            len: 65_537,
            max: 65_536
        })
    );
}

#[test]
fn field_length_limits_on_decode() {
    // A reason longer than 1,024 bytes.
    let mut p = Vec::new();
    p.extend_from_slice(&CloseCode::Normal.to_u16().to_be_bytes());
    p.extend_from_slice(&0u64.to_be_bytes());
    p.extend_from_slice(&1025u16.to_be_bytes());
    p.extend_from_slice(&[b'a'; 1025]);
    assert_eq!(
        decode_one(&raw_frame(kind::CLOSE, 0, &p)),
        Err(FrameError::Malformed("CLOSE"))
    );
    // Credentials longer than 4,096 bytes.
    let hello = Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        limits: Limits {
            max_frame: 65_536,
            max_message: 1,
            window: Window {
                messages: 1,
                bytes: 1,
            },
        },
        resume: None,
        first_seq: Seq(1),
        name: None,
        credentials: None,
        transforms: Vec::new(),
    });
    let bytes = encode(&hello);
    let mut p = bytes[HEADER_LEN..bytes.len() - 2].to_vec();
    p.extend_from_slice(&4097u16.to_be_bytes());
    p.extend_from_slice(&[7; 4097]);
    assert_eq!(
        decode_one(&raw_frame(kind::HELLO, 0, &p)),
        Err(FrameError::Malformed("HELLO"))
    );
    // A name that is not UTF-8.
    let mut p = bytes[HEADER_LEN..bytes.len() - 3].to_vec();
    p.extend_from_slice(&[2, 0xc3, 0x28, 0, 0]);
    assert_eq!(
        decode_one(&raw_frame(kind::HELLO, 0, &p)),
        Err(FrameError::Malformed("HELLO"))
    );
}

#[test]
fn overlong_fields_are_truncated_on_encode() {
    // 254 ASCII bytes and a 3-byte character: cut at the character boundary, 254 bytes.
    let name = format!("{}€", "n".repeat(254));
    let reason = format!("{}😀", "r".repeat(1_023));
    let hello = Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        limits: Limits {
            max_frame: 65_536,
            max_message: 1,
            window: Window {
                messages: 1,
                bytes: 1,
            },
        },
        resume: None,
        first_seq: Seq(1),
        name: Some(name),
        credentials: Some(Bytes::from(vec![1; 5_000])),
        transforms: Vec::new(),
    });
    let Some(Frame::Hello(h)) = decode_one(&encode(&hello)).unwrap() else {
        panic!("not a HELLO");
    };
    assert_eq!(h.name.as_deref(), Some("n".repeat(254).as_str()));
    assert_eq!(h.credentials.map(|c| c.len()), Some(MAX_CREDENTIALS_LEN));
    let close = Frame::Close(Close {
        code: CloseCode::Normal,
        delivered: Seq(3),
        reason,
    });
    let Some(Frame::Close(c)) = decode_one(&encode(&close)).unwrap() else {
        panic!("not a CLOSE");
    };
    assert_eq!(c.reason, "r".repeat(1_023));
}

/// A truncated PONG is reported as PONG, like a PONG with trailing bytes (regression: the
/// shared PING/PONG arm once named both PING).
#[test]
fn truncated_pong_names_pong() {
    assert_eq!(
        decode_one(&raw_frame(kind::PONG, 0, &[0; 9])),
        Err(FrameError::Malformed("PONG"))
    );
    assert_eq!(
        decode_one(&raw_frame(kind::PONG, 0, &[0; 7])),
        Err(FrameError::Malformed("PONG"))
    );
}

/// Regression (found by the connection_ops fuzzer): freeing an idle decoder's memory must not
/// forget a frame header whose payload has not arrived yet.
#[test]
fn shrinking_between_header_and_payload_keeps_the_frame() {
    let mut bytes = Vec::new();
    Frame::Ping(42).encode(&mut bytes);
    let mut d = Decoder::new(1 << 16);
    d.feed(&bytes[..HEADER_LEN]);
    assert_eq!(d.decode().unwrap(), None);
    assert_eq!(d.buffered(), 0, "the header was consumed");
    d.shrink();
    d.feed(&bytes[HEADER_LEN..]);
    assert_eq!(d.decode().unwrap(), Some(Frame::Ping(42)));
}
