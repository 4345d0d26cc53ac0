//! The protobuf codec of our services: prost's, with a smaller first send
//! buffer.
//!
//! tonic gives every response stream a send buffer of `buffer_size` bytes
//! when it opens, and a stream keeps what is left of it while it idles. With
//! prost's default of 8 KiB that was the largest part of an idle Watch
//! stream's memory, for items (events, checkpoints) of a few hundred bytes.
//! A burst still collects up to `yield_threshold` per write: the buffer
//! grows as it fills, so a catch-up loses no batching.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Bytes a response stream's send buffer starts with.
const SEND_BUFFER: usize = 1024;

/// Bytes of ready items a stream collects before it writes them (tonic's
/// default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`tonic_prost::ProstCodec`] with a 1 KiB first send buffer. Named in
/// `build.rs` as the codec of every generated service and client.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(SEND_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}
