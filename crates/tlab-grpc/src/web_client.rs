//! The gRPC-Web client: the generated `tlab.v1.Transport` client behind tonic-web's request translation, on one
//! HTTP/2 connection over our TLS dialer (what a browser's `fetch` does on an `h2` origin). Only source streams
//! exist: each is one server-streaming `Source` call; echo, sink and resumed streams need client → server
//! messages during the call, which gRPC-Web cannot carry, and are refused with [`Error::Unsupported`].

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use tlab_core::milestones::{MilestoneLog, Step};
use tlab_core::{ClientConfig, Connection, Error, Limits, MessageStream, Milestones, StreamMode, StreamOpen};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic_web::{GrpcWebCall, GrpcWebClientService};

use crate::client::{NoRequests, ResponseSource, open_channel};
use crate::proto::SourceRequest;
use crate::proto::transport_client::TransportClient;
use crate::wire::{FRAME_OVERHEAD, StreamSlot, error_from_status};

/// The channel under tonic-web's translation: the translated body goes out as the channel's own body type.
#[derive(Clone)]
struct WebChannel(Channel);

impl Service<http::Request<GrpcWebCall<Body>>> for WebChannel {
    type Response = <Channel as Service<http::Request<Body>>>::Response;
    type Error = <Channel as Service<http::Request<Body>>>::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: http::Request<GrpcWebCall<Body>>) -> Self::Future {
        self.0.call(req.map(Body::new))
    }
}

type WebClient = TransportClient<GrpcWebClientService<WebChannel>>;

/// Connects the HTTP/2 connection of a [`GrpcWebConnection`].
pub(crate) async fn connect(config: ClientConfig) -> Result<Box<dyn Connection>, Error> {
    let (channel, auth, milestones) = open_channel(&config).await?;
    let client = TransportClient::new(GrpcWebClientService::new(WebChannel(channel)))
        .max_decoding_message_size(config.limits.max_message_size + FRAME_OVERHEAD);
    Ok(Box::new(GrpcWebConnection {
        client: Mutex::new(Some(client)),
        auth,
        limits: config.limits,
        open_streams: Arc::default(),
        milestones,
    }))
}

struct GrpcWebConnection {
    /// `None` after [`Connection::close`].
    client: Mutex<Option<WebClient>>,
    auth: AsciiMetadataValue,
    limits: Limits,
    open_streams: Arc<AtomicUsize>,
    /// TCP and TLS from the dialer, the first call's response headers from `open_stream`.
    milestones: MilestoneLog,
}

#[async_trait]
impl Connection for GrpcWebConnection {
    async fn open_stream(&self, open: StreamOpen) -> Result<MessageStream, Error> {
        let (None, StreamMode::Source { count, size, interval_us }) = (open.resume, open.mode) else {
            return Err(Error::Unsupported(
                "gRPC-Web carries server-streaming calls only: no client → server messages (echo, sink, resume)",
            ));
        };
        let mut client =
            self.client.lock().unwrap().clone().ok_or_else(|| Error::Closed("connection closed".into()))?;
        let slot = StreamSlot::acquire(&self.open_streams, &self.limits, open.stream)?;
        let size = u32::try_from(size).map_err(|_| Error::Config(format!("source size {size} above 2^32")))?;
        let mut req = tonic::Request::new(SourceRequest { stream: open.stream, count, size, interval_us });
        req.metadata_mut().insert("authorization", self.auth.clone());
        let responses =
            client.source(req).await.map_err(|status| error_from_status(&status, open.stream))?.into_inner();
        self.milestones.mark(Step::FirstResponse);
        Ok(MessageStream {
            sink: Box::new(NoRequests),
            source: Box::new(ResponseSource { responses, limits: self.limits, stream: open.stream, _slot: slot }),
        })
    }

    async fn close(&self) {
        self.client.lock().unwrap().take();
    }

    fn milestones(&self) -> Milestones {
        self.milestones.get()
    }
}
