//! Raw tokio-tungstenite baseline: a plain echo server (the library's own `forward` echo) and a client sending one
//! binary message per tlab frame (24-byte header + payload, the bytes our `ws` modes put on the wire).

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use tlab_core::{Message, frame};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{EchoPair, EchoReceiver, EchoSender, ServerTask, frame_seq, payload, server_tls, tls_connector};

const ALPN: &[u8] = b"http/1.1";

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// The client's write half.
pub struct Sender(SplitSink<Ws, WsMessage>);

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        let bytes = frame::encode(&Message::data(0, seq, payload()));
        self.0.send(WsMessage::Binary(bytes)).await.expect("raw ws send");
    }
}

/// The client's read half; it also keeps the server alive.
pub struct Receiver {
    read: SplitStream<Ws>,
    _server: ServerTask,
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        match self.read.next().await.expect("raw ws ended").expect("raw ws recv") {
            WsMessage::Binary(bytes) => frame_seq(&bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Echoes every binary message of every connection.
async fn serve(listener: TcpListener, tls: TlsAcceptor) {
    while let Ok((tcp, _)) = listener.accept().await {
        let tls = tls.clone();
        tokio::spawn(async move {
            tcp.set_nodelay(true).expect("nodelay");
            let ws = tokio_tungstenite::accept_async(tls.accept(tcp).await.expect("TLS accept")).await.expect("accept");
            let (write, read) = ws.split();
            let _ = read.try_filter(|m| futures::future::ready(m.is_binary())).forward(write).await;
        });
    }
}

/// Starts the echo server and connects one WebSocket to it.
pub async fn pair() -> EchoPair<Sender, Receiver> {
    let (acceptor, pin) = server_tls(&[ALPN]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = ServerTask::spawn(serve(listener, acceptor));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = tls_connector(&pin, &[ALPN]).connect(tlab_core::tls::server_name(), tcp).await.expect("TLS connect");
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/"), tls).await.expect("WebSocket handshake");
    let (write, read) = ws.split();
    EchoPair::new(Sender(write), Receiver { read, _server: server })
}
