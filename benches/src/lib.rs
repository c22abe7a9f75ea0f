//! Shared pieces of Roost's benchmarks: workload data that every benchmark uses the same way,
//! and the comparison harness ([`harness`]) behind the `roost-bench` binary.

pub mod harness;

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

/// A JSON document of about `len` bytes shaped like application state: named fields, small
/// vocabularies, numbers, nested objects and arrays (so compression sees realistic data).
pub fn json_document(seed: u64, len: usize) -> Vec<u8> {
    const NAMES: [&str; 8] = [
        "ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "frances",
    ];
    const STATUS: [&str; 4] = ["ACTIVE", "INACTIVE", "PENDING", "ARCHIVED"];
    const WORDS: [&str; 12] = [
        "order", "shipment", "invoice", "agent", "task", "review", "draft", "approved", "queue",
        "retry", "artifact", "summary",
    ];
    let mut rng = Rng::new(seed.wrapping_add(1));
    let mut out = format!(
        r#"{{"id":{seed},"owner":{{"name":"{}","team":"team-{}"}},"status":"{}","score":{},"tags":["{}","{}"],"events":["#,
        NAMES[rng.below(8) as usize],
        rng.below(20),
        STATUS[rng.below(4) as usize],
        rng.below(10_000),
        WORDS[rng.below(12) as usize],
        WORDS[rng.below(12) as usize],
    );
    let mut first = true;
    while out.len() + 120 < len {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&format!(
            r#"{{"at":{},"kind":"{}","by":"{}","note":"{} {} {}"}}"#,
            1_767_225_600 + rng.below(1_000_000),
            WORDS[rng.below(12) as usize],
            NAMES[rng.below(8) as usize],
            WORDS[rng.below(12) as usize],
            WORDS[rng.below(12) as usize],
            WORDS[rng.below(12) as usize],
        ));
    }
    out.push_str("]}");
    out.into_bytes()
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

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
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
    fn json_documents_are_json_of_about_the_requested_size() {
        for seed in 0..20 {
            let doc = json_document(seed, 1024);
            assert!((900..=1024).contains(&doc.len()), "{}", doc.len());
            let text = String::from_utf8(doc).unwrap();
            assert!(
                text.starts_with(&format!("{{\"id\":{seed},")) && text.ends_with("]}"),
                "{text}"
            );
            assert_eq!(text.matches('{').count(), text.matches('}').count());
        }
    }

    #[test]
    fn rng_stays_below_its_bound() {
        let mut rng = Rng::new(42);
        assert!((0..10_000).all(|_| rng.below(100) < 100));
    }
}
