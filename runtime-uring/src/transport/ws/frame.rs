//! WebSocket framing (RFC 6455 section 5), sans-IO: client frames in, MQTT bytes and
//! control frames out; server frames encoded into a caller's buffer.
//!
//! MQTT over WebSocket is a byte stream carried in binary frames whose boundaries mean
//! nothing (MQTT 5.0 section 6), so the deframer streams payload bytes out as they arrive
//! instead of assembling messages: memory stays bounded by the input, whatever length a
//! frame announces. The MQTT codec downstream enforces the packet size limit.
//!
//! This file depends on nothing but `std` so the fuzz target can include it as it is.

use std::fmt;

/// The opcodes of RFC 6455 section 5.2.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The largest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close status codes the deframer reports (RFC 6455 section 7.4.1).
pub(crate) mod status {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// The peer broke the framing rules.
    pub(crate) const PROTOCOL_ERROR: u16 = 1002;
    /// A data type the endpoint does not accept (MQTT accepts binary frames only).
    pub(crate) const UNSUPPORTED_DATA: u16 = 1003;
}

/// Why the client's frames were refused; each maps to the close status to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// RSV1-3 set, though no extension was negotiated.
    ReservedBits,
    /// A client frame without a mask (RFC 6455 section 5.1: the server must close).
    Unmasked,
    /// An opcode RFC 6455 reserves.
    UnknownOpcode(u8),
    /// A text frame: MQTT travels in binary frames only [MQTT-6.0.0-1].
    Text,
    /// A fragmented control frame, or one longer than 125 bytes.
    BadControlFrame,
    /// A continuation frame with no message to continue, or a new data frame inside a
    /// fragmented one.
    BadFragmentation,
    /// A payload length not in its shortest form, or with the most significant bit set.
    BadLength,
    /// A close frame whose payload is one byte, or whose status code is not one a peer
    /// may send.
    BadClose,
}

impl FrameError {
    /// The status code to close the connection with.
    pub(crate) fn status(self) -> u16 {
        match self {
            FrameError::Text => status::UNSUPPORTED_DATA,
            _ => status::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("reserved bits set"),
            FrameError::Unmasked => f.write_str("unmasked client frame"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            FrameError::Text => f.write_str("text frame (MQTT needs binary frames)"),
            FrameError::BadControlFrame => f.write_str("fragmented or oversized control frame"),
            FrameError::BadFragmentation => f.write_str("continuation out of place"),
            FrameError::BadLength => f.write_str("payload length not in shortest form"),
            FrameError::BadClose => f.write_str("malformed close frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A control frame from the client, to be answered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// The client closes, with this status (if it gave one); answer with a close frame and
    /// end the connection. Nothing after it is read.
    Close(Option<u16>),
}

/// Where the deframer is inside the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Gathering the header (2 to 14 bytes).
    Header,
    /// Inside a payload of `remaining` bytes.
    Payload { opcode: u8, remaining: u64 },
    /// A close frame was received: the stream is over.
    Closed,
}

/// The server side of RFC 6455 framing: feed it what the socket gave, get the unmasked
/// binary payload bytes and the control frames to answer.
#[derive(Debug, Clone)]
pub(crate) struct Deframer {
    phase: Phase,
    header: [u8; 14],
    header_len: usize,
    mask: [u8; 4],
    /// Payload bytes unmasked so far in the current frame (for the mask's rotation).
    mask_offset: usize,
    /// A binary message was begun in frames without FIN: continuations may follow.
    in_message: bool,
    /// The payload of the control frame being read.
    control: Vec<u8>,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer::new()
    }
}

impl Deframer {
    /// A deframer at the start of a stream.
    pub(crate) fn new() -> Self {
        Deframer {
            phase: Phase::Header,
            header: [0; 14],
            header_len: 0,
            mask: [0; 4],
            mask_offset: 0,
            in_message: false,
            control: Vec::new(),
        }
    }

    /// Whether a close frame ended the stream.
    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Consumes all of `input`: appends the binary payload bytes to `data` and returns the
    /// first control frame completed, if any. After a control frame the caller calls again
    /// with the input after `consumed` bytes; after a close frame the rest is ignored.
    ///
    /// Returns the number of input bytes consumed and the control frame. Never panics,
    /// whatever the input; after an error the stream must be closed.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        data: &mut Vec<u8>,
    ) -> Result<(usize, Option<Control>), FrameError> {
        let mut used = 0;
        while used < input.len() {
            match self.phase {
                Phase::Closed => return Ok((input.len(), None)),
                Phase::Header => {
                    let take = (self.needed_header_len() - self.header_len).min(input.len() - used);
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input[used..used + take]);
                    self.header_len += take;
                    used += take;
                    if self.header_len == self.needed_header_len() {
                        if let Some(control) = self.begin_frame()? {
                            return Ok((used, Some(control)));
                        }
                    }
                }
                Phase::Payload { opcode, remaining } => {
                    let available = (input.len() - used) as u64;
                    // Bounded by the input length, so the cast back cannot truncate.
                    let take = remaining.min(available) as usize;
                    let chunk = &input[used..used + take];
                    used += take;
                    let remaining = remaining - take as u64;
                    if opcode == BINARY || opcode == CONTINUATION {
                        let start = data.len();
                        data.extend_from_slice(chunk);
                        self.unmask(&mut data[start..]);
                    } else {
                        let start = self.control.len();
                        self.control.extend_from_slice(chunk);
                        let mut control = std::mem::take(&mut self.control);
                        self.unmask(&mut control[start..]);
                        self.control = control;
                    }
                    self.phase = Phase::Payload { opcode, remaining };
                    if remaining == 0 {
                        if let Some(control) = self.end_frame(opcode)? {
                            return Ok((used, Some(control)));
                        }
                    }
                }
            }
        }
        Ok((used, None))
    }

    /// How many header bytes the frame needs, from what is known so far.
    fn needed_header_len(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let masked = self.header[1] & 0x80 != 0;
        let extended = match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if masked { 4 } else { 0 }
    }

    /// The header is complete: check it and enter the payload.
    fn begin_frame(&mut self) -> Result<Option<Control>, FrameError> {
        let first = self.header[0];
        let second = self.header[1];
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        if first & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        if second & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        let (length, mask_at) = match second & 0x7F {
            126 => {
                let length = u64::from(u16::from_be_bytes([self.header[2], self.header[3]]));
                if length < 126 {
                    return Err(FrameError::BadLength);
                }
                (length, 4)
            }
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                let length = u64::from_be_bytes(bytes);
                if length >> 63 != 0 || length <= u64::from(u16::MAX) {
                    return Err(FrameError::BadLength);
                }
                (length, 10)
            }
            short => (u64::from(short), 2),
        };
        self.mask
            .copy_from_slice(&self.header[mask_at..mask_at + 4]);
        self.mask_offset = 0;
        self.header_len = 0;
        match opcode {
            BINARY if self.in_message => return Err(FrameError::BadFragmentation),
            BINARY => self.in_message = !fin,
            CONTINUATION if !self.in_message => return Err(FrameError::BadFragmentation),
            CONTINUATION => self.in_message = !fin,
            TEXT => return Err(FrameError::Text),
            CLOSE | PING | PONG => {
                if !fin || length > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(FrameError::BadControlFrame);
                }
                self.control.clear();
            }
            other => return Err(FrameError::UnknownOpcode(other)),
        }
        self.phase = Phase::Payload {
            opcode,
            remaining: length,
        };
        if length == 0 {
            return self.end_frame(opcode);
        }
        Ok(None)
    }

    /// The payload is complete.
    fn end_frame(&mut self, opcode: u8) -> Result<Option<Control>, FrameError> {
        self.phase = Phase::Header;
        match opcode {
            PING => Ok(Some(Control::Ping(std::mem::take(&mut self.control)))),
            CLOSE => {
                self.phase = Phase::Closed;
                let code = match self.control.as_slice() {
                    [] => None,
                    [_] => return Err(FrameError::BadClose),
                    [high, low, ..] => {
                        let code = u16::from_be_bytes([*high, *low]);
                        if !close_code_is_valid(code) {
                            return Err(FrameError::BadClose);
                        }
                        Some(code)
                    }
                };
                Ok(Some(Control::Close(code)))
            }
            _ => Ok(None),
        }
    }

    fn unmask(&mut self, bytes: &mut [u8]) {
        for byte in bytes {
            *byte ^= self.mask[self.mask_offset & 3];
            self.mask_offset = self.mask_offset.wrapping_add(1);
        }
    }
}

/// Whether a peer may send this status in a close frame (RFC 6455 section 7.4).
fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// The longest server frame header: no mask, 8-byte length.
pub(crate) const MAX_HEADER_LEN: usize = 10;

/// The header of an unmasked server frame with FIN set, into `out`; returns its length.
fn header(opcode: u8, payload_len: usize, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
    out[0] = 0x80 | opcode;
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(short) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// Appends a binary frame carrying `payload` to `out`.
pub(crate) fn encode_binary(payload: &[u8], out: &mut Vec<u8>) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header(BINARY, payload.len(), &mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// Appends a pong answering a ping with this payload (at most 125 bytes, as the deframer
/// guarantees).
pub(crate) fn encode_pong(payload: &[u8], out: &mut Vec<u8>) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header(PONG, payload.len(), &mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
}

/// Appends a close frame with this status.
pub(crate) fn encode_close(status: u16, out: &mut Vec<u8>) {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header(CLOSE, 2, &mut head);
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(&status.to_be_bytes());
}

/// A masked client frame, as a browser would send it: for tests and the fuzz target.
#[cfg(test)]
pub(crate) fn encode_client_frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header(opcode, payload.len(), &mut head);
    if !fin {
        head[0] &= 0x7F;
    }
    head[1] |= 0x80;
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in one go, answering nothing: the data, the controls, or the error.
    fn run(input: &[u8]) -> Result<(Vec<u8>, Vec<Control>), FrameError> {
        let mut deframer = Deframer::new();
        let mut data = Vec::new();
        let mut controls = Vec::new();
        let mut rest = input;
        loop {
            let (used, control) = deframer.feed(rest, &mut data)?;
            rest = &rest[used..];
            match control {
                Some(c) => controls.push(c),
                None => return Ok((data, controls)),
            }
        }
    }

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn binary_frames_are_unmasked_and_joined() {
        let mut input = encode_client_frame(true, BINARY, MASK, b"\x10\x0c");
        input.extend(encode_client_frame(false, BINARY, MASK, b"ab"));
        input.extend(encode_client_frame(true, CONTINUATION, [1, 2, 3, 4], b"cd"));
        let (data, controls) = run(&input).unwrap();
        assert_eq!(data, b"\x10\x0cabcd");
        assert!(controls.is_empty());
    }

    #[test]
    fn rfc_6455_example_frames() {
        // Section 5.7: a masked "Hello" (as text, which MQTT refuses) and a masked ping.
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(run(&hello), Err(FrameError::Text));
        let mut binary = hello;
        binary[0] = 0x82;
        assert_eq!(run(&binary).unwrap().0, b"Hello");
        let ping = encode_client_frame(true, PING, MASK, b"Hello");
        assert_eq!(
            run(&ping).unwrap().1,
            vec![Control::Ping(b"Hello".to_vec())]
        );
    }

    #[test]
    fn every_length_form_is_read() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let input = encode_client_frame(true, BINARY, MASK, &payload);
            assert_eq!(run(&input).unwrap().0, payload, "length {len}");
        }
    }

    #[test]
    fn framing_violations_are_refused() {
        let unmasked = [0x82, 0x01, 0x00];
        assert_eq!(run(&unmasked), Err(FrameError::Unmasked));
        let mut rsv = encode_client_frame(true, BINARY, MASK, b"x");
        rsv[0] |= 0x40;
        assert_eq!(run(&rsv), Err(FrameError::ReservedBits));
        let reserved = encode_client_frame(true, 0x3, MASK, b"x");
        assert_eq!(run(&reserved), Err(FrameError::UnknownOpcode(3)));
        let lone = encode_client_frame(true, CONTINUATION, MASK, b"x");
        assert_eq!(run(&lone), Err(FrameError::BadFragmentation));
        let mut interleaved = encode_client_frame(false, BINARY, MASK, b"x");
        interleaved.extend(encode_client_frame(true, BINARY, MASK, b"y"));
        assert_eq!(run(&interleaved), Err(FrameError::BadFragmentation));
        let fragmented_ping = encode_client_frame(false, PING, MASK, b"x");
        assert_eq!(run(&fragmented_ping), Err(FrameError::BadControlFrame));
        let long_ping = encode_client_frame(true, PING, MASK, &[0; 126]);
        assert_eq!(run(&long_ping), Err(FrameError::BadControlFrame));
        // 5 in the 16-bit form: not the shortest encoding.
        let long_form = [0x82, 0xFE, 0x00, 0x05, 0, 0, 0, 0, 1, 2, 3, 4, 5];
        assert_eq!(run(&long_form), Err(FrameError::BadLength));
        let mut huge = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        huge.extend(MASK);
        assert_eq!(run(&huge), Err(FrameError::BadLength));
        let short_close = encode_client_frame(true, CLOSE, MASK, &[3]);
        assert_eq!(run(&short_close), Err(FrameError::BadClose));
        let bad_code = encode_client_frame(true, CLOSE, MASK, &1005u16.to_be_bytes());
        assert_eq!(run(&bad_code), Err(FrameError::BadClose));
        assert_eq!(FrameError::Text.status(), status::UNSUPPORTED_DATA);
        assert_eq!(FrameError::Unmasked.status(), status::PROTOCOL_ERROR);
    }

    #[test]
    fn a_close_ends_the_stream() {
        let mut input = encode_client_frame(true, CLOSE, MASK, &1000u16.to_be_bytes());
        input.extend(encode_client_frame(true, BINARY, MASK, b"after"));
        let (data, controls) = run(&input).unwrap();
        assert!(data.is_empty());
        assert_eq!(controls, vec![Control::Close(Some(1000))]);
        let empty_close = encode_client_frame(true, CLOSE, MASK, b"");
        assert_eq!(run(&empty_close).unwrap().1, vec![Control::Close(None)]);
    }

    #[test]
    fn pongs_are_ignored_and_pings_interleave_with_fragments() {
        let mut input = encode_client_frame(false, BINARY, MASK, b"ab");
        input.extend(encode_client_frame(true, PONG, MASK, b"p"));
        input.extend(encode_client_frame(true, PING, MASK, b"q"));
        input.extend(encode_client_frame(true, CONTINUATION, MASK, b"cd"));
        let (data, controls) = run(&input).unwrap();
        assert_eq!(data, b"abcd");
        assert_eq!(controls, vec![Control::Ping(b"q".to_vec())]);
    }

    #[test]
    fn server_frames_encode_every_length_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            encode_binary(&vec![7; len], &mut out);
            assert_eq!(out.len(), len + header_len);
            assert_eq!(out[0], 0x82);
        }
        let mut close = Vec::new();
        encode_close(status::NORMAL, &mut close);
        assert_eq!(close, [0x88, 0x02, 0x03, 0xE8]);
    }

    fn frame_strategy() -> impl Strategy<Value = (bool, Vec<u8>)> {
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300))
    }

    proptest! {
        /// However the client fragments its messages and however the socket splits the
        /// bytes, the deframer yields exactly the payload bytes in order.
        #[test]
        fn data_survives_any_fragmentation_and_any_split(
            frames in prop::collection::vec(frame_strategy(), 1..8),
            mask in any::<[u8; 4]>(),
            splits in prop::collection::vec(1usize..64, 1..40),
        ) {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            let mut in_message = false;
            for (i, (fin, payload)) in frames.iter().enumerate() {
                let fin = *fin || i + 1 == frames.len();
                let opcode = if in_message { CONTINUATION } else { BINARY };
                input.extend(encode_client_frame(fin, opcode, mask, payload));
                expected.extend_from_slice(payload);
                in_message = !fin;
                if i % 3 == 1 {
                    input.extend(encode_client_frame(true, PONG, mask, b"x"));
                }
            }
            let mut deframer = Deframer::new();
            let mut data = Vec::new();
            let mut rest: &[u8] = &input;
            let mut split = splits.iter().cycle();
            while !rest.is_empty() {
                let n = (*split.next().unwrap()).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                let (used, control) = deframer.feed(chunk, &mut data).unwrap();
                prop_assert_eq!(used, chunk.len());
                prop_assert!(control.is_none());
                rest = tail;
            }
            prop_assert_eq!(data, expected);
        }

        /// Arbitrary input never panics and never yields more data than it held.
        #[test]
        fn arbitrary_input_is_bounded(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut deframer = Deframer::new();
            let mut data = Vec::new();
            let mut rest: &[u8] = &input;
            while let Ok((used, control)) = deframer.feed(rest, &mut data) {
                prop_assert!(used <= rest.len());
                rest = &rest[used..];
                if control.is_none() || deframer.is_closed() {
                    break;
                }
            }
            prop_assert!(data.len() <= input.len());
        }
    }
}
