//! Calling a service's RPC with an already-encoded request: the balanced channel of the service
//! (discovery, retries of idempotent calls, breakers, deadlines, trace context and request id all
//! come with it) and a codec that passes the bytes through, so the gateway never needs the
//! services' generated types.

use bytes::{Buf as _, BufMut as _, Bytes};
use http::uri::PathAndQuery;
use shippy_shared::discovery::balance::BalancedChannel;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataMap,
};

/// Makes one unary call of `path` with `request` (an encoded message) and `metadata`.
pub async fn call(
    channel: BalancedChannel,
    path: &str,
    request: Bytes,
    metadata: MetadataMap,
    timeout: std::time::Duration,
) -> Result<Bytes, Status> {
    let path = PathAndQuery::try_from(path)
        .map_err(|_| Status::internal("the route's gRPC path is not a valid URI path"))?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|error| {
        tracing::warn!(%error, path = %path, "the service is not reachable");
        Status::unavailable("the service is not reachable")
    })?;
    let mut request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), request);
    request.set_timeout(timeout);
    Ok(client.unary(request, path, RawCodec).await?.into_inner())
}

/// Passes encoded messages through unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
