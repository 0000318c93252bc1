//! `agent-sts token` and `agent-sts proxy` as processes: discovery (RFC 8414), the token on
//! stdout, the broker's refusal on stderr with a non-zero exit, and a proxy whose logs never
//! carry a token.

use crate::helpers::*;
use crate::proxy::key_file;
use crate::upstream::Upstream;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_agent-sts");

/// Run the command off the test's runtime thread, which serves the in-process broker.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).env("NO_PROXY", "*").output())
        .await
        .expect("join")
        .expect("run agent-sts")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn token_args(issuer: &str, key: &std::path::Path, agent_id: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["token", "--issuer", issuer, "--agent", agent_id, "--key"].into_iter().map(String::from).collect();
    args.push(key.to_str().expect("utf8").into());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test]
async fn token_prints_an_access_token_and_json_prints_the_response() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = key_file(dir.path(), "bot", 0);
    let out = run(token_args(
        &app.issuer,
        &key,
        "bot",
        &["--resource", DOCS, "--scope", "read", "--scope", "write"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let (header, claims) = decode_unverified(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(
        (&claims["sub"], &claims["aud"], &claims["scope"]),
        (&json!("bot"), &json!(DOCS), &json!("read write"))
    );

    let out = run(token_args(&app.issuer, &key, "bot", &["--resource", TICKETS, "--json"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body: Value = serde_json::from_str(&text(&out.stdout)).expect("one JSON document");
    assert_eq!((&body["token_type"], &body["scope"]), (&json!("Bearer"), &json!("read")));
    assert!(body["access_token"].is_string() && body["expires_in"].is_u64());
}

/// RFC 6749 section 5.2 / RFC 8707 section 2: the broker's refusal (`invalid_target` for
/// a server the policy does not know) is printed with its description; the exit is non-zero.
#[tokio::test]
async fn token_prints_the_brokers_error_and_exits_non_zero() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = key_file(dir.path(), "bot", 0);
    let out = run(token_args(&app.issuer, &key, "bot", &["--resource", "https://nowhere.test/mcp"])).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token on stdout");
    let err = text(&out.stderr);
    assert!(err.contains("invalid_target") && err.contains("nowhere.test"), "{err}");

    // Two ES256 keys registered: without --kid the broker can't choose (RFC 7523 section
    // 3, invalid_client); with --kid it can.
    let two = key_file(dir.path(), "two-key-bot", 1);
    let out = run(token_args(&app.issuer, &two, "two-key-bot", &["--resource", DOCS])).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("invalid_client"), "{}", text(&out.stderr));
    let out = run(token_args(&app.issuer, &two, "two-key-bot", &["--resource", DOCS, "--kid", "b"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// RFC 8414 section 3.3: the metadata's issuer must be the one given, byte for byte (here
/// `localhost` against the broker's `127.0.0.1`); a broker that is down is named as such.
#[tokio::test]
async fn token_refuses_a_different_issuer_and_names_an_unreachable_broker() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = key_file(dir.path(), "bot", 0);
    let other = app.issuer.replace("127.0.0.1", "localhost");
    let out = run(token_args(&other, &key, "bot", &["--resource", DOCS])).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("RFC 8414 section 3.3"), "{}", text(&out.stderr));

    let down = format!("http://127.0.0.1:{}", free_port());
    let out = run(token_args(&down, &key, "bot", &["--resource", DOCS])).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot reach"), "{}", text(&out.stderr));
}

/// Without RFC 8414 metadata the OpenID Connect location is tried; the assertion's `aud`
/// is the metadata's issuer exactly, and the request has the SEP-1046 shape.
#[tokio::test]
async fn token_falls_back_to_openid_configuration_and_signs_for_its_issuer() {
    let form: Arc<Mutex<Option<String>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let (seen, iss) = (form.clone(), issuer.clone());
    let server = HttpServer::new(move || {
        let (seen, iss) = (seen.clone(), iss.clone());
        App::new()
            .route(
                "/.well-known/openid-configuration",
                web::get().to(move || {
                    let iss = iss.clone();
                    async move {
                        HttpResponse::Ok()
                            .json(json!({"issuer": iss, "token_endpoint": format!("{iss}/token")}))
                    }
                }),
            )
            .route(
                "/token",
                web::post().to(move |body: String| {
                    *seen.lock().expect("lock") = Some(body);
                    async {
                        HttpResponse::Ok().json(json!({"access_token": "a.b.c", "token_type": "bearer"}))
                    }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tmp");
    let key = key_file(dir.path(), "bot", 0);
    let out = run(token_args(&issuer, &key, "bot", &["--resource", DOCS])).await;
    handle.stop(false).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a.b.c");
    let body = form.lock().expect("lock").clone().expect("the token endpoint was called");
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    assert_eq!(fields["grant_type"], "client_credentials");
    assert_eq!(fields["client_assertion_type"], CLIENT_ASSERTION_TYPE);
    assert_eq!(fields["resource"], DOCS);
    assert!(!fields.contains_key("scope") && !fields.contains_key("client_id"));
    let (header, claims) = decode_unverified(&fields["client_assertion"]);
    assert_eq!(header, json!({"alg": "ES256", "typ": "JWT"}));
    assert_eq!(
        (&claims["aud"], &claims["iss"], &claims["sub"]),
        (&json!(issuer), &json!("bot"), &json!("bot"))
    );
}

/// The proxy as a process: it prints the URL to use, forwards with a broker token, and its
/// log (at debug level) never contains the token or the assertion.
#[tokio::test]
async fn proxy_prints_its_url_and_never_logs_a_token() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(&app.issuer, DOCS);
    let dir = tempfile::tempdir().expect("tmp");
    let key = key_file(dir.path(), "bot", 0);
    let mut child = Command::new(BIN)
        .args(["proxy", "--issuer", &app.issuer, "--agent", "bot", "--key", key.to_str().expect("utf8")])
        .args(["--upstream", &upstream.url, "--resource", DOCS, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read the proxy's first line");
    let url = line.split_whitespace().nth(2).expect("agent-sts proxy: URL -> upstream").to_string();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"), "{line}");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let r = http.post(&url).json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).send().await;
    let status = r.expect("POST through the proxy process").status();
    let _ = child.kill();
    let out =
        tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");
    assert_eq!(status, 200, "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let sent = upstream.seen()[0].authorization[0].trim_start_matches("Bearer ").to_string();
    let signature = sent.rsplit('.').next().expect("signature");
    assert!(log.contains("token obtained from the broker"), "{log}");
    assert!(!log.contains(signature) && !log.contains("eyJ"), "a token reached the log:\n{log}");
}
