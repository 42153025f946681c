//! Regression tests of issue 10 that speak HTTP directly (reqwest, and raw HTTP/1.1 over our TLS; no tlab client):
//! CORS answers for pages of another origin on both HTTP versions, and a `413` to an oversize POST over HTTP/1.1
//! that reaches the client instead of being destroyed by a reset.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tlab_core::config::AllowOrigin;
use tlab_core::frame::encode;
use tlab_core::tls::{CertPin, Identity, client_config, server_name};
use tlab_core::{Limits, Message, Server, ServerConfig, Transport};
use tlab_service::EchoService;
use tlab_sse::SseTransport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "cors-token";
const PAGE: &str = "http://page.example:8000";

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn start(allow_origin: AllowOrigin) -> (Box<dyn Server>, Arc<Identity>) {
    let identity = Arc::new(Identity::self_signed(&["localhost", "127.0.0.1"]).unwrap());
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        identity: identity.clone(),
        token: TOKEN.into(),
        limits: Limits::default(),
        service: Arc::new(EchoService::default()),
        congestion: Default::default(),
        deadlines: Default::default(),
        max_connections_per_ip: None,
        allow_origin,
    };
    (SseTransport::http2().serve(config).await.unwrap(), identity)
}

/// A plain HTTP client of one version, pinning the server's certificate.
fn http_client(identity: &Identity, http2: bool) -> reqwest::Client {
    tlab_core::tls::crypto_provider();
    let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
    let tls = client_config(&CertPin::Sha256(identity.sha256()), &[alpn]).unwrap();
    let builder = reqwest::Client::builder().tls_backend_preconfigured(tls).no_proxy();
    let builder = if http2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
    builder.build().unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn preflights_are_answered_and_every_answer_names_the_allowed_origin() {
    let (server, identity) = start(AllowOrigin::Any).await;
    let base = server.url();
    for http2 in [false, true] {
        let client = http_client(&identity, http2);
        // fetch() POSTing binary frames with an Authorization header is preflighted; the preflight has no token.
        let preflight = client
            .request(reqwest::Method::OPTIONS, format!("{base}/messages?conn=1&stream=0"))
            .header("origin", PAGE)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 204, "http2={http2}");
        assert_eq!(header(&preflight, "access-control-allow-origin").as_deref(), Some("*"));
        let methods = header(&preflight, "access-control-allow-methods").unwrap();
        assert!(methods.contains("GET") && methods.contains("POST"), "{methods}");
        let allowed = header(&preflight, "access-control-allow-headers").unwrap();
        for needed in ["authorization", "content-type", "last-event-id"] {
            assert!(allowed.contains(needed), "{needed} in {allowed}");
        }

        // EventSource: token in the query, an Origin header, and the source's events.
        let url = format!("{base}/events?stream=0&mode=source&count=3&size=4&conn={}&token={TOKEN}", 10 + u8::from(http2));
        let events = client.get(url).header("origin", PAGE).header("accept", "text/event-stream").send().await.unwrap();
        assert_eq!(events.status(), 200);
        assert_eq!(header(&events, "access-control-allow-origin").as_deref(), Some("*"));
        let body = within("event body", events.text()).await.unwrap();
        assert_eq!(body.matches("event: message").count(), 3, "{body}");
        assert!(body.ends_with("event: end\ndata:\n\n"), "{body}");

        // A refusal is readable by the page too.
        let refused = client.get(format!("{base}/auth?token=wrong")).header("origin", PAGE).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        assert_eq!(header(&refused, "access-control-allow-origin").as_deref(), Some("*"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn only_listed_origins_are_allowed() {
    let (server, identity) = start(AllowOrigin::from_list(&[PAGE.to_string()])).await;
    let client = http_client(&identity, true);
    let auth = format!("{}/auth?token={TOKEN}", server.url());
    let listed = client.get(&auth).header("origin", PAGE).send().await.unwrap();
    assert_eq!(header(&listed, "access-control-allow-origin").as_deref(), Some(PAGE));
    assert_eq!(header(&listed, "vary").as_deref(), Some("origin"));
    let other = client.get(&auth).header("origin", "http://elsewhere.example").send().await.unwrap();
    assert_eq!(other.status(), 204, "the request itself is served; the browser withholds the answer");
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    let preflight = client.request(reqwest::Method::OPTIONS, &auth).header("origin", "http://elsewhere.example").send().await.unwrap();
    assert_eq!(preflight.status(), 403);
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversize_post_over_http1_gets_its_413() {
    let (server, identity) = start(AllowOrigin::Any).await;
    let max = Limits::default().max_message_size;
    // The stream must exist for the POST to reach its frames.
    let client = http_client(&identity, false);
    let events = client
        .get(format!("{}/events?stream=0&mode=echo&conn=ab&token={TOKEN}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);

    let body = encode(&Message::data(0, 0, Bytes::from(vec![3u8; max + 1])));
    let tls = client_config(&CertPin::Sha256(identity.sha256()), &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(server_name(), tcp).await.unwrap();
    let head = format!(
        "POST /tlab/sse/messages?conn=ab&stream=0 HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let answer = within("413", async {
        tls.write_all(head.as_bytes()).await.unwrap();
        // As curl does: the whole body goes out (the server may answer before it has read it), then the answer.
        tls.write_all(&body).await.expect("the body is read and discarded, not reset");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    server.shutdown().await;
}
