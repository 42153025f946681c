//! gRPC transport of transport-lab (tonic): each logical stream is one RPC on a shared HTTP/2 channel.
