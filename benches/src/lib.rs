//! Shared pieces of Roost's benchmarks: workload data that every benchmark uses the same way.

/// A value of exactly `len` bytes (`len >= 2`) of JSON that differs per `seed`: an object with
/// an id, a status and a random text field, or for lengths too short for that, a JSON string.
pub fn json_value(seed: u64, len: usize) -> Vec<u8> {
    assert!(len >= 2, "a JSON value needs at least 2 bytes");
    let header = format!("{{\"id\":{seed},\"status\":\"ACTIVE\",\"payload\":\"");
    let (mut out, close): (Vec<u8>, &[u8]) = if header.len() + 2 <= len {
        (header.into_bytes(), b"\"}")
    } else {
        (b"\"".to_vec(), b"\"")
    };
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() + close.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b'a' + (x % 26) as u8);
    }
    out.extend_from_slice(close);
    out
}

/// The key of preloaded record `i`.
pub fn key(i: u64) -> String {
    format!("bench||key-{i:08}")
}

/// A small, fast pseudo-random sequence (xorshift64*), so runs pick the same keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_value_has_the_requested_length_and_is_json_shaped() {
        for len in [2, 16, 100, 1024, 4096] {
            let value = json_value(7, len);
            assert_eq!(value.len(), len);
            if len >= 100 {
                assert!(value.starts_with(b"{\"id\":7,"));
                assert!(value.ends_with(b"\"}"));
            } else {
                assert!(value.starts_with(b"\"") && value.ends_with(b"\""));
            }
        }
        assert_ne!(json_value(1, 1024), json_value(2, 1024));
    }

    #[test]
    fn rng_stays_below_its_bound() {
        let mut rng = Rng::new(42);
        assert!((0..10_000).all(|_| rng.below(100) < 100));
    }
}
