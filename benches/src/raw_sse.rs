//! Raw SSE + REST baseline on axum and reqwest, over the same TLS and HTTP version as the adapter mode it is
//! compared with. The server has two routes: `GET /events` answers an axum [`Sse`] stream whose events are the
//! frames POSTed so far (`id: <seq>`, `data: <base64 frame>`: the adapter's bytes but the `event:` line), and
//! `POST /messages` pushes its body, one tlab frame, into that stream and answers 204. The client reads the event
//! stream with eventsource-stream and sends **one POST per message**, each awaited before the next: the plain way to
//! use REST as an uplink. (Our adapter instead puts every message queued while a POST is in flight into the next
//! POST's body; with one message in flight, as in the latency benchmark, both send one POST per message.)

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tlab_core::{Message, frame};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::{EchoPair, EchoReceiver, EchoSender, ServerTask, client_tls, frame_seq, payload, server_tls};

/// Frames POSTed but not yet written as events (the adapter's server buffers 256).
const QUEUE: usize = 256;

/// Which HTTP version the client speaks (the server offers both by ALPN, like the adapter's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1: the event stream and the POSTs each get a connection from reqwest's pool.
    V1,
    /// HTTP/2: everything on one connection.
    V2,
}

/// POSTs each message.
pub struct Sender {
    client: reqwest::Client,
    url: String,
}

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        let body = frame::encode(&Message::data(0, seq, payload()));
        let response = self.client.post(&self.url).body(body).send().await.expect("raw SSE POST");
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "raw SSE POST status");
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>> + Send>>;

/// Reads the event stream; it also keeps the server alive.
pub struct Receiver {
    events: Events,
    _server: ServerTask,
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        let event = self.events.next().await.expect("raw SSE stream ended").expect("raw SSE event");
        frame_seq(&STANDARD.decode(event.data).expect("base64 event data"))
    }
}

/// The one echo stream: POSTs feed `uplink`, the first GET takes `downlink`.
struct Echo {
    uplink: mpsc::Sender<Bytes>,
    downlink: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

type EventStream = Sse<futures::stream::Map<ReceiverStream<Bytes>, fn(Bytes) -> Result<Event, Infallible>>>;

async fn events(State(echo): State<Arc<Echo>>) -> Result<EventStream, StatusCode> {
    let frames = echo.downlink.lock().expect("lock").take().ok_or(StatusCode::CONFLICT)?;
    let to_event: fn(Bytes) -> Result<Event, Infallible> =
        |frame| Ok(Event::default().id(frame_seq(&frame).to_string()).data(STANDARD.encode(&frame)));
    Ok(Sse::new(ReceiverStream::new(frames).map(to_event)))
}

async fn messages(State(echo): State<Arc<Echo>>, body: Bytes) -> StatusCode {
    match echo.uplink.send(body).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::GONE,
    }
}

async fn serve(listener: TcpListener, tls: TlsAcceptor, router: Router) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (tls, router) = (tls.clone(), router.clone());
        tokio::spawn(async move {
            tcp.set_nodelay(true).expect("nodelay");
            let stream = tls.accept(tcp).await.expect("TLS accept");
            let service = TowerToHyperService::new(router);
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Starts the server, opens the event stream and prepares the POST client.
pub async fn pair(http: Http) -> EchoPair<Sender, Receiver> {
    tlab_core::tls::crypto_provider();
    let (acceptor, pin) = server_tls(&[b"h2", b"http/1.1"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (uplink, downlink) = mpsc::channel(QUEUE);
    let echo = Arc::new(Echo { uplink, downlink: Mutex::new(Some(downlink)) });
    let router = Router::new().route("/events", get(events)).route("/messages", post(messages)).with_state(echo);
    let server = ServerTask::spawn(serve(listener, acceptor, router));

    let alpn: &[u8] = if http == Http::V1 { b"http/1.1" } else { b"h2" };
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(&pin, &[alpn]))
        .tcp_nodelay(true)
        .no_proxy();
    let builder = if http == Http::V1 { builder.http1_only() } else { builder.http2_prior_knowledge() };
    let client = builder.build().expect("reqwest client");
    let response = client.get(format!("https://{addr}/events")).send().await.expect("raw SSE GET");
    assert_eq!(response.status(), StatusCode::OK, "raw SSE GET status");
    let events: Events = Box::pin(response.bytes_stream().eventsource());
    EchoPair::new(Sender { client, url: format!("https://{addr}/messages") }, Receiver { events, _server: server })
}
