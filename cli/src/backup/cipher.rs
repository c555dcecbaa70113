//! Reading pgBackRest's encrypted repository files (`repo1-cipher-type=aes-256-cbc`): the
//! OpenSSL "salted" format, `Salted__` + 8 bytes of salt + AES-256-CBC with PKCS#7 padding,
//! key and IV from the passphrase by OpenSSL's EVP_BytesToKey (one round of SHA-1, as
//! pgBackRest derives them). A plaintext that does not start the way the file must is a wrong key.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use anyhow::{bail, Result};
use sha1::Digest;

const MAGIC: &[u8] = b"Salted__";

pub fn is_encrypted(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// `data` decrypted with `pass`; `expect` is how the plaintext begins (`[backrest]`).
pub fn decrypt(data: &[u8], pass: &str, expect: &[u8]) -> Result<Vec<u8>> {
    if !is_encrypted(data) || data.len() < 16 {
        bail!("not an encrypted pgBackRest file");
    }
    let (salt, body) = (&data[8..16], &data[16..]);
    // EVP_BytesToKey: D1 = H(pass + salt), Di = H(Di-1 + pass + salt), until key + IV (48 bytes).
    let mut material = Vec::new();
    let mut prev = Vec::new();
    while material.len() < 48 {
        prev = sha1::Sha1::new()
            .chain_update(&prev)
            .chain_update(pass)
            .chain_update(salt)
            .finalize()
            .to_vec();
        material.extend_from_slice(&prev);
    }
    let decryptor = cbc::Decryptor::<aes::Aes256>::new_from_slices(&material[..32], &material[32..48])?;
    let mut buffer = body.to_vec();
    if let Ok(plain) = decryptor.decrypt_padded_mut::<Pkcs7>(&mut buffer) {
        if plain.starts_with(expect) {
            return Ok(plain.to_vec());
        }
    }
    bail!("cannot decrypt it with backup_encryption_key: a different key encrypted this repository")
}

#[cfg(test)]
mod tests {
    /// `printf '[backrest]\nbackrest-format=5\n' | openssl enc -aes-256-cbc -md sha1 -pass pass:secret-pass | base64`
    #[test]
    fn decrypts_openssl_salted_sha1() {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.decode(OPENSSL_SHA1).unwrap();
        let plain = super::decrypt(&data, "secret-pass", b"[backrest]").unwrap();
        assert_eq!(plain, b"[backrest]\nbackrest-format=5\n");
        assert!(super::decrypt(&data, "another-pass", b"[backrest]").is_err());
    }

    const OPENSSL_SHA1: &str = "U2FsdGVkX1/TjiYEehKYbNeU2E7zpw80hpp1qWMvjzApMr8rlO+AAnoxTBygvL3j";
}
