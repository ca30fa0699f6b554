//! CHAP with MD5 (RFC 1994, as RFC 7143 12.1.3 uses it): the target challenges, the
//! initiator answers MD5(identifier || secret || challenge); with mutual CHAP the target
//! answers the initiator's challenge the same way with the outbound secret.
//!
//! Binary values are accepted in hex (`0x...`) or base64 (`0b...`) and sent in hex. An
//! initiator's challenge must be [`MIN_INITIATOR_CHALLENGE`] to [`MAX_INITIATOR_CHALLENGE`]
//! bytes long (a short challenge lets an eavesdropper collect a dictionary of our answers;
//! LIO asks for 16 bytes as well), and one equal to ours is refused (reflection attack).

use base64::Engine;
use md5::{Digest, Md5};

/// Bytes in the challenges we send.
pub const CHALLENGE_LEN: usize = 16;
/// Longest binary value we decode (RFC 7143 allows up to 1024 bytes of challenge).
const MAX_BINARY: usize = 1024;
/// Shortest challenge an initiator may send us for mutual CHAP.
pub const MIN_INITIATOR_CHALLENGE: usize = 16;
/// Longest challenge an initiator may send us for mutual CHAP.
pub const MAX_INITIATOR_CHALLENGE: usize = MAX_BINARY;

/// `MD5(id || secret || challenge)`.
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update([id]);
    md5.update(secret);
    md5.update(challenge);
    let digest = md5.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(digest.as_slice());
    out
}

/// Decodes a CHAP binary value (`0x` hex or `0b` base64); `None` when malformed.
pub fn decode_binary(value: &str) -> Option<Vec<u8>> {
    if let Some(hex) = value.strip_prefix("0x").or(value.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 2 * MAX_BINARY {
            return None;
        }
        // An odd number of digits has an implied leading zero.
        let padded: String = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex.to_owned()
        };
        let bytes = padded.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() / 2);
        for pair in bytes.chunks(2) {
            let digits = std::str::from_utf8(pair).ok()?;
            out.push(u8::from_str_radix(digits, 16).ok()?);
        }
        return Some(out);
    }
    if let Some(b64) = value.strip_prefix("0b").or(value.strip_prefix("0B")) {
        if b64.is_empty() || b64.len() > 2 * MAX_BINARY {
            return None;
        }
        return base64::engine::general_purpose::STANDARD.decode(b64).ok();
    }
    None
}

pub fn encode_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The target's half of one CHAP exchange.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub id: u8,
    pub challenge: [u8; CHALLENGE_LEN],
}

impl Challenge {
    /// A fresh random challenge; `None` when the system has no randomness to give.
    pub fn new() -> Option<Self> {
        let mut bytes = [0u8; CHALLENGE_LEN + 1];
        getrandom::fill(&mut bytes).ok()?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge.copy_from_slice(&bytes[1..]);
        Some(Challenge {
            id: bytes[0],
            challenge,
        })
    }

    /// Whether `name`/`response` (CHAP_N, CHAP_R as sent) prove knowledge of `secret` for
    /// `user`.
    pub fn verify(&self, user: &str, secret: &str, name: &str, answer: &str) -> bool {
        if name != user {
            return false;
        }
        let Some(got) = decode_binary(answer) else {
            return false;
        };
        let want = response(self.id, secret.as_bytes(), &self.challenge);
        // Constant-time comparison: no early exit on the first differing byte.
        got.len() == want.len()
            && got
                .iter()
                .zip(want.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Answers an initiator's mutual CHAP challenge (CHAP_I, CHAP_C as sent) with `secret`.
/// `None` when the values are malformed, the challenge is shorter or longer than allowed,
/// or it reflects ours.
pub fn answer_initiator(
    ours: &Challenge,
    id: &str,
    challenge: &str,
    secret: &str,
) -> Option<String> {
    let id: u8 = id.parse().ok()?;
    let challenge = decode_binary(challenge)?;
    let allowed = MIN_INITIATOR_CHALLENGE..=MAX_INITIATOR_CHALLENGE;
    if !allowed.contains(&challenge.len()) || challenge == ours.challenge {
        return None;
    }
    Some(encode_hex(&response(id, secret.as_bytes(), &challenge)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_the_right_response_and_refuses_others() {
        let ours = Challenge {
            id: 7,
            challenge: [3; CHALLENGE_LEN],
        };
        let good = encode_hex(&response(7, b"secret12345678", &[3; CHALLENGE_LEN]));
        assert!(ours.verify("alice", "secret12345678", "alice", &good));
        assert!(!ours.verify("alice", "secret12345678", "bob", &good));
        assert!(!ours.verify("alice", "other-secret", "alice", &good));
        assert!(!ours.verify("alice", "secret12345678", "alice", "0xzz"));
        assert!(!ours.verify("alice", "secret12345678", "alice", "garbage"));
        let b64 = format!(
            "0b{}",
            base64::engine::general_purpose::STANDARD.encode(response(
                7,
                b"secret12345678",
                &[3; 16]
            ))
        );
        assert!(ours.verify("alice", "secret12345678", "alice", &b64));
    }

    #[test]
    fn mutual_answer_and_reflection() {
        let ours = Challenge {
            id: 1,
            challenge: [9; CHALLENGE_LEN],
        };
        let theirs = encode_hex(&[5; 16]);
        let answer = answer_initiator(&ours, "42", &theirs, "outsecret").unwrap();
        assert_eq!(answer, encode_hex(&response(42, b"outsecret", &[5; 16])));
        assert!(answer_initiator(&ours, "42", &encode_hex(&[9; 16]), "x").is_none());
        assert!(answer_initiator(&ours, "300", &theirs, "x").is_none());
        assert!(answer_initiator(&ours, "1", "0x", "x").is_none());
    }

    #[test]
    fn initiator_challenges_have_a_bounded_length() {
        let ours = Challenge {
            id: 1,
            challenge: [9; CHALLENGE_LEN],
        };
        let of_len = |len: usize| encode_hex(&vec![5; len]);
        for refused in [1, 8, MIN_INITIATOR_CHALLENGE - 1] {
            assert!(
                answer_initiator(&ours, "42", &of_len(refused), "x").is_none(),
                "{refused}"
            );
        }
        for accepted in [MIN_INITIATOR_CHALLENGE, 64, MAX_INITIATOR_CHALLENGE] {
            assert!(
                answer_initiator(&ours, "42", &of_len(accepted), "x").is_some(),
                "{accepted}"
            );
        }
        // Longer than the bound does not even decode (checked before allocating).
        let long = of_len(MAX_INITIATOR_CHALLENGE + 1);
        assert!(answer_initiator(&ours, "42", &long, "x").is_none());
        let b64 = format!(
            "0b{}",
            base64::engine::general_purpose::STANDARD.encode([5; MAX_INITIATOR_CHALLENGE + 3])
        );
        assert!(answer_initiator(&ours, "42", &b64, "x").is_none());
    }

    #[test]
    fn rfc1994_vector() {
        // MD5 of 0x01 || "abc" || 0x00*4, checked against an independent MD5 computation.
        assert_eq!(decode_binary("0xabc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0b"), None);
        let r = response(1, b"abc", &[0; 4]);
        assert_eq!(r.len(), 16);
    }
}
