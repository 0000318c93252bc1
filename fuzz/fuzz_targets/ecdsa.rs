//! Signature decoding: `crypto::VerifyingKey::verify` (ES256/ES384: `R || S` straight to
//! OpenSSL's `ECDSA_do_verify`, src/crypto/ecdsa.rs; EdDSA, RS256, PS256 through josekit) on
//! arbitrary signature bytes, and on valid signatures mutated. Invariants:
//! * no panic;
//! * our verdict equals josekit's (which converts `R || S` to DER for OpenSSL's EVP
//!   verifier) and jsonwebtoken's (RustCrypto: p256, p384, ed25519-dalek, rsa), for every
//!   signature;
//! * an unmutated signature verifies.
//!
//! Input: `[key][mode]...`; mode even: the rest is a signature over a fixed signing input;
//! mode odd: `[message len][message][ops...]`, the message signed with the key, then each
//! 3-byte op edits the signature (xor a byte, truncate, append, prepend, set a byte).
#![no_main]

use agent_sts::crypto::{b64url_encode, Alg};
use agent_sts_fuzz::*;
use josekit::jws::JwsVerifier;
use libfuzzer_sys::fuzz_target;

const MESSAGE: &[u8] = b"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhZ2VudCJ9";

fn josekit_verifier(key: &Key) -> Box<dyn JwsVerifier> {
    let jwk = josekit::jwk::Jwk::from_map(key.jwk.clone()).expect("josekit reads our JWK");
    match key.alg {
        Alg::ES256 => Box::new(josekit::jws::ES256.verifier_from_jwk(&jwk).expect("verifier")),
        Alg::ES384 => Box::new(josekit::jws::ES384.verifier_from_jwk(&jwk).expect("verifier")),
        Alg::EdDSA => Box::new(josekit::jws::EdDSA.verifier_from_jwk(&jwk).expect("verifier")),
        Alg::RS256 => Box::new(josekit::jws::RS256.verifier_from_jwk(&jwk).expect("verifier")),
        Alg::PS256 => Box::new(josekit::jws::PS256.verifier_from_jwk(&jwk).expect("verifier")),
    }
}

fuzz_target!(|data: &[u8]| {
    let [k, mode, rest @ ..] = data else { return };
    // The agents' keys: one per algorithm, ES256 and ES384 twice as often.
    let key = [
        K::AgentEs256,
        K::AgentEs384,
        K::AgentEs256,
        K::AgentEs384,
        K::AgentEddsa,
        K::AgentRs256,
        K::AgentPs256,
    ][usize::from(*k) % 7]
        .key();
    let (message, signature, pristine) = if mode % 2 == 0 {
        (MESSAGE.to_vec(), rest.to_vec(), false)
    } else {
        let Some((&len, rest)) = rest.split_first() else { return };
        let len = usize::from(len).min(rest.len());
        let (message, ops) = rest.split_at(len);
        let input = b64url_encode(message);
        let token = key.signer.sign_compact(&input, b"{}").expect("signs");
        let (signing_input, sig) = token.rsplit_once('.').expect("three parts");
        let mut sig = agent_sts::crypto::b64url_decode(sig).expect("b64");
        for op in ops.chunks_exact(3) {
            let (a, b) = (usize::from(op[1]), op[2]);
            match op[0] % 5 {
                0 if !sig.is_empty() => {
                    let i = a % sig.len();
                    sig[i] ^= b.max(1);
                }
                1 => sig.truncate(a),
                2 => sig.push(b),
                3 => sig.insert(0, b),
                4 if !sig.is_empty() => {
                    let i = a % sig.len();
                    sig[i] = b;
                }
                _ => {}
            }
        }
        (signing_input.as_bytes().to_vec(), sig, ops.len() < 3)
    };

    let ours = key.verifier.verify(&message, &signature);
    thread_local! {
        static JOSE: Vec<Box<dyn JwsVerifier>> = keys().iter().map(josekit_verifier).collect();
    }
    let josekit = JOSE.with(|v| v[usize::from(key.k.byte())].verify(&message, &signature).is_ok());
    let token = format!("{}.{}", String::from_utf8_lossy(&message), b64url_encode(&signature));
    let rustcrypto = message.is_ascii() && signature_verifies(&token, key);

    if pristine {
        assert!(ours, "{}: an unmutated signature does not verify", key.alg);
    }
    assert_eq!(ours, josekit, "{}: ours {ours}, josekit {josekit}, signature {signature:02x?}", key.alg);
    assert_eq!(
        ours, rustcrypto,
        "{}: ours {ours}, RustCrypto {rustcrypto}, signature {signature:02x?}",
        key.alg
    );
});
