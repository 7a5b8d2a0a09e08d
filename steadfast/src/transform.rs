//! Message transforms: an ordered chain applied to every message body (PROTOCOL.md §4.7).
//!
//! A [`Transform`] turns a body into what goes on the wire ([`Transform::encode`]) and back
//! ([`Transform::decode`]). A [`Chain`] applies its transforms in order when sending and in
//! reverse order when receiving, so a chain `[sign, lz4]` signs first and compresses the
//! signed body. Typical transforms: compression ([`Lz4`] with the `lz4` feature, [`Zstd`] with
//! the `zstd` feature) and an application's own signing or encryption.
//!
//! Both ends must agree. The client's HELLO lists its chain by name; the server accepts the
//! whole chain, in the client's order, only if it supports every transform in it and the chain
//! holds every transform the server requires; otherwise the handshake is refused with
//! `Incompatible` and a reason naming the transform. The chain is fixed for the session's life
//! (messages queued before a reconnect were encoded with it).
//!
//! Errors are per message: a body the chain cannot encode is refused by `send` with
//! [`SendError::Transform`](crate::proto::SendError::Transform) (nothing queued); a received
//! body that does not decode is reported by `recv` as an error for that message — the message
//! counts as taken (acknowledged), the session goes on, and the next `recv` returns the next
//! message. A decoder never produces more than the receiver's maximum message size, whatever
//! the compressed body claims.
//!
//! ```
//! # #[cfg(feature = "runtime")] {
//! use bytes::Bytes;
//! use steadfast::transform::{Transform, TransformError};
//!
//! /// Appends a one-byte checksum and checks it on the way in.
//! #[derive(Debug)]
//! struct Checksum;
//!
//! impl Transform for Checksum {
//!     fn name(&self) -> &str {
//!         "checksum"
//!     }
//!     fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
//!         let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
//!         let mut out = body.to_vec();
//!         out.push(sum);
//!         Ok(out.into())
//!     }
//!     fn decode(&self, mut body: Bytes, _max_len: usize) -> Result<Bytes, TransformError> {
//!         let Some(&sum) = body.last() else {
//!             return Err(TransformError::new(self.name(), "empty body"));
//!         };
//!         let body = body.split_to(body.len() - 1);
//!         if body.iter().fold(0u8, |a, b| a.wrapping_add(*b)) != sum {
//!             return Err(TransformError::new(self.name(), "checksum mismatch"));
//!         }
//!         Ok(body)
//!     }
//! }
//!
//! let config = steadfast::ClientConfig::default().transform(Checksum);
//! # let _ = config;
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// One step of a message transform chain. Implementations must be deterministic inverses:
/// `decode(encode(b)) == b`.
pub trait Transform: Send + Sync + fmt::Debug {
    /// The name both ends agree on in the handshake: 1 to 32 bytes of visible ASCII, for
    /// example `"lz4"` or `"acme-sign-v1"`.
    fn name(&self) -> &str;

    /// Turns an outgoing body into what the next step (or the wire) gets.
    ///
    /// # Errors
    /// [`TransformError`] when this body cannot be encoded; the message is not sent.
    fn encode(&self, body: Bytes) -> Result<Bytes, TransformError>;

    /// Turns an incoming body back. The result must not exceed `max_len` bytes: check the
    /// output size while producing it, never trust a size the body announces.
    ///
    /// # Errors
    /// [`TransformError`] when the body is not a valid encoding, or decodes to more than
    /// `max_len` bytes.
    fn decode(&self, body: Bytes, max_len: usize) -> Result<Bytes, TransformError>;
}

/// A transform refused a message body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("message transform {transform:?}: {reason}")]
pub struct TransformError {
    /// The name of the transform that failed.
    pub transform: String,
    /// What went wrong.
    pub reason: String,
}

impl TransformError {
    /// An error of transform `transform`.
    pub fn new(transform: &str, reason: impl Into<String>) -> Self {
        TransformError {
            transform: transform.to_owned(),
            reason: reason.into(),
        }
    }
}

/// An ordered list of transforms. Cheap to clone.
#[derive(Clone, Default)]
pub struct Chain {
    steps: Vec<Arc<dyn Transform>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|t| t.name()))
            .finish()
    }
}

impl Chain {
    /// An empty chain: bodies go out as they are.
    pub fn new() -> Self {
        Chain::default()
    }

    /// Appends a transform: it runs after the ones before it when sending, before them when
    /// receiving.
    pub fn push(&mut self, t: Arc<dyn Transform>) {
        self.steps.push(t);
    }

    /// Whether the chain has no transforms.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The transforms' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.steps.iter().map(|t| t.name().to_owned()).collect()
    }

    /// Applies every transform in order.
    ///
    /// # Errors
    /// The first transform's error.
    pub fn encode(&self, mut body: Bytes) -> Result<Bytes, TransformError> {
        for t in &self.steps {
            body = t.encode(body)?;
        }
        Ok(body)
    }

    /// Applies every transform's inverse, last first. Every step's output is bounded by
    /// `max_len`, intermediate ones included: a decoder is never made to produce more than the
    /// receiver accepts.
    ///
    /// # Errors
    /// The first transform's error.
    pub fn decode(&self, mut body: Bytes, max_len: usize) -> Result<Bytes, TransformError> {
        for t in self.steps.iter().rev() {
            body = t.decode(body, max_len)?;
        }
        Ok(body)
    }

    /// The transforms named by `names`, in that order, picked from this chain (used as the set
    /// a server supports). `None` if one is missing.
    #[cfg(feature = "runtime")]
    pub(crate) fn select(&self, names: &[String]) -> Option<Chain> {
        let steps = names
            .iter()
            .map(|n| self.steps.iter().find(|t| t.name() == n).cloned())
            .collect::<Option<Vec<_>>>()?;
        Some(Chain { steps })
    }
}

/// Reads `input` to the end through a decoder, failing once the output passes `max_len`.
#[cfg(any(feature = "lz4", feature = "zstd"))]
fn read_bounded(
    name: &str,
    reader: impl std::io::Read,
    max_len: usize,
) -> Result<Bytes, TransformError> {
    use std::io::Read;
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| TransformError::new(name, format!("corrupt body: {e}")))?;
    if out.len() > max_len {
        return Err(TransformError::new(
            name,
            format!("body decompresses to more than {max_len} bytes"),
        ));
    }
    Ok(out.into())
}

/// LZ4 compression (frame format), fast with a modest ratio. Feature `lz4`. Name `"lz4"`.
#[cfg(feature = "lz4")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Lz4;

#[cfg(feature = "lz4")]
impl Transform for Lz4 {
    fn name(&self) -> &str {
        "lz4"
    }

    fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
        use std::io::Write;
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(body.len() / 2 + 32));
        enc.write_all(&body)
            .map_err(|e| TransformError::new("lz4", e.to_string()))?;
        let out = enc
            .finish()
            .map_err(|e| TransformError::new("lz4", e.to_string()))?;
        Ok(out.into())
    }

    fn decode(&self, body: Bytes, max_len: usize) -> Result<Bytes, TransformError> {
        let dec = lz4_flex::frame::FrameDecoder::new(&body[..]);
        read_bounded("lz4", dec, max_len)
    }
}

/// Zstandard compression at a chosen level (default 3), a better ratio than LZ4 for more CPU.
/// Feature `zstd`. Name `"zstd"` (the level is the sender's choice; any level decodes).
#[cfg(feature = "zstd")]
#[derive(Clone, Copy, Debug)]
pub struct Zstd {
    level: i32,
}

#[cfg(feature = "zstd")]
impl Default for Zstd {
    fn default() -> Self {
        Zstd { level: 3 }
    }
}

#[cfg(feature = "zstd")]
impl Zstd {
    /// Compression level, 1 (fastest) to 19 (smallest); out-of-range values are clamped.
    pub fn level(level: i32) -> Self {
        Zstd {
            level: level.clamp(1, 19),
        }
    }
}

#[cfg(feature = "zstd")]
impl Transform for Zstd {
    fn name(&self) -> &str {
        "zstd"
    }

    fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
        zstd::stream::encode_all(&body[..], self.level)
            .map(Bytes::from)
            .map_err(|e| TransformError::new("zstd", e.to_string()))
    }

    fn decode(&self, body: Bytes, max_len: usize) -> Result<Bytes, TransformError> {
        let dec = zstd::stream::read::Decoder::new(&body[..])
            .map_err(|e| TransformError::new("zstd", e.to_string()))?;
        read_bounded("zstd", dec, max_len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Prefix(&'static str);

    impl Transform for Prefix {
        fn name(&self) -> &str {
            self.0
        }
        fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
            let mut v = self.0.as_bytes().to_vec();
            v.extend_from_slice(&body);
            Ok(v.into())
        }
        fn decode(&self, body: Bytes, _max: usize) -> Result<Bytes, TransformError> {
            body.strip_prefix(self.0.as_bytes())
                .map(|rest| body.slice(body.len() - rest.len()..))
                .ok_or_else(|| TransformError::new(self.0, "missing prefix"))
        }
    }

    #[test]
    fn a_chain_encodes_in_order_and_decodes_in_reverse() {
        let mut chain = Chain::new();
        chain.push(Arc::new(Prefix("a")));
        chain.push(Arc::new(Prefix("b")));
        let wire = chain.encode(Bytes::from_static(b"x")).unwrap();
        assert_eq!(&wire[..], b"bax");
        assert_eq!(&chain.decode(wire, 10).unwrap()[..], b"x");
        let err = chain.decode(Bytes::from_static(b"abx"), 10).unwrap_err();
        assert_eq!(err.transform, "b");
        assert_eq!(chain.names(), ["a", "b"]);
    }

    #[cfg(feature = "runtime")]
    #[test]
    fn select_picks_in_the_given_order_or_nothing() {
        let mut set = Chain::new();
        set.push(Arc::new(Prefix("a")));
        set.push(Arc::new(Prefix("b")));
        let picked = set.select(&["b".into(), "a".into()]).unwrap();
        assert_eq!(picked.names(), ["b", "a"]);
        assert!(set.select(&["c".into()]).is_none());
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_round_trips_and_bounds_its_output() {
        let body = Bytes::from(vec![7u8; 100_000]);
        let wire = Lz4.encode(body.clone()).unwrap();
        assert!(wire.len() < 2_000, "compressed to {}", wire.len());
        assert_eq!(Lz4.decode(wire.clone(), 100_000).unwrap(), body);
        let err = Lz4.decode(wire, 99_999).unwrap_err();
        assert!(err.reason.contains("more than 99999"), "{err}");
        assert!(Lz4.decode(Bytes::from_static(b"not lz4"), 1_000).is_err());
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trips_and_bounds_its_output() {
        let body = Bytes::from(vec![7u8; 100_000]);
        let wire = Zstd::default().encode(body.clone()).unwrap();
        assert!(wire.len() < 1_000, "compressed to {}", wire.len());
        assert_eq!(Zstd::level(19).decode(wire.clone(), 100_000).unwrap(), body);
        let err = Zstd::default().decode(wire, 50_000).unwrap_err();
        assert!(err.reason.contains("more than 50000"), "{err}");
        assert!(
            Zstd::default()
                .decode(Bytes::from_static(b"not zstd"), 1_000)
                .is_err()
        );
    }
}
