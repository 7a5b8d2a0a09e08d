//! Typed messages are language-neutral: a Python peer using only the `msgpack` package
//! (`tests/interop/msgpack_peer.py`) exchanges them with the raw framing layer.
//!
//! Needs `python3` with `msgpack` (`.ci/run` installs it with pip and sets
//! `STEADFAST_REQUIRE_PYTHON=1`, which turns a missing interpreter or package into a failure;
//! elsewhere the test says it was skipped).

#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)]

use std::fmt;
use std::process::Command;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use steadfast::raw::Framed;
use tokio::net::TcpListener;

/// What the Python peer sends.
#[derive(Debug, Deserialize, PartialEq)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<String>,
    total: f64,
    express: bool,
    note: Option<String>,
    blob: Binary,
}

/// What the Rust side answers.
#[derive(Debug, Serialize)]
struct Receipt {
    order: u64,
    accepted: bool,
    items: usize,
    customer: String,
    digest: Vec<u8>,
}

/// MessagePack `bin` data (Python `bytes`).
#[derive(Debug, PartialEq)]
struct Binary(Vec<u8>);

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Binary;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("binary data")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Binary, E> {
                Ok(Binary(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

fn python_with_msgpack() -> bool {
    Command::new("python3")
        .args(["-c", "import msgpack"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn a_python_msgpack_peer_exchanges_typed_messages() {
    if !python_with_msgpack() {
        assert!(
            std::env::var_os("STEADFAST_REQUIRE_PYTHON").is_none(),
            "python3 with the msgpack package is required (pip install msgpack)"
        );
        eprintln!("skipped: python3 with msgpack not found (pip install msgpack)");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/msgpack_peer.py");
    let child = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "127.0.0.1", &addr.port().to_string()])
            .output()
            .unwrap()
    });
    let (stream, _) = tokio::time::timeout(std::time::Duration::from_secs(20), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut framed = Framed::new(stream, 1 << 20);
    let payload = framed.recv().await.unwrap().unwrap();
    let order: Order = steadfast::typed::decode(&payload).unwrap();
    assert_eq!(
        order,
        Order {
            id: 7,
            customer: "Zoë".into(),
            items: vec!["tea".into(), "scones".into()],
            total: 12.5,
            express: true,
            note: None,
            blob: Binary(vec![0, 1, 255]),
        }
    );
    let reply = Receipt {
        order: order.id,
        accepted: order.express,
        items: order.items.len(),
        customer: order.customer.clone(),
        digest: order.blob.0.clone(),
    };
    framed
        .send(&steadfast::typed::encode(&reply).unwrap())
        .await
        .unwrap();
    let out = child.await.unwrap();
    assert!(
        out.status.success(),
        "python peer failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
