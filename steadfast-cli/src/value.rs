//! MessagePack values (the bodies of requests and replies) as bytes or JSON, for the shell.

use base64::Engine;
use rmpv::Value;
use serde_json::Value as Json;

/// The bytes a value stands for, if it is bytes or a string: what `request` writes unaltered
/// and what `serve --exec` gives its command.
pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Binary(b) => Some(b),
        Value::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A value as JSON. What JSON cannot hold is written so that nothing is lost or altered:
/// bytes (and a string that is no UTF-8) as `{"base64": "..."}`, an extension as
/// `{"ext": TYPE, "base64": "..."}`, a map key that is not a string as its JSON text, a float
/// that is not finite as its name (`"NaN"`, `"inf"`, `"-inf"`).
pub(crate) fn to_json(v: &Value) -> Json {
    let b64 = |b: &[u8]| Json::from(base64::engine::general_purpose::STANDARD.encode(b));
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::from(*b),
        Value::Integer(i) => i
            .as_u64()
            .map(Json::from)
            .or_else(|| i.as_i64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => match s.as_str() {
            Some(s) => Json::from(s),
            None => serde_json::json!({ "base64": b64(s.as_bytes()) }),
        },
        Value::Binary(b) => serde_json::json!({ "base64": b64(b) }),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) if s.as_str().is_some() => {
                            s.as_str().unwrap_or_default().to_owned()
                        }
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(t, b) => serde_json::json!({ "ext": t, "base64": b64(b) }),
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            Json::from(if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "inf"
            } else {
                "-inf"
            })
        },
        Json::Number,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_json_cannot_hold_is_marked_not_lost() {
        let v = Value::Map(vec![
            (Value::from("n"), Value::from(-3)),
            (Value::from(7), Value::Binary(vec![0, 255])),
            (Value::from("big"), Value::from(u64::MAX)),
            (Value::from("nan"), Value::F64(f64::NAN)),
            (Value::from("x"), Value::Ext(5, vec![1])),
        ]);
        assert_eq!(
            to_json(&v).to_string(),
            r#"{"7":{"base64":"AP8="},"big":18446744073709551615,"n":-3,"nan":"NaN","x":{"base64":"AQ==","ext":5}}"#
        );
        assert_eq!(as_bytes(&Value::from("hé")), Some("hé".as_bytes()));
        assert_eq!(as_bytes(&Value::from(1)), None);
    }
}
