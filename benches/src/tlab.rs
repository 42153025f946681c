//! Our side: any [`Transport`] serving [`tlab_service::EchoService`], one stream opened with
//! [`StreamOpen::echo`].

use tlab_core::{Connection, Limits, Message, MessageSink, MessageSource, StreamOpen, Transport};
use tlab_testkit::TestServer;

use crate::{EchoPair, EchoReceiver, EchoSender, payload};

/// The adapter's sending half.
pub struct Sender(Box<dyn MessageSink>);

impl EchoSender for Sender {
    async fn send(&mut self, seq: u64) {
        self.0.send(Message::data(0, seq, payload())).await.expect("tlab send");
    }
}

/// The adapter's receiving half; it also keeps the connection and the server alive.
pub struct Receiver {
    source: Box<dyn MessageSource>,
    _connection: Box<dyn Connection>,
    _server: TestServer,
}

impl EchoReceiver for Receiver {
    async fn recv(&mut self) -> u64 {
        self.source.recv().await.expect("tlab recv").expect("echo stream ended").seq
    }
}

/// Starts `transport`'s server, connects and opens echo stream 0.
pub async fn pair(transport: &dyn Transport) -> EchoPair<Sender, Receiver> {
    let server = TestServer::start(transport, Limits::default()).await;
    let connection = transport.connect(server.client_config()).await.expect("tlab connect");
    let stream = connection.open_stream(StreamOpen::echo(0)).await.expect("tlab open_stream");
    EchoPair::new(Sender(stream.sink), Receiver { source: stream.source, _connection: connection, _server: server })
}
