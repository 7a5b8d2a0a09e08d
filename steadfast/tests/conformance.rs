//! Runs the language-neutral conformance vectors of `conformance/` (frames, streams,
//! scenarios; see conformance/README.md) against the protocol core. Every vector is run; the
//! test fails listing each vector that failed and why. It also checks that every file parses,
//! that ids are unique and that the suite is not trivially small.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use steadfast::proto::frame::{
    Close, Data, GoAway, HEADER_LEN, Hello, Reject, Timings, Welcome, WelcomeKind,
};
use steadfast::proto::{
    CloseCode, Config, Connection, ConnectionError, Decoder, Event, Frame, FrameError,
    HelloRequest, Limits, RejectCode, ResumeRequest, ResumeToken, Seq, Session, SessionEnd,
    SessionId, Window,
};

type R<T> = Result<T, String>;

// --------------------------------------------------------------------------------- loading

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance")
}

/// The vectors of one file, checked for the common fields: `id` (unique), `description`,
/// `version` (a non-empty list of 1 and 2).
fn load(name: &str) -> Vec<Value> {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
    let vectors = doc["vectors"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no `vectors` array"))
        .clone();
    let mut ids = HashSet::new();
    for v in &vectors {
        let id = v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a vector without id: {v}"));
        assert!(ids.insert(id.to_owned()), "{name}: duplicate id {id}");
        let desc = v["description"].as_str().unwrap_or("");
        assert!(
            !desc.is_empty() && desc.contains('§'),
            "{name}/{id}: the description must cite a PROTOCOL.md section"
        );
        let versions = v["version"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}/{id}: `version` must be a list"));
        assert!(
            !versions.is_empty()
                && versions
                    .iter()
                    .all(|x| x.as_u64().is_some_and(|n| n == 1 || n == 2)),
            "{name}/{id}: bad `version` {versions:?}"
        );
    }
    vectors
}

/// Runs `f` on every vector (panics count as failures) and returns the failures.
fn run_all(name: &str, vectors: &[Value], f: fn(&Value) -> R<()>) -> Vec<String> {
    let mut failures = Vec::new();
    for v in vectors {
        let id = v["id"].as_str().unwrap_or("?");
        match catch_unwind(AssertUnwindSafe(|| f(v))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}/{id}: {e}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{name}/{id}: panicked: {msg}"));
            }
        }
    }
    failures
}

#[test]
fn conformance_vectors() {
    let frames = load("frames.json");
    let streams = load("streams.json");
    let scenarios = load("scenarios.json");
    // Not trivial: enough vectors of each kind, every frame type, both versions.
    assert!(frames.len() >= 40, "only {} frame vectors", frames.len());
    assert!(streams.len() >= 50, "only {} stream vectors", streams.len());
    assert!(scenarios.len() >= 60, "only {} scenarios", scenarios.len());
    let types: HashSet<&str> = frames
        .iter()
        .filter_map(|v| v["frame"]["type"].as_str())
        .collect();
    for t in [
        "HELLO", "WELCOME", "REJECT", "DATA", "ACK", "PING", "PONG", "GOAWAY", "CLOSE",
    ] {
        assert!(types.contains(t), "no frame vector of type {t}");
    }
    for (name, vs) in [
        ("frames", &frames),
        ("streams", &streams),
        ("scenarios", &scenarios),
    ] {
        for version in [1, 2] {
            assert!(
                vs.iter()
                    .any(|v| v["version"].as_array().unwrap().contains(&json!(version))),
                "{name}: no vector for version {version}"
            );
        }
    }
    let roles: HashSet<&str> = scenarios
        .iter()
        .filter_map(|v| v["role"].as_str())
        .collect();
    assert!(roles.contains("server") && roles.contains("client"));

    let mut failures = run_all("frames", &frames, run_frame);
    failures.extend(run_all("streams", &streams, run_stream));
    failures.extend(run_all("scenarios", &scenarios, run_scenario));
    assert!(
        failures.is_empty(),
        "{} of {} conformance vectors failed:\n{}",
        failures.len(),
        frames.len() + streams.len() + scenarios.len(),
        failures.join("\n")
    );
    eprintln!(
        "conformance: {} frames, {} streams, {} scenarios passed",
        frames.len(),
        streams.len(),
        scenarios.len()
    );
}

// ------------------------------------------------------------------------ JSON <-> frames

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> R<Vec<u8>> {
    if s.len() % 2 != 0 || s.bytes().any(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("not lowercase hex: {s:.40}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn reject_code_json(c: RejectCode) -> Value {
    match c {
        RejectCode::Other(v) => json!(v),
        k => json!(format!("{k:?}")),
    }
}

fn close_code_json(c: CloseCode) -> Value {
    match c {
        CloseCode::Other(v) => json!(v),
        k => json!(format!("{k:?}")),
    }
}

fn reject_code(v: &Value) -> R<RejectCode> {
    if let Some(n) = v.as_u64() {
        return Ok(RejectCode::from_u16(n as u16));
    }
    let name = v.as_str().ok_or("code must be a name or a number")?;
    (0..=64)
        .map(RejectCode::from_u16)
        .find(|c| format!("{c:?}") == name)
        .ok_or_else(|| format!("unknown REJECT code name {name}"))
}

fn close_code(v: &Value) -> R<CloseCode> {
    if let Some(n) = v.as_u64() {
        return Ok(CloseCode::from_u16(n as u16));
    }
    let name = v.as_str().ok_or("code must be a name or a number")?;
    (0..=64)
        .map(CloseCode::from_u16)
        .find(|c| format!("{c:?}") == name)
        .ok_or_else(|| format!("unknown close code name {name}"))
}

fn limits_json(m: &mut Map<String, Value>, l: &Limits) {
    m.insert("max_frame".into(), json!(l.max_frame));
    m.insert("max_message".into(), json!(l.max_message));
    m.insert("window_messages".into(), json!(l.window.messages));
    m.insert("window_bytes".into(), json!(l.window.bytes));
}

/// The frame object of README.md "Frame objects", with every field, `flags` included.
fn frame_json(f: &Frame) -> Value {
    let mut m = Map::new();
    let (ty, flags) = match f {
        Frame::Hello(h) => ("HELLO", u8::from(h.resume.is_some())),
        Frame::Welcome(w) => (
            "WELCOME",
            u8::from(matches!(w.kind, WelcomeKind::Resumed { .. })),
        ),
        Frame::Reject(_) => ("REJECT", 0),
        Frame::Data(d) => (
            "DATA",
            u8::from(d.more) | if d.offset.is_some() { 2 } else { 0 },
        ),
        Frame::Ack { .. } => ("ACK", 0),
        Frame::Ping(_) => ("PING", 0),
        Frame::Pong(_) => ("PONG", 0),
        Frame::GoAway(_) => ("GOAWAY", 0),
        Frame::Close(_) => ("CLOSE", 0),
    };
    m.insert("type".into(), json!(ty));
    m.insert("flags".into(), json!(flags));
    match f {
        Frame::Hello(h) => {
            m.insert("min_version".into(), json!(h.min_version));
            m.insert("max_version".into(), json!(h.max_version));
            limits_json(&mut m, &h.limits);
            match &h.resume {
                Some(r) => {
                    m.insert("session_id".into(), json!(hex(&r.session_id.0)));
                    m.insert("resume_token".into(), json!(hex(&r.token.0)));
                    m.insert("received".into(), json!(r.received.0));
                    if h.min_version >= 2 {
                        m.insert("partial".into(), json!(r.partial));
                    }
                }
                None => {
                    m.insert("first_seq".into(), json!(h.first_seq.0));
                }
            }
            m.insert("name".into(), json!(h.name.clone().unwrap_or_default()));
            m.insert(
                "credentials".into(),
                json!(hex(h.credentials.as_deref().unwrap_or(&[]))),
            );
            m.insert("transforms".into(), json!(h.transforms));
        }
        Frame::Welcome(w) => {
            m.insert("version".into(), json!(w.version));
            m.insert("session_id".into(), json!(hex(&w.session_id.0)));
            m.insert("resume_token".into(), json!(hex(&w.token.0)));
            limits_json(&mut m, &w.limits);
            if let Some(t) = w.timings {
                m.insert("keepalive_ms".into(), json!(t.keepalive_ms));
                m.insert("idle_timeout_ms".into(), json!(t.idle_timeout_ms));
            }
            match w.kind {
                WelcomeKind::New { first_seq } => {
                    m.insert("first_seq".into(), json!(first_seq.0));
                }
                WelcomeKind::Resumed {
                    received,
                    delivered,
                    partial,
                } => {
                    m.insert("received".into(), json!(received.0));
                    m.insert("delivered".into(), json!(delivered.0));
                    if w.version >= 2 {
                        m.insert("partial".into(), json!(partial));
                    }
                }
            }
            m.insert("transforms".into(), json!(w.transforms));
        }
        Frame::Reject(r) => {
            m.insert("code".into(), reject_code_json(r.code));
            m.insert("retry_after_ms".into(), json!(r.retry_after_ms));
            m.insert("min_version".into(), json!(r.min_version));
            m.insert("max_version".into(), json!(r.max_version));
            m.insert("reason".into(), json!(r.reason));
        }
        Frame::Data(d) => {
            m.insert("seq".into(), json!(d.seq.0));
            m.insert("timestamp_us".into(), json!(d.timestamp_us));
            m.insert("more".into(), json!(d.more));
            if let Some(o) = d.offset {
                m.insert("offset".into(), json!(o));
            }
            m.insert("body".into(), json!(hex(&d.body)));
        }
        Frame::Ack { delivered, window } => {
            m.insert("delivered".into(), json!(delivered.0));
            m.insert("window_messages".into(), json!(window.messages));
            m.insert("window_bytes".into(), json!(window.bytes));
        }
        Frame::Ping(v) | Frame::Pong(v) => {
            m.insert("value".into(), json!(v));
        }
        Frame::GoAway(g) => {
            m.insert("code".into(), close_code_json(g.code));
            m.insert("retry_after_ms".into(), json!(g.retry_after_ms));
            m.insert("reason".into(), json!(g.reason));
        }
        Frame::Close(c) => {
            m.insert("code".into(), close_code_json(c.code));
            m.insert("delivered".into(), json!(c.delivered.0));
            m.insert("reason".into(), json!(c.reason));
        }
    }
    Value::Object(m)
}

fn get_u64(o: &Value, k: &str) -> R<u64> {
    o[k].as_u64()
        .ok_or_else(|| format!("field {k} missing or not an integer in {o}"))
}

fn get_u32(o: &Value, k: &str) -> R<u32> {
    u32::try_from(get_u64(o, k)?).map_err(|_| format!("{k} above u32"))
}

fn get_u16(o: &Value, k: &str) -> R<u16> {
    u16::try_from(get_u64(o, k)?).map_err(|_| format!("{k} above u16"))
}

fn get_str<'a>(o: &'a Value, k: &str) -> R<&'a str> {
    o[k].as_str()
        .ok_or_else(|| format!("field {k} missing or not a string in {o}"))
}

fn get_16(o: &Value, k: &str) -> R<[u8; 16]> {
    unhex(get_str(o, k)?)?
        .try_into()
        .map_err(|_| format!("{k} is not 16 bytes"))
}

fn get_names(o: &Value, k: &str) -> R<Vec<String>> {
    o[k].as_array()
        .ok_or_else(|| format!("{k} must be a list"))?
        .iter()
        .map(|n| {
            n.as_str()
                .map(str::to_owned)
                .ok_or("a name must be a string".into())
        })
        .collect()
}

fn get_limits(o: &Value) -> R<Limits> {
    Ok(Limits {
        max_frame: get_u32(o, "max_frame")?,
        max_message: get_u32(o, "max_message")?,
        window: Window {
            messages: get_u32(o, "window_messages")?,
            bytes: get_u32(o, "window_bytes")?,
        },
    })
}

/// A frame from a complete frame object.
fn json_frame(o: &Value) -> R<Frame> {
    let f = match get_str(o, "type")? {
        "HELLO" => {
            let resume = if o.get("session_id").is_some() {
                Some(ResumeRequest {
                    session_id: SessionId(get_16(o, "session_id")?),
                    token: ResumeToken(get_16(o, "resume_token")?),
                    received: Seq(get_u64(o, "received")?),
                    partial: o.get("partial").map_or(Ok(0), |_| get_u64(o, "partial"))?,
                })
            } else {
                None
            };
            let name = get_str(o, "name")?;
            let cred = unhex(get_str(o, "credentials")?)?;
            Frame::Hello(Hello {
                min_version: get_u16(o, "min_version")?,
                max_version: get_u16(o, "max_version")?,
                limits: get_limits(o)?,
                first_seq: if resume.is_some() {
                    Seq(0)
                } else {
                    Seq(get_u64(o, "first_seq")?)
                },
                resume,
                name: (!name.is_empty()).then(|| name.to_owned()),
                credentials: (!cred.is_empty()).then(|| Bytes::from(cred)),
                transforms: get_names(o, "transforms")?,
            })
        }
        "WELCOME" => Frame::Welcome(Welcome {
            version: get_u16(o, "version")?,
            session_id: SessionId(get_16(o, "session_id")?),
            token: ResumeToken(get_16(o, "resume_token")?),
            limits: get_limits(o)?,
            kind: if o.get("received").is_some() {
                WelcomeKind::Resumed {
                    received: Seq(get_u64(o, "received")?),
                    delivered: Seq(get_u64(o, "delivered")?),
                    partial: o.get("partial").map_or(Ok(0), |_| get_u64(o, "partial"))?,
                }
            } else {
                WelcomeKind::New {
                    first_seq: Seq(get_u64(o, "first_seq")?),
                }
            },
            transforms: get_names(o, "transforms")?,
            timings: match o.get("keepalive_ms") {
                Some(_) => Some(Timings {
                    keepalive_ms: get_u32(o, "keepalive_ms")?,
                    idle_timeout_ms: get_u32(o, "idle_timeout_ms")?,
                }),
                None => None,
            },
        }),
        "REJECT" => Frame::Reject(Reject {
            code: reject_code(&o["code"])?,
            retry_after_ms: get_u32(o, "retry_after_ms")?,
            min_version: get_u16(o, "min_version")?,
            max_version: get_u16(o, "max_version")?,
            reason: get_str(o, "reason")?.to_owned(),
        }),
        "DATA" => Frame::Data(Data {
            seq: Seq(get_u64(o, "seq")?),
            timestamp_us: get_u64(o, "timestamp_us")?,
            more: o["more"].as_bool().ok_or("more must be a boolean")?,
            offset: match o.get("offset") {
                Some(_) => Some(get_u64(o, "offset")?),
                None => None,
            },
            body: Bytes::from(unhex(get_str(o, "body")?)?),
        }),
        "ACK" => Frame::Ack {
            delivered: Seq(get_u64(o, "delivered")?),
            window: Window {
                messages: get_u32(o, "window_messages")?,
                bytes: get_u32(o, "window_bytes")?,
            },
        },
        "PING" => Frame::Ping(get_u64(o, "value")?),
        "PONG" => Frame::Pong(get_u64(o, "value")?),
        "GOAWAY" => Frame::GoAway(GoAway {
            code: close_code(&o["code"])?,
            retry_after_ms: get_u32(o, "retry_after_ms")?,
            reason: get_str(o, "reason")?.to_owned(),
        }),
        "CLOSE" => Frame::Close(Close {
            code: close_code(&o["code"])?,
            delivered: Seq(get_u64(o, "delivered")?),
            reason: get_str(o, "reason")?.to_owned(),
        }),
        other => return Err(format!("unknown frame type {other}")),
    };
    Ok(f)
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut buf = Vec::new();
    f.encode(&mut buf);
    buf
}

/// Whether `actual` has every field of `expected` with the same value (objects recursively;
/// lists and scalars exactly).
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (e, a) => e == a,
    }
}

fn versions(v: &Value) -> Vec<u16> {
    v["version"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u16)
        .collect()
}

// ---------------------------------------------------------------------------- frames.json

fn run_frame(v: &Value) -> R<()> {
    let bytes = unhex(get_str(v, "hex")?)?;
    let expected = &v["frame"];
    if bytes.len() < HEADER_LEN {
        return Err("shorter than a header".into());
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len != bytes.len() - HEADER_LEN {
        return Err(format!(
            "length field {len}, payload {}",
            bytes.len() - HEADER_LEN
        ));
    }
    for version in versions(v) {
        let f = Frame::parse_in(
            version,
            bytes[4],
            bytes[5],
            Bytes::copy_from_slice(&bytes[HEADER_LEN..]),
        )
        .map_err(|e| format!("version {version}: does not parse: {e}"))?;
        let got = frame_json(&f);
        if &got != expected {
            return Err(format!(
                "version {version}: decoded {got}\n  expected {expected}"
            ));
        }
    }
    let built = json_frame(expected)?;
    let enc = encode(&built);
    if enc != bytes {
        return Err(format!(
            "encoding the fields gives {}\n  expected {}",
            hex(&enc),
            hex(&bytes)
        ));
    }
    Ok(())
}

// --------------------------------------------------------------------------- streams.json

fn error_name(e: &FrameError) -> (&'static str, Option<&'static str>) {
    match e {
        FrameError::TooLarge { .. } => ("TooLarge", None),
        FrameError::UnknownType(_) => ("UnknownType", None),
        FrameError::ReservedFlags { .. } => ("ReservedFlags", None),
        FrameError::BadMagic => ("BadMagic", None),
        FrameError::Malformed(name) => ("Malformed", Some(name)),
        _ => ("unknown", None),
    }
}

fn run_stream(v: &Value) -> R<()> {
    let max_frame = get_u32(v, "max_frame")?;
    let chunks: Vec<Vec<u8>> = v["input"]
        .as_array()
        .ok_or("input must be a list")?
        .iter()
        .map(|c| unhex(c.as_str().ok_or("input chunks are hex strings")?))
        .collect::<R<_>>()?;
    let expected_frames = v["frames"].as_array().ok_or("frames must be a list")?;
    let end = get_str(v, "end")?;
    for version in versions(v) {
        let mut dec = Decoder::new(max_frame);
        dec.set_version(version);
        let (mut fed, mut consumed) = (0usize, 0usize);
        let mut got = Vec::new();
        let mut error = None;
        'feed: for c in &chunks {
            dec.feed(c);
            fed += c.len();
            loop {
                match dec.decode() {
                    Ok(Some(f)) => {
                        consumed += encode(&f).len();
                        got.push(frame_json(&f));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        if got.len() != expected_frames.len()
            || got.iter().zip(expected_frames).any(|(g, e)| g != e)
        {
            return Err(format!(
                "version {version}: decoded {got:?}\n  expected {expected_frames:?}"
            ));
        }
        let outcome = match &error {
            Some(e) => error_name(e),
            None if fed > consumed => ("incomplete", None),
            None => ("complete", None),
        };
        let want_frame = v.get("malformed_frame").and_then(Value::as_str);
        if outcome.0 != end || (end == "Malformed" && outcome.1 != want_frame) {
            return Err(format!(
                "version {version}: ended with {outcome:?} ({error:?}), expected {end} {want_frame:?}"
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------ scenarios.json

fn config(c: &Value) -> R<(Config, Option<String>)> {
    let mut cfg = Config::default();
    let mut window = Window {
        messages: 8_192,
        bytes: 8 << 20,
    };
    let mut name = None;
    let ms = |k: &str| get_u64(c, k).map(Duration::from_millis);
    for (k, _) in c.as_object().ok_or("config must be an object")? {
        cfg = match k.as_str() {
            "versions" => {
                let r = c[k].as_array().ok_or("versions must be [min, max]")?;
                let n = |i: usize| r.get(i).and_then(Value::as_u64).unwrap_or(0) as u16;
                cfg.versions(n(0), n(1))
            }
            "max_frame" => cfg.max_frame(get_u32(c, k)?),
            "max_chunk" => cfg.max_chunk(get_u32(c, k)?),
            "max_message" => cfg.max_message(get_u32(c, k)?),
            "window_messages" => {
                window.messages = get_u32(c, k)?;
                cfg
            }
            "window_bytes" => {
                window.bytes = get_u32(c, k)?;
                cfg
            }
            "keepalive_ms" => cfg.keepalive_interval(ms(k)?),
            "idle_timeout_ms" => cfg.idle_timeout(ms(k)?),
            "handshake_timeout_ms" => cfg.handshake_timeout(ms(k)?),
            "ack_delay_ms" => cfg.ack_delay(ms(k)?),
            "initial_seq" => cfg.initial_seq(Seq(get_u64(c, k)?)),
            "transforms" => cfg.transforms(get_names(c, k)?),
            "required_transforms" => cfg.required_transforms(get_names(c, k)?),
            "name" => {
                name = Some(get_str(c, k)?.to_owned());
                cfg
            }
            other => return Err(format!("unknown config key {other}")),
        };
    }
    let cfg = cfg.window(window);
    cfg.validate().map_err(|e| e.to_string())?;
    Ok((cfg, name))
}

fn event_json(e: &Event) -> Option<Value> {
    Some(match e {
        Event::Hello(HelloRequest {
            version,
            name,
            credentials,
            resume,
        }) => {
            let mut v = json!({
                "event": "hello_received",
                "version": version,
                "resume": resume.is_some(),
                "name": name.clone().unwrap_or_default(),
                "credentials": hex(credentials.as_deref().unwrap_or(&[])),
            });
            if let Some(r) = resume {
                v["session_id"] = json!(hex(&r.session_id.0));
                v["received"] = json!(r.received.0);
                v["partial"] = json!(r.partial);
            }
            v
        }
        Event::Established {
            session_id,
            resumed,
        } => json!({"event": "established", "session_id": hex(&session_id.0), "resumed": resumed}),
        Event::Acknowledged { first, end } => {
            json!({"event": "acknowledged", "first": first.0, "end": end.0})
        }
        Event::Disconnected(err) => {
            let (cause, code) = match err {
                ConnectionError::Reset => ("transport_closed", None),
                ConnectionError::IdleTimeout => ("idle_timeout", None),
                ConnectionError::HandshakeTimeout => ("handshake_timeout", None),
                ConnectionError::GoAway { code, .. } => {
                    ("peer_goaway", Some(close_code_json(*code)))
                }
                ConnectionError::LocalGoAway => ("local_goaway", None),
                ConnectionError::TakenOver => ("taken_over", None),
                ConnectionError::Rejected { code, .. } => {
                    ("rejected", Some(reject_code_json(*code)))
                }
                ConnectionError::ProtocolViolation(_) => ("violation", None),
                _ => ("unknown", None),
            };
            let mut v = json!({"event": "connection_ended", "cause": cause});
            if let Some(c) = code {
                v["code"] = c;
            }
            v
        }
        Event::SessionEnded {
            reason,
            unacknowledged,
            discarded,
        } => {
            let mut v = json!({
                "event": "session_ended",
                "unacknowledged": unacknowledged.iter().map(|m| m.seq.0).collect::<Vec<_>>(),
                "discarded": discarded,
            });
            match reason {
                SessionEnd::Closed {
                    by_peer,
                    code,
                    confirmed,
                    ..
                } => {
                    v["cause"] = json!("closed");
                    v["code"] = close_code_json(*code);
                    v["by_peer"] = json!(by_peer);
                    v["confirmed"] = json!(confirmed);
                }
                SessionEnd::Rejected { code, .. } => {
                    v["cause"] = json!("rejected");
                    v["code"] = reject_code_json(*code);
                }
                SessionEnd::PeerLimit { .. } => {
                    v["cause"] = json!("peer_limit");
                    v["code"] = json!("MessageTooLarge");
                }
                SessionEnd::ProtocolViolation { code, .. } => {
                    v["cause"] = json!("violation");
                    v["code"] = close_code_json(*code);
                }
                _ => v["cause"] = json!("unknown"),
            }
            v
        }
        // Arrival notifications and round-trip measurements are not part of the suite.
        _ => return None,
    })
}

/// One side under test, driven by a scenario's steps on a virtual clock.
struct Harness {
    server: bool,
    config: Config,
    name: Option<String>,
    now: Instant,
    conn: Option<Connection>,
    /// Client: its session between connections (or before the first).
    client_session: Option<Session>,
    /// Server: the application's table of sessions no connection carries.
    table: HashMap<SessionId, Session>,
    /// Server: the HELLO waiting for the application's answer.
    hello: Option<HelloRequest>,
    out: Vec<u8>,
    events: Vec<Value>,
}

impl Harness {
    fn conn(&mut self) -> R<&mut Connection> {
        self.conn.as_mut().ok_or_else(|| "no connection".into())
    }

    /// Collects what the side writes and reports; keeps a surviving session when a connection
    /// ends.
    fn pump(&mut self) {
        let now = self.now;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        loop {
            while conn.poll_transmit(now, &mut self.out) > 0 {}
            let mut any = false;
            while let Some(e) = conn.poll_event() {
                any = true;
                if let Event::Hello(h) = &e {
                    self.hello = Some(h.clone());
                }
                if let Event::Disconnected(_) = &e
                    && let Some(s) = conn.take_session()
                {
                    if self.server {
                        if let Some(id) = s.id() {
                            self.table.insert(id, s);
                        }
                    } else {
                        self.client_session = Some(s);
                    }
                }
                if let Some(v) = event_json(&e) {
                    self.events.push(v);
                }
            }
            if !any {
                break;
            }
        }
    }

    fn session_for_send(&mut self) -> R<&mut Session> {
        if let Some(c) = self.conn.as_mut()
            && c.session().is_some()
        {
            return Ok(c.session_mut().unwrap());
        }
        if self.server {
            return Err("no session to send on".into());
        }
        let (cfg, name) = (&self.config, self.name.clone());
        Ok(self
            .client_session
            .get_or_insert_with(|| Session::client(cfg, name)))
    }

    fn step(&mut self, s: &Value) -> R<()> {
        if let Some(c) = s.get("connect") {
            if self.server {
                self.conn = Some(
                    Connection::accept(self.config.clone(), self.now).map_err(|e| e.to_string())?,
                );
            } else {
                let session = match self.client_session.take() {
                    Some(s) => s,
                    None => Session::client(&self.config, self.name.clone()),
                };
                let cred = match c.get("credentials") {
                    Some(h) => Some(Bytes::from(unhex(h.as_str().ok_or("credentials: hex")?)?)),
                    None => None,
                };
                self.conn = Some(
                    Connection::connect(self.config.clone(), self.now, session, cred)
                        .map_err(|e| e.to_string())?,
                );
            }
        } else if let Some(h) = s.get("peer_sends") {
            let bytes = unhex(h.as_str().ok_or("peer_sends: hex")?)?;
            if let Some(frames) = s.get("peer_frames") {
                // Informative field: it must say what the bytes are.
                let mut dec = Decoder::new(u32::MAX);
                dec.set_version(2);
                dec.feed(&bytes);
                let mut got = Vec::new();
                while let Some(f) = dec.decode().map_err(|e| format!("peer_sends: {e}"))? {
                    got.push(frame_json(&f));
                }
                if &Value::Array(got.clone()) != frames {
                    return Err(format!("peer_frames do not describe peer_sends: {got:?}"));
                }
            }
            let now = self.now;
            self.conn()?.handle_input(now, &bytes);
        } else if let Some(action) = s.get("app").and_then(Value::as_str) {
            let now = self.now;
            match action {
                "accept_new" => {
                    let id = SessionId(get_16(s, "session_id")?);
                    let token = ResumeToken(get_16(s, "resume_token")?);
                    self.hello = None;
                    self.conn()?.accept_new(now, id, token);
                }
                "accept_resume" => {
                    let fresh = ResumeToken(get_16(s, "resume_token")?);
                    let hello = self.hello.take().ok_or("no HELLO to answer")?;
                    let id = hello.resume.ok_or("the HELLO is not a resume")?.session_id;
                    match self.table.remove(&id) {
                        Some(session) => {
                            if let Err(back) = self.conn()?.accept_resume(now, session, fresh) {
                                self.table.insert(id, *back);
                            }
                        }
                        None => {
                            self.conn()?
                                .reject(RejectCode::UnknownSession, 0, "unknown session")
                        }
                    }
                }
                "reject" => {
                    let code = reject_code(&s["code"])?;
                    let retry = get_u32(s, "retry_after_ms")?;
                    let reason = get_str(s, "reason")?.to_owned();
                    self.hello = None;
                    self.conn()?.reject(code, retry, &reason);
                }
                "send" => {
                    let body = Bytes::from(unhex(get_str(s, "body")?)?);
                    let ts = s.get("timestamp_us").and_then(Value::as_u64).unwrap_or(0);
                    self.session_for_send()?
                        .send(body, ts)
                        .map_err(|e| format!("send: {e}"))?;
                }
                "recv" => {
                    let got = self.conn()?.recv();
                    let expect = &s["expect"];
                    match (got, expect) {
                        (None, Value::Null) => {}
                        (Some(m), e) if !e.is_null() => {
                            let g = json!({"seq": m.seq.0, "body": hex(&m.body),
                                "timestamp_us": m.timestamp_us});
                            if !matches(e, &g) {
                                return Err(format!("recv gave {g}, expected {e}"));
                            }
                        }
                        (g, e) => return Err(format!("recv gave {g:?}, expected {e}")),
                    }
                }
                "close" => {
                    let code = close_code(&s["code"])?;
                    let reason = get_str(s, "reason")?.to_owned();
                    self.conn()?.close(now, code, &reason);
                }
                other => return Err(format!("unknown app action {other}")),
            }
        } else if s.get("transport_closed").is_some() {
            self.conn()?.handle_disconnect();
        } else if let Some(ms) = s.get("advance_ms").and_then(Value::as_u64) {
            let target = self.now + Duration::from_millis(ms);
            while let Some(t) = self.conn.as_ref().and_then(Connection::poll_timeout) {
                if t > target {
                    break;
                }
                self.now = self.now.max(t);
                let now = self.now;
                self.conn()?.handle_timeout(now);
                self.pump();
            }
            self.now = target;
        } else if let Some(exp) = s.get("expect_sent") {
            let exp = exp.as_array().ok_or("expect_sent must be a list")?;
            let allow: Vec<&str> = s
                .get("allow_other")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut dec = Decoder::new(u32::MAX);
            dec.set_version(2);
            dec.feed(&self.out);
            let mut got = Vec::new();
            while let Some(f) = dec
                .decode()
                .map_err(|e| format!("the side wrote an invalid frame: {e}"))?
            {
                got.push(frame_json(&f));
            }
            if dec.buffered() != 0 {
                return Err("the side wrote a partial frame".into());
            }
            self.out.clear();
            let mut want = exp.iter().peekable();
            for g in &got {
                if want.peek().is_some_and(|w| matches(w, g)) {
                    want.next();
                } else if !allow.contains(&g["type"].as_str().unwrap_or("")) {
                    return Err(format!("sent {got:?}\n  expected {exp:?}"));
                }
            }
            if want.peek().is_some() {
                return Err(format!("sent {got:?}\n  expected {exp:?}"));
            }
        } else if let Some(exp) = s.get("expect_events") {
            let exp = exp.as_array().ok_or("expect_events must be a list")?;
            let got = std::mem::take(&mut self.events);
            if got.len() != exp.len() || got.iter().zip(exp).any(|(g, e)| !matches(e, g)) {
                return Err(format!("events {got:?}\n  expected {exp:?}"));
            }
        } else {
            return Err(format!("unknown step {s}"));
        }
        self.pump();
        Ok(())
    }
}

fn run_scenario(v: &Value) -> R<()> {
    let server = match get_str(v, "role")? {
        "server" => true,
        "client" => false,
        other => return Err(format!("unknown role {other}")),
    };
    let (config, name) = config(&v["config"])?;
    let mut h = Harness {
        server,
        config,
        name,
        now: Instant::now(),
        conn: None,
        client_session: None,
        table: HashMap::new(),
        hello: None,
        out: Vec::new(),
        events: Vec::new(),
    };
    let steps = v["steps"].as_array().ok_or("steps must be a list")?;
    for (i, s) in steps.iter().enumerate() {
        h.step(s).map_err(|e| {
            let text: String = s.to_string().chars().take(200).collect();
            format!("step {i} {text}: {e}")
        })?;
    }
    if !h.out.is_empty() {
        let mut dec = Decoder::new(u32::MAX);
        dec.set_version(2);
        dec.feed(&h.out);
        let mut got = Vec::new();
        while let Ok(Some(f)) = dec.decode() {
            got.push(frame_json(&f));
        }
        return Err(format!("unchecked output at the end: {got:?}"));
    }
    if !h.events.is_empty() {
        return Err(format!("unchecked events at the end: {:?}", h.events));
    }
    Ok(())
}
