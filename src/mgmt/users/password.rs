//! Password hashing (argon2id with a random salt) and generated passwords. Hashes are
//! PHC strings; the parameters are stored in each hash, so changing them here keeps old
//! hashes verifiable.

use anyhow::Context;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

const GENERATED_PASSWORD_CHARS: usize = 24;

/// Argon2id cost: 12 MiB, 3 passes, 1 lane (see the user store's module doc for the
/// measured time).
const ARGON2_M_COST_KIB: u32 = 12 * 1024;
const ARGON2_T_COST: u32 = 3;
const ARGON2_P_COST: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .expect("the argon2 cost constants are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub(super) fn hash_password(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("cannot hash a password: {error}"))
}

/// Verifies with the parameters stored in `password_hash`, so hashes made with older
/// parameters keep working.
pub(super) fn verify_password(password: &str, password_hash: &str) -> bool {
    argon2()
        .verify_password(password.as_bytes(), password_hash)
        .is_ok()
}

/// A password of letters and digits from the OS random source (about 143 bits).
pub(super) fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // Rejection sampling: bytes at or past the largest multiple of the alphabet size are
    // drawn again, so every character is equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let mut password = String::with_capacity(GENERATED_PASSWORD_CHARS);
    while password.len() < GENERATED_PASSWORD_CHARS {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).context("the OS random source failed")?;
        for byte in bytes {
            if usize::from(byte) < limit && password.len() < GENERATED_PASSWORD_CHARS {
                password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(password)
}
