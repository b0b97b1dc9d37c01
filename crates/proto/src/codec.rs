//! The codec of every shippy service and client: prost's, with one check before a message is
//! decoded.
//!
//! Decoding can make a small message large. Each element of a repeated message field costs two
//! bytes on the wire (a key and a zero length) and a whole struct in memory: an empty `Container`
//! is 96 bytes, so the 4 MiB a server accepts by default could hold two million of them and take
//! about 200 MiB (more while the vector doubles) before any of the services' own rules, such as
//! at most 10 000 containers a consignment, could refuse the request. Nobody needs to be logged in
//! for that: a call is decoded before its handler checks the caller.
//!
//! So the decoder first counts the fields at the message's top level (each element of a list is
//! one), without decoding or allocating anything, and refuses a message with more than
//! [`MAX_FIELDS`] as `INVALID_ARGUMENT`. Only the top level needs counting: no shippy request
//! nests a list inside a list, and what an element holds beneath it (text, numbers) is bounded by
//! the bytes it takes on the wire. Everything else is prost's own decoding, unchanged. Counting
//! costs about 11 ns for the message of `consignment.json` (decoding it, about 240 ns) and 5 ns
//! for a `FindAvailable` request (release build, this machine).

use std::marker::PhantomData;

use prost::{Message, bytes::Buf as _};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Most fields one message may carry at its top level, the elements of its lists included: twice
/// the most any shippy call accepts (10 000 containers a consignment; pages of at most 1 000), so
/// that a request just over a service's own limit still gets that service's own, precise refusal.
pub const MAX_FIELDS: usize = 20_000;

/// [`ProstCodec`] whose decoder counts a message's fields first (see the module doc).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

/// [`ProstDecoder`] behind the field count.
#[derive(Debug)]
pub struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // tonic hands the decoder one whole message in one contiguous buffer, so `chunk` is all
        // of it; were it ever less, only that part would be counted.
        if top_level_fields(buf.chunk()) > MAX_FIELDS {
            return Err(Status::invalid_argument(format!(
                "the message carries more than {MAX_FIELDS} fields (list elements included); \
                 no shippy call takes as many"
            )));
        }
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Fields at the top level of the encoded message `wire`, counted up to just past
/// [`MAX_FIELDS`]. Stops at the first malformed field: prost's decoding then refuses the
/// message with its own error.
fn top_level_fields(mut wire: &[u8]) -> usize {
    let mut count = 0;
    while !wire.is_empty() && count <= MAX_FIELDS {
        let Some(key) = varint(&mut wire) else {
            break;
        };
        let skip = match key & 0b111 {
            0 => varint(&mut wire).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut wire).and_then(|len| usize::try_from(len).ok()),
            5 => Some(4),
            // Groups (3 and 4) belong to proto2, which no shippy message uses; anything else is
            // not protobuf.
            _ => None,
        };
        let Some(rest) = skip.and_then(|skip| wire.get(skip..)) else {
            break;
        };
        wire = rest;
        count += 1;
    }
    count
}

/// Reads one base-128 varint off the front of `wire`; `None` if it is cut short or too long.
fn varint(wire: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    for (i, byte) in wire.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *wire = &wire[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consignment::v1::{Consignment, Container};

    fn consignment(containers: usize) -> Vec<u8> {
        Consignment {
            description: "a consignment".into(),
            weight: 55_000,
            containers: vec![Container::default(); containers],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_each_list_element_and_each_other_field_once() {
        assert_eq!(top_level_fields(&[]), 0);
        // description, weight, and three containers.
        assert_eq!(top_level_fields(&consignment(3)), 5);
        let filled = Consignment {
            id: "c".into(),
            vessel_id: "v".into(),
            containers: vec![
                Container {
                    id: "x".into(),
                    customer_id: "cust".into(),
                    origin: "Manchester, United Kingdom".into(),
                    user_id: "u".into(),
                };
                2
            ],
            ..Default::default()
        };
        assert_eq!(top_level_fields(&filled.encode_to_vec()), 4);
    }

    #[test]
    fn fixed_width_and_unknown_fields_are_stepped_over() {
        // Field 9 as a 64-bit and field 10 as a 32-bit value (unknown to the message), then a
        // varint whose continuation bytes must not be read as keys.
        let wire = [
            0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x55, 1, 2, 3, 4, 0x10, 0xff, 0xff, 0x03,
        ];
        assert_eq!(top_level_fields(&wire), 3);
    }

    #[test]
    fn counting_stops_at_a_malformed_field() {
        // A length past the end, a cut varint, a group: counted up to there, and prost refuses.
        assert_eq!(top_level_fields(&[0x08, 1, 0x12, 50, b'a']), 1);
        assert_eq!(top_level_fields(&[0x08, 0xff]), 0);
        assert_eq!(top_level_fields(&[0x0b, 0x0c]), 0);
        assert_eq!(top_level_fields(&[0xff; 11]), 0);
    }

    #[test]
    fn counting_stops_just_past_the_bound() {
        assert_eq!(top_level_fields(&consignment(MAX_FIELDS)), MAX_FIELDS + 1);
        assert_eq!(top_level_fields(&consignment(100_000)), MAX_FIELDS + 1);
    }
}
