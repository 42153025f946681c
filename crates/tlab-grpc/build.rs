//! Generates the gRPC messages and service of `proto/tlab/v1/transport.proto` with protox (pure Rust, so no
//! `protoc` binary is needed) and tonic-prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = proto_root.join("tlab/v1/transport.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_root])?;
    tonic_prost_build::configure()
        // Payloads as `Bytes`: decoding splits the receive buffer instead of copying into a Vec.
        .bytes(".tlab.v1.Frame.payload")
        .compile_fds(fds)?;
    Ok(())
}
