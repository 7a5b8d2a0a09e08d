//! The bodies of requests and replies (MessagePack values) as the shell sees them: bytes or a
//! string as they are, any other value as JSON text, written while it is decoded (no tree of
//! values is built) and bounded, so that a small hostile body cannot grow into a large one.

use std::fmt;

use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The most JSON text a structured body may become (a body of bytes or a string is not
/// converted: `--max-message` bounds it).
pub(crate) const JSON_MAX: usize = 16 << 20;

/// A body: bytes (MessagePack binary or string) as they are, or any other value as JSON text.
///
/// The JSON keeps the order of arrays and maps and every entry (two keys that look alike are
/// both written). What JSON has no form for is written so: bytes inside a value, and a string
/// that is no UTF-8, as `{"base64": "..."}`; an extension as `[TYPE, {"base64": "..."}]`; a map
/// key that is not a string as its JSON text in a string (the key `7` as `"7"`); a float that
/// is not finite as the string `"NaN"`, `"inf"` or `"-inf"`. A value whose JSON would pass
/// [`JSON_MAX`] is refused while it is decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// Binary or a string: the bytes.
    Bytes(Vec<u8>),
    /// Any other value, as JSON text (no newline).
    Json(Vec<u8>),
}

/// Bytes that encode as MessagePack binary (a plain `Vec<u8>` would be an array of numbers).
#[derive(Debug)]
pub(crate) struct Bin(pub(crate) Vec<u8>);

impl serde::Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        d.deserialize_any(TopLevel)
    }
}

/// Takes bytes or a string whole; anything else is written as JSON.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack value")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Body, E> {
        Ok(Body::Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Body, E> {
        Ok(Body::Bytes(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Body, E> {
        Ok(Body::Bytes(v.as_bytes().to_vec()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Body, E> {
        Ok(Body::Bytes(v.into_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Body, A::Error> {
        let mut out = Json(Vec::new());
        out.seq(a)?;
        Ok(Body::Json(out.0))
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Body, A::Error> {
        let mut out = Json(Vec::new());
        out.map(a)?;
        Ok(Body::Json(out.0))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Body, D::Error> {
        let mut out = Json(Vec::new());
        Value(&mut out).deserialize(d)?;
        Ok(Body::Json(out.0))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Body, E> {
        scalar(|j| j.bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Body, E> {
        scalar(|j| j.raw(v.to_string().as_bytes()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Body, E> {
        scalar(|j| j.raw(v.to_string().as_bytes()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Body, E> {
        scalar(|j| j.float(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Body, E> {
        scalar(|j| j.raw(b"null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Body, E> {
        scalar(|j| j.raw(b"null"))
    }
}

fn scalar<E: de::Error>(write: impl FnOnce(&mut Json) -> Result<(), E>) -> Result<Body, E> {
    let mut out = Json(Vec::new());
    write(&mut out)?;
    Ok(Body::Json(out.0))
}

/// JSON text being written, never past [`JSON_MAX`].
struct Json(Vec<u8>);

impl Json {
    fn raw<E: de::Error>(&mut self, b: &[u8]) -> Result<(), E> {
        if self.0.len() + b.len() > JSON_MAX {
            return Err(E::custom(format_args!(
                "the value as JSON is over {JSON_MAX} bytes"
            )));
        }
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn bool<E: de::Error>(&mut self, v: bool) -> Result<(), E> {
        self.raw(if v { b"true" } else { b"false" })
    }

    fn float<E: de::Error>(&mut self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            // The shortest text that reads back as the same number.
            let text = serde_json::to_string(&v).map_err(E::custom)?;
            self.raw(text.as_bytes())
        } else if v.is_nan() {
            self.raw(b"\"NaN\"")
        } else if v > 0.0 {
            self.raw(b"\"inf\"")
        } else {
            self.raw(b"\"-inf\"")
        }
    }

    fn string<E: de::Error>(&mut self, s: &str) -> Result<(), E> {
        let quoted = serde_json::to_string(s).map_err(E::custom)?;
        self.raw(quoted.as_bytes())
    }

    fn bytes<E: de::Error>(&mut self, b: &[u8]) -> Result<(), E> {
        self.raw(b"{\"base64\":\"")?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(b);
        self.raw(encoded.as_bytes())?;
        self.raw(b"\"}")
    }

    fn seq<'de, A: SeqAccess<'de>>(&mut self, mut a: A) -> Result<(), A::Error> {
        self.raw(b"[")?;
        let mut first = true;
        loop {
            if !first {
                self.raw(b",")?;
            }
            let at = self.0.len();
            if a.next_element_seed(Value(self))?.is_none() {
                // Nothing was written for the end: take back the comma.
                self.0.truncate(if first { at } else { at - 1 });
                break;
            }
            first = false;
        }
        self.raw(b"]")
    }

    fn map<'de, A: MapAccess<'de>>(&mut self, mut a: A) -> Result<(), A::Error> {
        self.raw(b"{")?;
        let mut first = true;
        loop {
            if !first {
                self.raw(b",")?;
            }
            let at = self.0.len();
            if a.next_key_seed(Key(self))?.is_none() {
                self.0.truncate(if first { at } else { at - 1 });
                break;
            }
            self.raw(b":")?;
            a.next_value_seed(Value(self))?;
            first = false;
        }
        self.raw(b"}")
    }
}

/// Writes one value of a structure.
struct Value<'a>(&'a mut Json);

impl<'de> DeserializeSeed<'de> for Value<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.raw(v.to_string().as_bytes())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.raw(v.to_string().as_bytes())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.float(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.string(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        // A string that is no UTF-8 arrives here too: as bytes, it is kept exactly.
        self.0.bytes(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.raw(b"null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.raw(b"null")
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        Value(self.0).deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        Value(self.0).deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<(), A::Error> {
        self.0.seq(a)
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<(), A::Error> {
        self.0.map(a)
    }
}

/// Writes a map key: a string as it is, any other key as its JSON text in a string.
struct Key<'a>(&'a mut Json);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack map key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.string(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.string(if v { "true" } else { "false" })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.string(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.string(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.string(&v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.string("null")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        let mut inner = Json(Vec::new());
        inner.bytes(v)?;
        self.0.string(&String::from_utf8_lossy(&inner.0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<(), A::Error> {
        let mut inner = Json(Vec::with_capacity(64));
        inner.seq(a)?;
        self.0.string(&String::from_utf8_lossy(&inner.0))
    }

    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<(), A::Error> {
        let mut inner = Json(Vec::with_capacity(64));
        inner.map(a)?;
        self.0.string(&String::from_utf8_lossy(&inner.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(v: &impl serde::Serialize) -> Body {
        rmp_serde::from_slice(&rmp_serde::to_vec(v).unwrap()).unwrap()
    }

    fn json(v: &impl serde::Serialize) -> String {
        match body(v) {
            Body::Json(j) => String::from_utf8(j).unwrap(),
            Body::Bytes(b) => panic!("bytes: {b:?}"),
        }
    }

    #[test]
    fn bytes_and_strings_stay_bytes() {
        assert_eq!(body(&Bin(vec![0, 10, 255])), Body::Bytes(vec![0, 10, 255]));
        assert_eq!(body(&"hé\n"), Body::Bytes("hé\n".as_bytes().to_vec()));
    }

    #[test]
    fn other_values_become_json_in_order_with_nothing_dropped() {
        assert_eq!(
            json(&(1, -2, 2.5, 1.0, true, ())),
            "[1,-2,2.5,1.0,true,null]"
        );
        assert_eq!(json(&Vec::<u8>::new()), "[]");
        assert_eq!(json(&u64::MAX), "18446744073709551615");
        assert_eq!(json(&f64::NAN), "\"NaN\"");
        // Keys keep their order; a key that is no string is its JSON text; both "7"s stay.
        let m: Vec<(rmpv_free::Key, u8)> = vec![
            (rmpv_free::Key::S("z"), 1),
            (rmpv_free::Key::N(7), 2),
            (rmpv_free::Key::S("7"), 3),
        ];
        assert_eq!(json(&rmpv_free::Map(m)), r#"{"z":1,"7":2,"7":3}"#);
        assert_eq!(
            json(&(Bin(vec![0, 255]), "a\"b")),
            r#"[{"base64":"AP8="},"a\"b"]"#
        );
    }

    #[test]
    fn a_small_body_cannot_become_a_large_one() {
        // 16 MiB of nils would be 80 MiB of "null,": refused at JSON_MAX.
        let nils = vec![(); JSON_MAX / 4];
        let e = rmp_serde::from_slice::<Body>(&rmp_serde::to_vec(&nils).unwrap()).unwrap_err();
        assert!(e.to_string().contains("as JSON is over"), "{e}");
    }

    /// A map with keys of mixed types, which serde's own maps cannot hold.
    mod rmpv_free {
        use serde::ser::SerializeMap;

        pub(super) enum Key {
            S(&'static str),
            N(u64),
        }

        pub(super) struct Map(pub(super) Vec<(Key, u8)>);

        impl serde::Serialize for Map {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in &self.0 {
                    match k {
                        Key::S(k) => m.serialize_entry(k, v)?,
                        Key::N(k) => m.serialize_entry(k, v)?,
                    }
                }
                m.end()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod wire_tests {
    use super::*;

    #[test]
    fn extensions_and_invalid_utf8_strings_are_kept() {
        // fixext1 of type 5 holding 0x01, alone and in an array.
        let ext: Body = rmp_serde::from_slice(&[0xd4, 0x05, 0x01]).unwrap();
        assert_eq!(ext, Body::Json(br#"[5,{"base64":"AQ=="}]"#.to_vec()));
        // A string that is no UTF-8: bytes at the top, base64 inside.
        let bad: Body = rmp_serde::from_slice(&[0xa2, 0xff, 0x41]).unwrap();
        assert_eq!(bad, Body::Bytes(vec![0xff, 0x41]));
        let inside: Body = rmp_serde::from_slice(&[0x91, 0xa2, 0xff, 0x41]).unwrap();
        assert_eq!(inside, Body::Json(br#"[{"base64":"/0E="}]"#.to_vec()));
    }
}
