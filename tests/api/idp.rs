//! A local identity provider for tests: OIDC discovery and a JWKS on a free 127.0.0.1 port,
//! with keys it generates and signs tokens with. It can rotate keys, go down and come back,
//! answer slowly or never, send an oversized body, redirect, set `Cache-Control`, and lie
//! about its issuer in discovery. It counts every request by path.
//!
//! A plain HTTP/1.1 server on std threads (one per connection, `Connection: close`), so the
//! test controls every byte; stopped (and its port closed) on drop.
//!
//! ```ignore
//! let idp = Idp::start();                       // keys "rsa-1" (RS256) and "ec-1" (ES256)
//! let token = idp.sign(&json!({"iss": idp.issuer(), "sub": "repo:acme/app"}), "ec-1");
//! idp.add_key(Alg::ES256, "ec-2");              // rotation
//! assert_eq!(idp.requests(JWKS_PATH), 1);
//! ```

use agent_sts::crypto::{b64url_encode, generate_key_pair, Alg, SigningKey};
use serde_json::{json, Map, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/jwks";

/// How the IdP answers (every path).
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Normal,
    /// This status with an empty JSON body.
    Status(u16),
    /// Read the request, never answer; hold the connection until the client gives up.
    Hang,
    /// 200 with a body of `bytes` bytes, with or without `Content-Length` (without: the
    /// body runs until the connection closes).
    Oversized {
        bytes: usize,
        content_length: bool,
    },
    /// 302 to this URL.
    Redirect(String),
}

pub struct IdpKey {
    pub kid: String,
    pub signing: SigningKey,
    pub public_jwk: Map<String, Value>,
}

struct State {
    keys: Vec<IdpKey>,
    /// Extra JWKs appended to the JWKS as given (keys with `use: enc`, private members ...).
    extra_jwks: Vec<Value>,
    /// Replaces the whole JWKS body.
    jwks_body: Option<String>,
    jwks_path: String,
    behaviour: Behaviour,
    delay: Duration,
    cache_control: Option<String>,
    content_type: String,
    discovery_issuer: Option<String>,
    discovery_jwks_uri: Option<String>,
    requests: Vec<(String, Instant)>,
}

struct Shared {
    port: u16,
    /// TLS (https issuer) with this acceptor; plain http without.
    tls: Option<openssl::ssl::SslAcceptor>,
    shutdown: AtomicBool,
    /// Body bytes the oversized mode managed to write before the client hung up.
    oversized_written: AtomicU64,
    state: Mutex<State>,
}

pub struct Idp {
    shared: Arc<Shared>,
    accept: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Idp {
    /// Keys "rsa-1" (RS256) and "ec-1" (ES256), JWKS at [`JWKS_PATH`].
    pub fn start() -> Idp {
        Self::start_with(&[(Alg::RS256, "rsa-1"), (Alg::ES256, "ec-1")])
    }

    pub fn start_with(keys: &[(Alg, &str)]) -> Idp {
        Self::start_inner(keys, None)
    }

    /// Over https, with a fresh self-signed certificate for 127.0.0.1 and localhost; the
    /// client must trust [`TlsCert::pem`] (e.g. through `issuers.ca_file`).
    pub fn start_tls(keys: &[(Alg, &str)]) -> (Idp, TlsCert) {
        let cert = TlsCert::generate();
        let idp = Self::start_inner(keys, Some(cert.acceptor()));
        (idp, cert)
    }

    fn start_inner(keys: &[(Alg, &str)], tls: Option<openssl::ssl::SslAcceptor>) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the IdP");
        let port = listener.local_addr().expect("addr").port();
        let state = State {
            keys: keys.iter().map(|(alg, kid)| new_key(*alg, kid)).collect(),
            extra_jwks: Vec::new(),
            jwks_body: None,
            jwks_path: JWKS_PATH.into(),
            behaviour: Behaviour::Normal,
            delay: Duration::ZERO,
            cache_control: None,
            content_type: "application/json".into(),
            discovery_issuer: None,
            discovery_jwks_uri: None,
            requests: Vec::new(),
        };
        let shared = Arc::new(Shared {
            port,
            tls,
            shutdown: AtomicBool::new(false),
            oversized_written: AtomicU64::new(0),
            state: Mutex::new(state),
        });
        let mut idp = Idp { shared, accept: None };
        idp.serve(listener);
        idp
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stop2) = (self.shared.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let shared = shared.clone();
                    std::thread::spawn(move || handle(&shared, stream));
                }
            }
        });
        self.accept = Some((stop, handle));
    }

    /// `http://127.0.0.1:<port>` (`https` for [`Idp::start_tls`]): the issuer in discovery
    /// and the `iss` of its tokens.
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}{}", self.issuer(), self.state().jwks_path)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- keys and tokens ---------------------------------------------------------------------

    /// Publish a new key (rotation).
    pub fn add_key(&self, alg: Alg, kid: &str) {
        let key = new_key(alg, kid);
        self.state().keys.push(key);
    }

    /// Stop publishing a key.
    pub fn remove_key(&self, kid: &str) {
        self.state().keys.retain(|k| k.kid != kid);
    }

    /// The public JWK of a key, as published.
    pub fn public_jwk(&self, kid: &str) -> Map<String, Value> {
        self.state().keys.iter().find(|k| k.kid == kid).expect("known kid").public_jwk.clone()
    }

    /// Replace how a published key looks in the JWKS (e.g. drop its `alg`).
    pub fn edit_jwk(&self, kid: &str, edit: impl FnOnce(&mut Map<String, Value>)) {
        let mut st = self.state();
        let key = st.keys.iter_mut().find(|k| k.kid == kid).expect("known kid");
        edit(&mut key.public_jwk);
    }

    /// Append raw JWKs to the published set.
    pub fn add_raw_jwk(&self, jwk: Value) {
        self.state().extra_jwks.push(jwk);
    }

    /// Serve this text as the JWKS instead (`None`: the keys again).
    pub fn set_jwks_body(&self, body: Option<&str>) {
        self.state().jwks_body = body.map(String::from);
    }

    /// A compact JWT `{alg, typ: "JWT", kid}.claims.signature` signed with key `kid`.
    pub fn sign(&self, claims: &Value, kid: &str) -> String {
        let st = self.state();
        let key = st.keys.iter().find(|k| k.kid == kid).expect("known kid");
        let header = key.signing.encoded_header("JWT", true);
        key.signing.sign_compact(&header, claims.to_string().as_bytes()).expect("sign")
    }

    /// As [`Idp::sign`] with any header (for the `alg`/`jku`/`crit` tricks); the header is
    /// used as given, the signature is by key `kid`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value, kid: &str) -> String {
        let st = self.state();
        let key = st.keys.iter().find(|k| k.kid == kid).expect("known kid");
        let header = b64url_encode(header.to_string().as_bytes());
        key.signing.sign_compact(&header, claims.to_string().as_bytes()).expect("sign")
    }

    // ---- behaviour ---------------------------------------------------------------------------

    pub fn set_behaviour(&self, b: Behaviour) {
        self.state().behaviour = b;
    }

    /// Wait this long before answering (every path).
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.state().cache_control = value.map(String::from);
    }

    pub fn set_content_type(&self, value: &str) {
        self.state().content_type = value.into();
    }

    /// Serve the JWKS at another path (discovery follows).
    pub fn set_jwks_path(&self, path: &str) {
        self.state().jwks_path = path.into();
    }

    /// Make discovery name another issuer (`None`: the true one).
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        self.state().discovery_issuer = issuer.map(String::from);
    }

    /// Make discovery name another `jwks_uri` (`None`: its own).
    pub fn set_discovery_jwks_uri(&self, uri: Option<&str>) {
        self.state().discovery_jwks_uri = uri.map(String::from);
    }

    /// Close the port: connections are refused until [`Idp::resume`].
    pub fn go_down(&mut self) {
        if let Some((stop, handle)) = self.accept.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(("127.0.0.1", self.shared.port)); // wake accept()
            let _ = handle.join();
        }
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        if self.accept.is_none() {
            let listener = TcpListener::bind(("127.0.0.1", self.shared.port)).expect("rebind the IdP port");
            self.serve(listener);
        }
    }

    // ---- what happened -----------------------------------------------------------------------

    /// Requests for `path` so far.
    pub fn requests(&self, path: &str) -> usize {
        self.state().requests.iter().filter(|(p, _)| p == path).count()
    }

    pub fn jwks_requests(&self) -> usize {
        let path = self.state().jwks_path.clone();
        self.requests(&path)
    }

    pub fn total_requests(&self) -> usize {
        self.state().requests.len()
    }

    /// When each request for `path` arrived.
    pub fn request_times(&self, path: &str) -> Vec<Instant> {
        self.state().requests.iter().filter(|(p, _)| p == path).map(|(_, t)| *t).collect()
    }

    /// Body bytes written in oversized mode before the client hung up.
    pub fn oversized_written(&self) -> u64 {
        self.shared.oversized_written.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn issuer(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.go_down();
    }
}

fn new_key(alg: Alg, kid: &str) -> IdpKey {
    let pair = generate_key_pair(alg, Some(kid)).expect("generate an IdP key");
    let signing = SigningKey::from_pem(alg, pair.private_pem.0.as_bytes(), Some(kid)).expect("signing key");
    IdpKey { kid: kid.into(), signing, public_jwk: pair.public_jwk }
}

/// A connection, plain or TLS.
trait Conn: Read + Write {
    fn close(&mut self);
}

impl Conn for TcpStream {
    fn close(&mut self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Conn for openssl::ssl::SslStream<TcpStream> {
    fn close(&mut self) {
        let _ = self.shutdown();
        let _ = self.get_ref().shutdown(Shutdown::Both);
    }
}

fn handle(shared: &Shared, tcp: TcpStream) {
    match &shared.tls {
        None => {
            let _ = tcp.set_read_timeout(Some(Duration::from_millis(50)));
            answer(shared, tcp)
        }
        Some(acceptor) => {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let Ok(tls) = acceptor.accept(tcp) else { return }; // a client that refused our certificate
            let _ = tls.get_ref().set_read_timeout(Some(Duration::from_millis(50)));
            answer(shared, tls)
        }
    }
}

/// One connection: read the request head, count it, answer per the behaviour.
fn answer(shared: &Shared, mut stream: impl Conn) {
    let Some(path) = read_request_path(shared, &mut stream) else { return };
    let (behaviour, delay) = {
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.requests.push((path.clone(), Instant::now()));
        (st.behaviour.clone(), st.delay)
    };
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match behaviour {
        Behaviour::Normal => {
            let (status, body, extra) = route(shared, &path);
            respond(&mut stream, status, &body, &extra);
        }
        Behaviour::Status(code) => respond(&mut stream, code, "{}", &[]),
        Behaviour::Redirect(to) => respond(&mut stream, 302, "", &[format!("Location: {to}")]),
        Behaviour::Hang => {
            // Until the client hangs up (read gives 0 or an error) or the IdP stops.
            let mut buf = [0u8; 256];
            while !shared.shutdown.load(Ordering::SeqCst) {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        }
        Behaviour::Oversized { bytes, content_length } => {
            let mut head =
                String::from("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n");
            if content_length {
                head.push_str(&format!("Content-Length: {bytes}\r\n"));
            }
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut left = bytes;
            while left > 0 && !shared.shutdown.load(Ordering::SeqCst) {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).is_err() {
                    break;
                }
                shared.oversized_written.fetch_add(n as u64, Ordering::SeqCst);
                left -= n;
            }
        }
    }
    stream.close();
}

fn route(shared: &Shared, path: &str) -> (u16, String, Vec<String>) {
    let st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let issuer = shared.issuer();
    let mut extra = vec![format!("Content-Type: {}", st.content_type)];
    if path == DISCOVERY_PATH {
        let doc = json!({
            "issuer": st.discovery_issuer.clone().unwrap_or_else(|| issuer.clone()),
            "jwks_uri": st.discovery_jwks_uri.clone().unwrap_or_else(|| format!("{issuer}{}", st.jwks_path)),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        return (200, doc.to_string(), extra);
    }
    if path == st.jwks_path {
        if let Some(cc) = &st.cache_control {
            extra.push(format!("Cache-Control: {cc}"));
        }
        let body = st.jwks_body.clone().unwrap_or_else(|| {
            let mut keys: Vec<Value> = st.keys.iter().map(|k| Value::Object(k.public_jwk.clone())).collect();
            keys.extend(st.extra_jwks.iter().cloned());
            json!({ "keys": keys }).to_string()
        });
        return (200, body, extra);
    }
    (404, "{}".into(), extra)
}

fn respond(stream: &mut impl Conn, status: u16, body: &str, extra: &[String]) {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if !extra.iter().any(|h| h.starts_with("Content-Type")) {
        head.push_str("Content-Type: application/json\r\n");
    }
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

/// The path (without query) of the request line, once the whole head has arrived.
fn read_request_path(shared: &Shared, stream: &mut impl Conn) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 || Instant::now() > deadline || shared.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.lines().next()?.split(' ').nth(1)?;
    Some(target.split('?').next().unwrap_or(target).to_string())
}

/// A self-signed certificate for 127.0.0.1 and localhost (EC P-256, valid for a day).
pub struct TlsCert {
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    cert: openssl::x509::X509,
}

impl TlsCert {
    pub fn generate() -> TlsCert {
        use openssl::{asn1::Asn1Time, bn::BigNum, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
        let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
        let key = PKey::from_ec_key(ec::EcKey::generate(&group).expect("key")).expect("pkey");
        let mut name = x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", "agent-sts test IdP").expect("CN");
        let name = name.build();
        let mut b = x509::X509Builder::new().expect("builder");
        b.set_version(2).expect("v3");
        b.set_serial_number(
            &BigNum::from_u32(rand::random::<u32>()).expect("bn").to_asn1_integer().expect("serial"),
        )
        .expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("nbf");
        b.set_not_after(&Asn1Time::days_from_now(1).expect("time")).expect("naf");
        let san = x509::extension::SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(None, None))
            .expect("SAN");
        b.append_extension(san).expect("SAN");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        TlsCert { key, cert: b.build() }
    }

    /// The certificate, PEM: what a client must trust.
    pub fn pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("pem")
    }

    fn acceptor(&self) -> openssl::ssl::SslAcceptor {
        use openssl::ssl::{SslAcceptor, SslMethod};
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
        a.set_private_key(&self.key).expect("key");
        a.set_certificate(&self.cert).expect("cert");
        a.build()
    }
}

/// Poll `cond` every 10 ms until it holds or `limit` passes; true when it held.
/// Wait until the broker has fetched every one of `idps`' JWKS (at start), then give its key
/// cache a moment to swap the keys in. Panics after 10 s.
pub async fn wait_keys_fetched(idps: &[&Idp]) {
    let loaded = wait_until(Duration::from_secs(10), || idps.iter().all(|i| i.requests(JWKS_PATH) > 0)).await;
    assert!(loaded, "the broker fetched every issuer's keys at start");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
