//! A POST after the client finished its direction (`fin=1`) is answered `409` while the stream's event stream is
//! still open (docs/PROTOCOL.md, "Server-Sent Events + POST"), spoken with a bare reqwest client over HTTP/1.1 and
//! HTTP/2 — none of our client code.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use tlab_core::tls::CertPin;
use tlab_core::{Limits, Message, frame};
use tlab_sse::SseTransport;
use tlab_testkit::TestServer;

/// How long any one step may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, step: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, step).await.unwrap_or_else(|_| panic!("no outcome within {WAIT:?}: {what}"))
}

fn client(server: &TestServer, http2: bool) -> reqwest::Client {
    let pin = CertPin::Sha256(server.identity.sha256());
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = tlab_core::tls::client_config(&pin, alpn).unwrap();
    let builder = reqwest::Client::builder().tls_backend_preconfigured(tls).no_proxy();
    let builder = if http2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
    builder.build().unwrap()
}

/// Reads the event body until it holds `needle`; returns what arrived.
async fn read_until(events: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    within(&format!("`{needle}` on the event stream"), async {
        while !text.contains(needle) {
            let chunk = events.chunk().await.unwrap().expect("the event stream ended early");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_after_fin_is_409_while_the_event_stream_is_open() {
    let server = TestServer::start(&SseTransport::http2(), Limits::default()).await;
    let base = format!("https://{}/tlab/sse", server.server.local_addr());
    let bearer = format!("Bearer {}", server.token);
    for (conn, http2) in [("a1", false), ("a2", true)] {
        let http = client(&server, http2);
        // A source stream whose second message is due only after the test: its event stream stays open.
        let query = format!("stream=0&mode=source&count=2&size=8&interval_us=600000000&conn={conn}");
        let request = http
            .get(format!("{base}/events?{query}"))
            .header("accept", "text/event-stream")
            .header("authorization", &bearer);
        let mut events = within("events response", request.send()).await.unwrap();
        assert_eq!(events.status(), StatusCode::OK, "http2={http2}");
        read_until(&mut events, "event: message").await;

        let post = |fin: bool, body: Bytes| {
            let fin = if fin { "&fin=1" } else { "" };
            http.post(format!("{base}/messages?conn={conn}&stream=0{fin}"))
                .header("authorization", &bearer)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
        };
        let frame = frame::encode(&Message::data(0, 0, Bytes::from_static(b"uplink")));
        let finished = within("POST with fin", post(true, frame.clone())).await.unwrap();
        assert_eq!(finished.status(), StatusCode::NO_CONTENT, "http2={http2}");
        for fin in [false, true] {
            let late = within("POST after fin", post(fin, frame.clone())).await.unwrap();
            assert_eq!(late.status(), StatusCode::CONFLICT, "http2={http2}, fin={fin}: {:?}", late.text().await);
        }
        // A stream the server has forgotten would answer 404: 409 means it is still the open one.
        drop(events);
    }
    within("server shutdown", server.server.shutdown()).await;
}
