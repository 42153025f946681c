//! CORS on the wire (issue 10 item 3), with a plain h3 client (none of our client code): a preflight is answered
//! before the token check, and answers to a page's requests name the allowed origin, refusals included.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tlab_core::Limits;
use tlab_core::tls::CertPin;
use tlab_h3::H3Transport;
use tlab_testkit::TestServer;

#[tokio::test]
async fn preflights_and_answers_carry_cors_headers() {
    let server = TestServer::start(&H3Transport::new(), Limits::default()).await;
    let tls = tlab_core::tls::client_config(&CertPin::Sha256(server.identity.sha256()), &[b"h3"]).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(server.server.local_addr(), "localhost").unwrap().await.unwrap();
    let (mut driver, mut sender): (_, h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>) = h3::client::new(h3_quinn::Connection::new(conn)).await.unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let mut ask = async |method: &str, target: String| {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{target}"))
            .header("origin", "http://page.example")
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap();
        let mut stream = sender.send_request(request).await.unwrap();
        stream.finish().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), stream.recv_response()).await.expect("an answer").unwrap()
    };
    let preflight = ask("OPTIONS", "/tlab/h3?stream=0".into()).await;
    assert_eq!(preflight.status(), 204, "no token needed");
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let refused = ask("GET", "/tlab/h3/auth?token=wrong".into()).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let accepted = ask("GET", format!("/tlab/h3/auth?token={}", server.token)).await;
    assert_eq!(accepted.status(), 204);
    assert_eq!(accepted.headers()["access-control-expose-headers"], "tlab-max-streams");
    server.server.shutdown().await;
}
