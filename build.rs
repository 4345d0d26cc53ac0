//! Compiles `proto/` with protox (pure Rust, so no system `protoc`) into tonic
//! client and server code, and writes the file descriptor set that gRPC
//! reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/conversations/v1/conversation.proto",
    "proto/conversations/v1/conversation_service.proto",
    "proto/conversations/v1/event.proto",
    "proto/conversations/v1/flow_service.proto",
    "proto/conversations/v1/workspace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // compile_fds prints no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=third_party");

    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("conversations_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    // Reflection also serves google.rpc's error details, so tools such as
    // grpcurl decode the ErrorInfo and BadRequest our errors carry. No code is
    // generated for them (tonic-types has it).
    let error_details = protox::compile(
        ["google/rpc/error_details.proto"],
        ["third_party/googleapis"],
    )?;
    fs::write(
        out_dir.join("error_details_descriptor.bin"),
        error_details.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Prost's codec with a smaller first send buffer (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::LeanCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
