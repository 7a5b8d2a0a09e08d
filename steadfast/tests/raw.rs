//! The raw framing layer: any split of the byte stream gives the same frames; limits and
//! truncation are errors, not panics or allocations.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use steadfast::raw::{Framed, RawError};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn frames_survive_any_split_and_limits_hold() {
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; i * 37]).collect();
    let mut wire = Vec::new();
    for p in &payloads {
        wire.extend_from_slice(&(p.len() as u32).to_be_bytes());
        wire.extend_from_slice(p);
    }
    for step in [1, 3, 7, 64, 1_000, wire.len()] {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        let chunks = wire.clone();
        let writer = tokio::spawn(async move {
            for c in chunks.chunks(step) {
                w.write_all(c).await.unwrap();
            }
        });
        let mut f = Framed::new(r, 4_096);
        for p in &payloads {
            assert_eq!(
                &f.recv().await.unwrap().unwrap()[..],
                &p[..],
                "split {step}"
            );
        }
        writer.await.unwrap();
        assert!(f.recv().await.unwrap().is_none());
    }
}

#[tokio::test]
async fn oversized_and_truncated_frames_are_errors() {
    let (mut w, r) = tokio::io::duplex(1 << 16);
    let mut f = Framed::new(r, 100);
    w.write_all(&101u32.to_be_bytes()).await.unwrap();
    assert!(matches!(
        f.recv().await,
        Err(RawError::TooLarge { len: 101, max: 100 })
    ));

    let (mut w, r) = tokio::io::duplex(1 << 16);
    let mut f = Framed::new(r, 100);
    w.write_all(&[0, 0, 0, 10, 1, 2, 3]).await.unwrap();
    drop(w);
    assert!(matches!(f.recv().await, Err(RawError::Truncated)));

    let (a, _b) = tokio::io::duplex(1 << 16);
    let mut f = Framed::new(a, 4);
    assert!(matches!(
        f.send(b"12345").await,
        Err(RawError::TooLarge { len: 5, max: 4 })
    ));
}
