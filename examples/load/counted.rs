//! GetCustomerPersona with its answer counted rather than decoded, as
//! h2load would, so that the load generator's one core keeps pace with
//! the server's in an open loop.

use segmentd::grpc::pb;

/// The codec of a counted call: the request encoded as usual, the
/// answer's bytes counted and dropped.
#[derive(Debug, Clone, Copy, Default)]
struct CountAnswer;

/// Counts an answer's bytes and drops them.
#[derive(Debug, Clone, Copy, Default)]
struct ByteCounter;

impl tonic::codec::Decoder for ByteCounter {
    type Item = usize;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<usize>, tonic::Status> {
        use bytes::Buf;
        let length = src.remaining();
        src.advance(length);
        Ok(Some(length))
    }
}

impl tonic::codec::Codec for CountAnswer {
    type Encode = pb::GetCustomerPersonaRequest;
    type Decode = usize;
    type Encoder = tonic_prost::ProstEncoder<pb::GetCustomerPersonaRequest>;
    type Decoder = ByteCounter;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ByteCounter
    }
}

/// GetCustomerPersona, its answer counted rather than decoded: the
/// answer's length in bytes.
pub async fn counted_persona_call(
    channel: crate::drive::Connection,
    request: pb::GetCustomerPersonaRequest,
) -> Result<usize, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path =
        http::uri::PathAndQuery::from_static("/segmentd.v1.PersonaService/GetCustomerPersona");
    let answer = grpc
        .unary(tonic::Request::new(request), path, CountAnswer)
        .await?;
    Ok(answer.into_inner())
}
