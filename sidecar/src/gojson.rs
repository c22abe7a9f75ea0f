//! JSON re-encoding as daprd does it with Go's `encoding/json`.
//!
//! daprd decodes the app's JSON value into a generic Go value and encodes it again before the
//! component sees it (HTTP saves, and gRPC saves whose metadata says `contentType:
//! application/json`; pluggable spec §5.2). The bytes a store holds are therefore canonical Go
//! JSON: object keys sorted, no whitespace, `<`, `>`, `&`, U+2028 and U+2029 escaped as
//! `\u003c`-style sequences, and every number turned into a float64 and printed the way Go
//! prints it. The sidecar produces the same bytes so that a value written through it reads
//! back exactly as through daprd.

use serde_json::Value;

/// Encodes `value` the way Go's `json.Marshal` encodes the `interface{}` it decoded.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, value);
    out
}

/// Parses `bytes` as JSON and re-encodes it; `None` if they are not JSON.
pub fn reencode(bytes: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .map(|v| encode(&v))
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_float(out, n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Go sorts map keys; do not rely on serde_json's map order (a feature elsewhere in
            // the build may switch it to insertion order).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Go's float64 encoding: shortest round-trip digits, plain notation for magnitudes in
/// [1e-6, 1e21), otherwise exponent notation with a signed exponent of at least two digits
/// for positive exponents (`1e+21`) and no padding for negative ones (`1e-7`).
fn write_float(out: &mut Vec<u8>, f: f64) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        out.extend_from_slice(mantissa.as_bytes());
        if exponent < 0 {
            out.extend_from_slice(format!("e-{}", -exponent).as_bytes());
        } else {
            out.extend_from_slice(format!("e+{exponent:02}").as_bytes());
        }
    } else {
        out.extend_from_slice(format!("{f}").as_bytes());
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                let n = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((n >> shift) & 0xf) as usize]);
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(text: &str) -> String {
        String::from_utf8(reencode(text.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn objects_are_sorted_and_compact() {
        assert_eq!(
            go(r#"{ "b": 1, "a": {"d": [1, 2], "c": null} }"#),
            r#"{"a":{"c":null,"d":[1,2]},"b":1}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_go() {
        assert_eq!(go(r#""Bruce Wayne""#), r#""Bruce Wayne""#);
        assert_eq!(
            go(r#""<a&b>\u2028\u0001\b\f\n\"\\é""#),
            r#""\u003ca\u0026b\u003e\u2028\u0001\b\f\n\"\\é""#
        );
    }

    #[test]
    fn numbers_go_through_float64() {
        assert_eq!(go("1"), "1");
        assert_eq!(go("1.50"), "1.5");
        assert_eq!(go("-0.0"), "-0");
        assert_eq!(go("1e20"), "100000000000000000000");
        assert_eq!(go("1e21"), "1e+21");
        assert_eq!(go("123456789e30"), "1.23456789e+38");
        assert_eq!(go("0.000001"), "0.000001");
        assert_eq!(go("0.0000001"), "1e-7");
        assert_eq!(go("1.5e-10"), "1.5e-10");
        // Beyond 2^53 integers lose precision, as in Go.
        assert_eq!(go("9007199254740993"), "9007199254740992");
    }

    #[test]
    fn non_json_is_refused() {
        assert!(reencode(b"not json").is_none());
    }
}
