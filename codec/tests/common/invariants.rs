//! The codec's invariants, checked on arbitrary input.
//!
//! One copy serves two users: the `roundtrip` and `decode_*` fuzz targets include it with
//! `#[path = "../../codec/tests/common/invariants.rs"]`, and `tests/fuzz_regressions.rs`
//! replays every saved crash input through it. Keeping it in one file means a crash the
//! fuzzer found is re-checked by `cargo test` against exactly the rules that found it.
//!
//! Every violation is a panic (an `assert!`): that is what libFuzzer reports as a finding.

// Each includer calls a different subset of these functions.
#![allow(dead_code)]

use petrel_codec::{DecodeError, Decoded, Decoder, EncodeError, Packet, ProtocolVersion};

/// The protocol version a `roundtrip` input asks for: the low bit of its first byte.
pub(crate) fn version_from_selector(selector: u8) -> ProtocolVersion {
    if selector & 1 == 0 {
        ProtocolVersion::V311
    } else {
        ProtocolVersion::V5
    }
}

/// The `roundtrip` target's whole check: the first byte picks the protocol version, the rest
/// is a byte stream decoded packet after packet, each packet checked by [`check_stream`].
pub(crate) fn check_roundtrip_input(data: &[u8]) {
    if let Some((&selector, stream)) = data.split_first() {
        check_stream(Decoder::new(version_from_selector(selector)), stream);
    }
}

/// The `decode_*` targets' check: the whole input through a decoder with the largest packet
/// size, then the input after its first byte through a decoder whose maximum packet size is
/// that byte (0 to 255), so that the size limit is hit constantly.
pub(crate) fn check_decode_input(version: ProtocolVersion, data: &[u8]) {
    decode_all(Decoder::new(version), data);
    if let Some((&limit, rest)) = data.split_first() {
        decode_all(
            Decoder::new(version).with_max_packet_size(u32::from(limit)),
            rest,
        );
    }
}

/// Decodes packets one after another until an error or an incomplete packet, checking only
/// what must hold of any result (lengths within the buffer, the size limit obeyed), and
/// walking every decoded packet's lists. Returns how many packets decoded.
pub(crate) fn decode_all(decoder: Decoder, data: &[u8]) -> usize {
    let mut rest = data;
    let mut count = 0;
    loop {
        match decoder.decode(rest) {
            Ok(Decoded::Packet { packet, len }) => {
                assert!(
                    (2..=rest.len()).contains(&len),
                    "a packet of {len} bytes decoded from a buffer of {}",
                    rest.len()
                );
                assert!(
                    len <= decoder.max_packet_size as usize,
                    "a packet of {len} bytes passed a maximum of {}",
                    decoder.max_packet_size
                );
                walk_lists(&packet);
                rest = &rest[len..];
                count += 1;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed >= 1, "Incomplete with needed = 0");
                return count;
            }
            Err(DecodeError::PacketTooLarge { size, maximum }) => {
                assert_eq!(maximum, decoder.max_packet_size);
                assert!(
                    size > maximum as usize,
                    "PacketTooLarge for {size} bytes under a maximum of {maximum}"
                );
                return count;
            }
            Err(_) => return count,
        }
    }
}

/// Iterates every repeated field, so that the lazy list readers run over what the decoder
/// validated, and formats the packet through `Debug`, which walks them again.
fn walk_lists(packet: &Packet<'_>) {
    let mut items = 0usize;
    let mut properties = |p: &petrel_codec::Properties<'_>| {
        items += p.user_properties.iter().count() + p.subscription_identifiers.iter().count();
    };
    match packet {
        Packet::Connect(c) => {
            properties(&c.properties);
            if let Some(will) = &c.will {
                properties(&will.properties);
            }
        }
        Packet::ConnAck(c) => properties(&c.properties),
        Packet::Publish(p) => properties(&p.properties),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            properties(&r.properties)
        }
        Packet::Subscribe(s) => {
            properties(&s.properties);
            items += s.filters.iter().count();
        }
        Packet::SubAck(s) => {
            properties(&s.properties);
            items += s.reason_codes.iter().count();
        }
        Packet::Unsubscribe(u) => {
            properties(&u.properties);
            items += u.filters.iter().count();
        }
        Packet::UnsubAck(u) => {
            properties(&u.properties);
            items += u.reason_codes.iter().count();
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => properties(&d.properties),
        Packet::Auth(a) => properties(&a.properties),
    }
    std::hint::black_box((items, format!("{packet:?}")));
}

/// Decodes `data` packet after packet with `decoder` and checks every invariant at every
/// step (see [`check_prefixes`], [`check_size_limit`] and [`check_packet`]). Returns how
/// many packets decoded.
pub(crate) fn check_stream(decoder: Decoder, data: &[u8]) -> usize {
    let mut rest = data;
    let mut count = 0;
    loop {
        let outcome = decoder.decode(rest);
        check_prefixes(&decoder, rest, &outcome);
        match outcome {
            Ok(Decoded::Packet { packet, len }) => {
                walk_lists(&packet);
                check_size_limit(&decoder, rest, len);
                check_packet(decoder.version, &packet, &rest[..len]);
                rest = &rest[len..];
                count += 1;
            }
            Ok(Decoded::Incomplete { .. }) | Err(_) => return count,
        }
    }
}

/// Streaming: feeding a strict prefix of `buf` never contradicts what `buf` itself gives.
///
/// - If `buf` starts with a whole packet of `len` bytes, every shorter prefix is
///   `Incomplete { needed }` with `1 <= needed <= len - prefix_len`: the decoder never asks
///   for more than the packet has left, so a reader that waits for `needed` bytes cannot
///   block on bytes that will never be sent.
/// - If `buf` is itself incomplete with `needed = n`, every prefix is incomplete too, and
///   asks for no more than `n` plus the bytes it lacks of `buf`.
/// - If `buf` is an error, each prefix is either incomplete or that same error: a shorter
///   read never yields an error the whole packet does not.
///
/// Also: the decoder reads nothing past the packet's own length.
pub(crate) fn check_prefixes(
    decoder: &Decoder,
    buf: &[u8],
    outcome: &Result<Decoded<'_>, DecodeError>,
) {
    match outcome {
        Ok(Decoded::Packet { len, .. }) => {
            let len = *len;
            for prefix in 0..len {
                match decoder.decode(&buf[..prefix]) {
                    Ok(Decoded::Incomplete { needed }) => assert!(
                        needed >= 1 && needed <= len - prefix,
                        "prefix of {prefix} bytes of a {len}-byte packet: needed = {needed}"
                    ),
                    other => panic!(
                        "prefix of {prefix} bytes of a {len}-byte packet gave {other:?}, \
                         not Incomplete"
                    ),
                }
            }
            assert_eq!(
                &decoder.decode(&buf[..len]),
                outcome,
                "the packet's own bytes decode differently from the longer buffer"
            );
        }
        Ok(Decoded::Incomplete { needed: total }) => {
            for prefix in 0..buf.len() {
                match decoder.decode(&buf[..prefix]) {
                    Ok(Decoded::Incomplete { needed }) => assert!(
                        needed >= 1 && needed <= total + (buf.len() - prefix),
                        "prefix of {prefix} bytes of an incomplete {}-byte buffer needing \
                         {total}: needed = {needed}",
                        buf.len()
                    ),
                    other => {
                        panic!("prefix of {prefix} bytes of an incomplete buffer gave {other:?}")
                    }
                }
            }
        }
        Err(error) => {
            // Past the packet's own length the decoder must not look, so only prefixes up
            // to it are informative; a header error is settled within the first 5 bytes.
            let packet_len = match decoder.header(buf) {
                Ok(Some(header)) => header.packet_len(),
                Ok(None) => panic!("decode gave {error:?} but header() says incomplete"),
                Err(header_error) => {
                    assert_eq!(
                        &header_error, error,
                        "header() and decode() disagree about a bad header"
                    );
                    buf.len().min(5)
                }
            };
            let end = packet_len.min(buf.len());
            for prefix in 0..end {
                match decoder.decode(&buf[..prefix]) {
                    Ok(Decoded::Incomplete { needed }) => assert!(
                        needed >= 1 && needed <= packet_len - prefix,
                        "prefix of {prefix} bytes before {error:?}: needed = {needed}"
                    ),
                    Err(e) => assert_eq!(
                        &e, error,
                        "prefix of {prefix} bytes gave an error the whole buffer does not"
                    ),
                    Ok(Decoded::Packet { .. }) => {
                        panic!("prefix of {prefix} bytes decoded though the buffer gives {error:?}")
                    }
                }
            }
            if packet_len <= buf.len() {
                assert_eq!(
                    decoder.decode(&buf[..packet_len]),
                    Err(*error),
                    "the packet's own bytes decode differently from the longer buffer"
                );
            }
        }
    }
}

/// The size limit is exact and is applied as soon as the fixed header has arrived: a
/// maximum of `len` accepts this packet, a maximum of `len - 1` refuses it from the header
/// alone.
pub(crate) fn check_size_limit(decoder: &Decoder, buf: &[u8], len: usize) {
    let exact = decoder.with_max_packet_size(len as u32);
    assert!(
        matches!(exact.decode(&buf[..len]), Ok(Decoded::Packet { len: l, .. }) if l == len),
        "a maximum packet size equal to the packet's {len} bytes refused it"
    );
    let Ok(Some(header)) = decoder.header(buf) else {
        panic!("a decoded packet has no readable fixed header");
    };
    let below = decoder.with_max_packet_size(len as u32 - 1);
    assert_eq!(
        below.decode(&buf[..usize::from(header.header_len)]),
        Err(DecodeError::PacketTooLarge {
            size: len,
            maximum: len as u32 - 1,
        }),
        "a {len}-byte packet was not refused from its header under a maximum of {}",
        len - 1
    );
}

/// Whether MQTT 5.0 lets this packet's encoder drop a trailing success reason code and an
/// empty property block (sections 3.4.2.1, 3.14.2.1, 3.15.2.1), so that the canonical form
/// may be up to two bytes shorter than what arrived.
fn may_shorten(packet: &Packet<'_>, version: ProtocolVersion) -> bool {
    version.is_v5()
        && matches!(
            packet,
            Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubRel(_)
                | Packet::PubComp(_)
                | Packet::Disconnect(_)
                | Packet::Auth(_)
        )
}

/// Encodes `packet` into exactly `encoded_len` bytes, checks that it decodes back to an equal
/// packet, and that encoding that again gives the same bytes (the encoding is canonical).
fn encode_exact(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let len = packet
        .encoded_len(version)
        .unwrap_or_else(|e| panic!("encoded_len refused a decoded packet: {e:?}\n{packet:?}"));
    let mut out = vec![0u8; len];
    let written = packet
        .encode(version, &mut out)
        .unwrap_or_else(|e| panic!("encode refused a decoded packet: {e:?}\n{packet:?}"));
    assert_eq!(written, len, "encode wrote other than encoded_len bytes");
    out
}

/// A decoded packet re-encodes, decodes back equal, and is canonical on the second pass.
/// `wire` is the packet's bytes as they arrived.
pub(crate) fn check_packet(version: ProtocolVersion, packet: &Packet<'_>, wire: &[u8]) {
    let encoded = encode_exact(packet, version);
    let len = encoded.len();
    assert_eq!(
        encoded[0], wire[0],
        "the first byte (type and flags) changed in re-encoding"
    );

    let mut short = vec![0u8; len - 1];
    assert_eq!(
        packet.encode(version, &mut short),
        Err(EncodeError::BufferTooSmall { required: len }),
        "a buffer one byte short was not refused with the size required"
    );

    // Decoding keeps every field; only the optional tail of v5 acknowledgements may go.
    assert!(
        len == wire.len() || (may_shorten(packet, version) && len < wire.len() && wire.len() - len <= 2),
        "re-encoding changed the size from {} to {len} bytes\n in:  {wire:02x?}\n out: {encoded:02x?}\n{packet:?}",
        wire.len()
    );

    let decoder = Decoder::new(version);
    let again = match decoder.decode(&encoded) {
        Ok(Decoded::Packet {
            packet: again,
            len: used,
        }) => {
            assert_eq!(
                used, len,
                "the re-encoded packet decoded to a different length"
            );
            again
        }
        other => panic!(
            "the re-encoded packet does not decode: {other:?}\n in:  {wire:02x?}\n out: \
             {encoded:02x?}\n{packet:?}"
        ),
    };
    assert_eq!(
        &again, packet,
        "decode(encode(p)) != p\n in:  {wire:02x?}\n out: {encoded:02x?}"
    );
    let canonical = encode_exact(&again, version);
    assert_eq!(
        canonical, encoded,
        "encoding is not canonical: a second round gave other bytes"
    );
}
