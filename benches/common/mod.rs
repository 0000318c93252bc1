//! Fixtures shared by the benchmark binaries: agent keys, a policy that registers them, and
//! assertions and form bodies shaped like the ones the MCP SDKs send (DESIGN.md, "What real
//! clients do"): header `{alg, typ: "JWT"}` without `kid`, `iss = sub = client_id`,
//! `aud` = the issuer, a random `jti`, form fields `grant_type, client_assertion_type,
//! client_assertion, resource, scope`.
//!
//! Not a bench target itself: cargo discovers only `benches/*.rs` and `benches/*/main.rs`.

#![allow(dead_code)] // each bench binary uses a different part

pub mod generated;

use agent_sts::crypto::{self, Alg, SigningKey};
use agent_sts::protocol::{ASSERTION_TYPE_JWT_BEARER, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE};

/// The two MCP servers of the bench policy; every agent may reach both with `read write`.
pub const DOCS: &str = "https://docs.mcp.example/mcp";
pub const TICKETS: &str = "https://tickets.mcp.example/mcp";
pub const SCOPE: &str = "read write";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An agent with its private key (to sign assertions) and its public JWK (for the policy).
pub struct AgentKey {
    pub id: String,
    pub alg: Alg,
    pub private_pem: String,
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
    signer: SigningKey,
    header: String,
}

impl AgentKey {
    pub fn generate(id: &str, alg: Alg) -> AgentKey {
        let pair = crypto::generate_key_pair(alg, None).expect("generate an agent key pair");
        let signer =
            SigningKey::from_pem(alg, pair.private_pem.0.as_bytes(), None).expect("load the agent key");
        // The SDKs send no kid: the broker picks the agent's only key for the alg.
        let header = signer.encoded_header("JWT", false);
        AgentKey {
            id: id.to_string(),
            alg,
            private_pem: pair.private_pem.0,
            public_jwk: pair.public_jwk,
            signer,
            header,
        }
    }

    /// Any claims, signed with this key (header `{alg, typ: "JWT"}`, no `kid`): a platform's
    /// token when this key stands for a trusted issuer's.
    pub fn sign_claims(&self, claims: &serde_json::Value) -> String {
        self.signer.sign_compact(&self.header, claims.to_string().as_bytes()).expect("sign claims")
    }

    /// A CI platform's OIDC token (GitHub Actions' shape) from issuer `iss` for audience `aud`.
    pub fn platform_token(&self, iss: &str, aud: &str, now: i64) -> String {
        self.sign_claims(&serde_json::json!({
            "iss": iss, "aud": aud, "sub": "repo:acme/infra:ref:refs/heads/main",
            "jti": uuid_v4(), "iat": now, "nbf": now - 5, "exp": now + 300,
            "ref": "refs/heads/main", "ref_type": "branch", "repository": "acme/infra",
            "repository_id": "89012345", "repository_owner": "acme", "repository_owner_id": "1234567",
            "job_workflow_ref": "acme/infra/.github/workflows/deploy.yml@refs/heads/main",
            "run_id": "7001", "run_attempt": "1", "event_name": "push", "environment": "production"
        }))
    }

    /// A client assertion (RFC 7523 §3) for `aud`, valid from `now` for `lifetime` seconds.
    pub fn assertion(&self, aud: &str, now: i64, lifetime: i64) -> String {
        let claims = serde_json::json!({
            "iss": self.id,
            "sub": self.id,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid_v4(),
        });
        self.signer.sign_compact(&self.header, claims.to_string().as_bytes()).expect("sign an assertion")
    }
}

/// A random UUID (version 4) string: the SDKs' `jti` (Python `uuid.uuid4()`, JS
/// `crypto.randomUUID()`).
pub fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    let h = format!(
        "{:032x}",
        (u128::from_be_bytes(b) & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    );
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A policy (TOML) with the two servers and the given agents, each allowed on both.
pub fn policy_toml(agents: &[&AgentKey]) -> String {
    let mut out = format!(
        "[[server]]\nid = \"docs\"\nresource = \"{DOCS}\"\nscopes = [\"read\", \"write\"]\n\n\
         [[server]]\nid = \"tickets\"\nresource = \"{TICKETS}\"\nscopes = [\"read\", \"write\"]\n\n"
    );
    for a in agents {
        let jwk: toml::Value =
            serde_json::from_value(serde_json::Value::Object(a.public_jwk.clone())).expect("JWK as TOML");
        out.push_str(&format!(
            "[[agent]]\nid = \"{}\"\nkeys = [{jwk}]\n\
             [[agent.allow]]\nserver = \"docs\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n\
             [[agent.allow]]\nserver = \"tickets\"\nscopes = [\"read\", \"write\"]\ndefault_scopes = [\"read\"]\n\n",
            a.id
        ));
    }
    out
}

/// A trusted issuer with `keys` inline (so nothing is fetched) and a GitHub-style federation
/// rule that maps its deploy-workflow tokens to `agent` (which `policy_toml` registered).
pub fn federation_toml(iss: &str, keys: &[&AgentKey], agent: &str) -> String {
    let jwks: Vec<String> = keys
        .iter()
        .map(|k| {
            let v: toml::Value =
                serde_json::from_value(serde_json::Value::Object(k.public_jwk.clone())).expect("JWK as TOML");
            v.to_string()
        })
        .collect();
    format!(
        "[[issuer]]\nid = \"platform\"\nissuer = \"{iss}\"\nkeys = [{}]\nalgorithms = [\"RS256\", \"ES256\"]\nmax_token_age_secs = 600\n\n\
         [[federation]]\nid = \"deploy\"\nissuer = \"platform\"\nagent = \"{agent}\"\n[federation.claims]\n\
         repository_owner_id = \"1234567\"\nrepository_id = \"89012345\"\nref = \"refs/heads/main\"\n\
         job_workflow_ref = {{ glob = \"acme/infra/.github/workflows/deploy.yml@*\" }}\n",
        jwks.join(", ")
    )
}

/// A user identity provider with `key` inline and a delegation rule that lets `actor` act for
/// its staff on both servers (issue 8).
pub fn delegation_toml(iss: &str, key: &AgentKey, actor: &str) -> String {
    let jwk: toml::Value =
        serde_json::from_value(serde_json::Value::Object(key.public_jwk.clone())).expect("JWK as TOML");
    format!(
        "[[issuer]]\nid = \"corp-idp\"\nissuer = \"{iss}\"\nkeys = [{jwk}]\nalgorithms = [\"ES256\"]\nsingle_use = false\n\n\
         [[delegation]]\nid = \"for-staff\"\nissuer = \"corp-idp\"\nactor = \"{actor}\"\n[delegation.subject]\n\
         groups = {{ contains = \"staff\" }}\n\
         [[delegation.allow]]\nserver = \"docs\"\nscopes = [\"read\", \"write\"]\n\
         [[delegation.allow]]\nserver = \"tickets\"\nscopes = [\"read\"]\n"
    )
}

/// A user's access token from identity provider `iss`, for audience `aud`.
impl AgentKey {
    pub fn user_token(&self, iss: &str, aud: &str, now: i64) -> String {
        self.sign_claims(&serde_json::json!({
            "iss": iss, "aud": aud, "sub": "alice", "email": "alice@acme.example",
            "groups": ["staff", "engineering"], "scope": "openid read write",
            "iat": now, "exp": now + 3600, "jti": uuid_v4()
        }))
    }
}

/// RFC 8693 on-behalf-of: the user's token as subject, the agent by its client assertion.
pub fn on_behalf_of_body(user_token: &str, assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", user_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", assertion),
        ("resource", resource),
        ("scope", "read"),
    ])
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `client_credentials` with `private_key_jwt`, as the MCP SDKs send it.
pub fn client_credentials_body(assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", assertion),
        ("resource", resource),
        ("scope", SCOPE),
    ])
}

/// RFC 7523 §2.1: the assertion is the grant; no client authentication.
pub fn jwt_bearer_body(assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", GRANT_JWT_BEARER),
        ("assertion", assertion),
        ("resource", resource),
        ("scope", SCOPE),
    ])
}

/// RFC 8693: re-scope an access token of ours for another server, the agent authenticated
/// by a fresh client assertion.
pub fn token_exchange_body(subject_token: &str, assertion: &str, resource: &str) -> String {
    form(&[
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
        ("client_assertion", assertion),
        ("resource", resource),
        ("scope", "read"),
    ])
}

/// The cryptographic floor of one client_credentials exchange: verify one ES256 assertion
/// signature, make one ES256 token signature, on the same keys and inputs the broker
/// handles, two ways:
///
/// * `josekit_pair`: josekit's `ES256` verifier and signer (issue 3's "raw josekit/OpenSSL
///   verify + sign pair"); each call sets up a fresh OpenSSL 3 `EVP` context;
/// * `openssl_pair`: SHA-256 plus OpenSSL's `ECDSA_do_verify`/`ECDSA_do_sign` on keys parsed
///   once: the lowest this machine's OpenSSL goes, and what the broker itself now calls
///   (src/crypto/ecdsa.rs).
pub struct Floor {
    josekit_verifier: Box<dyn josekit::jws::JwsVerifier>,
    josekit_signer: Box<dyn josekit::jws::JwsSigner>,
    ec_public: openssl::ec::EcKey<openssl::pkey::Public>,
    ec_private: openssl::ec::EcKey<openssl::pkey::Private>,
    /// Signing input and raw `R || S` signature of an SDK-shaped assertion.
    assertion_input: Vec<u8>,
    assertion_sig: Vec<u8>,
    /// The signing input of a token-sized payload.
    token_input: Vec<u8>,
}

impl Floor {
    /// `agent` signs the assertion (its public JWK verifies it); `signing_pem` is the
    /// broker's ES256 key; `token_input` is what the broker signs per token.
    pub fn new(agent: &AgentKey, signing_pem: &str, aud: &str, token_input: &[u8]) -> Floor {
        use josekit::jws::ES256;
        assert_eq!(agent.alg, Alg::ES256, "the floor is defined on ES256");
        let jwk = josekit::jwk::Jwk::from_map(agent.public_jwk.clone()).expect("agent JWK");
        let coord = |m: &str| {
            let b = crypto::b64url_decode(agent.public_jwk[m].as_str().expect("coordinate")).expect("b64");
            openssl::bn::BigNum::from_slice(&b).expect("bignum")
        };
        let group =
            openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("P-256");
        let ec_public =
            openssl::ec::EcKey::from_public_key_affine_coordinates(&group, &coord("x"), &coord("y"))
                .expect("point");
        let ec_private = openssl::pkey::PKey::private_key_from_pem(signing_pem.as_bytes())
            .and_then(|k| k.ec_key())
            .expect("broker EC key");
        let now = agent_sts::clock::Clock::now_secs(&agent_sts::clock::SystemClock);
        let assertion = agent.assertion(aud, now, 60);
        let (input, sig) = assertion.rsplit_once('.').expect("three parts");
        let floor = Floor {
            josekit_verifier: Box::new(ES256.verifier_from_jwk(&jwk).expect("verifier")),
            josekit_signer: Box::new(ES256.signer_from_pem(signing_pem.as_bytes()).expect("signer")),
            ec_public,
            ec_private,
            assertion_input: input.as_bytes().to_vec(),
            assertion_sig: crypto::b64url_decode(sig).expect("b64"),
            token_input: token_input.to_vec(),
        };
        floor.josekit_pair();
        floor.openssl_pair();
        floor
    }

    pub fn josekit_verify(&self) {
        self.josekit_verifier.verify(&self.assertion_input, &self.assertion_sig).expect("floor verifies");
    }

    pub fn josekit_sign(&self) -> Vec<u8> {
        self.josekit_signer.sign(&self.token_input).expect("floor signs")
    }

    pub fn josekit_pair(&self) -> Vec<u8> {
        self.josekit_verify();
        self.josekit_sign()
    }

    pub fn openssl_verify(&self) {
        use openssl::bn::BigNum;
        let digest = openssl::sha::sha256(&self.assertion_input);
        let (r, s) = self.assertion_sig.split_at(32);
        let sig = openssl::ecdsa::EcdsaSig::from_private_components(
            BigNum::from_slice(r).expect("r"),
            BigNum::from_slice(s).expect("s"),
        )
        .expect("sig");
        assert!(sig.verify(&digest, &self.ec_public).expect("verify runs"), "floor verifies");
    }

    pub fn openssl_sign(&self) -> Vec<u8> {
        let digest = openssl::sha::sha256(&self.token_input);
        let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &self.ec_private).expect("floor signs");
        let mut out = sig.r().to_vec_padded(32).expect("r");
        out.extend_from_slice(&sig.s().to_vec_padded(32).expect("s"));
        out
    }

    pub fn openssl_pair(&self) -> Vec<u8> {
        self.openssl_verify();
        self.openssl_sign()
    }
}
