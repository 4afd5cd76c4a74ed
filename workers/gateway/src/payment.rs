//! The payment provider's signature: `X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`
//! with the shared secret of the config, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::settings::Secret;

pub const SIGNATURE_HEADER: &str = "x-signature";

fn tag(secret: &Secret, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The header value a provider sends for `body` (the dev pay button and tests sign so).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(tag(secret, body)))
}

/// Whether `header` is the signature of `body`. The comparison takes the same time wherever
/// the first differing byte is, so the tag cannot be guessed byte by byte.
pub fn verify(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(given) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    tag(secret, body).ct_eq(&given).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secret = Secret::new("k");
        let body = br#"{"order_sn":"1","amount_cents":5}"#;
        let header = sign(&secret, body);
        assert!(verify(&secret, body, &header));
        assert!(!verify(&secret, b"{}", &header));
        assert!(!verify(&Secret::new("other"), body, &header));
        assert!(!verify(&secret, body, "sha256=zz"));
        assert!(!verify(&secret, body, &header.replace("sha256=", "md5=")));
        // RFC 4231 test case 2.
        let known = sign(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            known,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
