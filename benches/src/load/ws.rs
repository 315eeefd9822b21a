//! The client side of MQTT over WebSocket (RFC 6455), sans-IO: the opening request and the
//! check of the server's answer, and the framing of the byte stream both ways.
//!
//! MQTT over WebSocket is a byte stream cut into binary frames at arbitrary points
//! [MQTT-6.0.0-2], so the generator frames whatever one write of its MQTT buffer holds as
//! one frame (tens of kilobytes when publishing fast), and hands the payload of the
//! server's data frames on without caring where frames begin.

use base64::Engine;
use sha1::{Digest, Sha1};

/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The longest handshake response accepted.
pub(crate) const MAX_RESPONSE: usize = 8 * 1024;

/// The largest payload of one frame the generator sends: a write of the whole MQTT buffer.
pub(crate) const MAX_FRAME_PAYLOAD: usize = 64 * 1024;

/// The opening request for `path` on `host`, with this `Sec-WebSocket-Key`, asking for the
/// subprotocol `mqtt` [MQTT-6.0.0-3].
pub(crate) fn request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes()
}

/// A `Sec-WebSocket-Key` from 16 bytes.
pub(crate) fn key(nonce: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
fn accept_of(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

/// Checks the server's answer to a request made with `key`. `Ok(None)`: it has not ended
/// yet; `Ok(Some(n))`: it is the first `n` bytes (what follows is frames).
pub(crate) fn parse_response(bytes: &[u8], key: &str) -> Result<Option<usize>, String> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        if bytes.len() > MAX_RESPONSE {
            return Err("WebSocket handshake: response too long".into());
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        return Err(format!("WebSocket handshake refused: {status}"));
    }
    let mut accept = None;
    let mut protocol = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.trim().eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(value);
            } else if name.trim().eq_ignore_ascii_case("sec-websocket-protocol") {
                protocol = Some(value);
            }
        }
    }
    if accept != Some(accept_of(key).as_str()) {
        return Err("WebSocket handshake: wrong Sec-WebSocket-Accept".into());
    }
    // A server that picks no subprotocol does not speak MQTT over WebSocket [MQTT-6.0.0-4].
    if protocol != Some("mqtt") {
        return Err(format!(
            "WebSocket handshake: subprotocol {protocol:?}, not \"mqtt\""
        ));
    }
    Ok(Some(end + 4))
}

/// A small xorshift generator for masking keys: RFC 6455 wants them unpredictable to
/// intermediaries, not secret, and one per frame must cost nothing.
#[derive(Debug, Clone)]
pub(crate) struct Masks(u64);

impl Masks {
    /// A generator seeded with `seed` (any value; zero is replaced).
    pub(crate) fn new(seed: u64) -> Masks {
        Masks(seed | 1)
    }

    fn next(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }
}

/// Appends one masked client frame with this opcode and payload to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], masks: &mut Masks) {
    let len = payload.len();
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = masks.next();
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    let body = &mut out[start..];
    // Whole words first: the compiler turns this into wide XORs.
    let word = u32::from_ne_bytes(mask);
    let mut chunks = body.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// The binary opcode, for MQTT's data.
pub(crate) const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// What [`Deframer::deframe`] stopped at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It needs more input or more room in the output.
    Idle,
    /// The server sent a close frame: the connection is over.
    Closed,
}

/// Reads the server's frames: the payload of data frames goes to the output, pings are
/// answered, pongs are skipped, a close ends the stream.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    /// Payload bytes of the current data frame not yet handed on.
    remaining: u64,
}

impl Deframer {
    /// Moves what `input` holds into `out`; returns (input bytes consumed, output bytes
    /// written, why it stopped). Pong frames answering pings are appended to `pongs`.
    pub(crate) fn deframe(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        pongs: &mut Vec<u8>,
        masks: &mut Masks,
    ) -> Result<(usize, usize, Stop), String> {
        let (mut read, mut written) = (0, 0);
        loop {
            if self.remaining > 0 {
                let n = (self.remaining.min(usize::MAX as u64) as usize)
                    .min(input.len() - read)
                    .min(out.len() - written);
                if n == 0 {
                    return Ok((read, written, Stop::Idle));
                }
                out[written..written + n].copy_from_slice(&input[read..read + n]);
                read += n;
                written += n;
                self.remaining -= n as u64;
                continue;
            }
            let rest = &input[read..];
            let Some((opcode, header, len)) = header(rest)? else {
                return Ok((read, written, Stop::Idle));
            };
            match opcode {
                CONTINUATION | BINARY => {
                    read += header;
                    self.remaining = len;
                }
                TEXT => return Err("WebSocket: a text frame (MQTT travels in binary)".into()),
                CLOSE => return Ok((read, written, Stop::Closed)),
                PING | PONG => {
                    // Control frames carry at most 125 bytes (RFC 6455 section 5.5).
                    if len > 125 {
                        return Err("WebSocket: a control frame over 125 bytes".into());
                    }
                    let len = len as usize;
                    if rest.len() < header + len {
                        return Ok((read, written, Stop::Idle));
                    }
                    if opcode == PING {
                        frame(pongs, PONG, &rest[header..header + len], masks);
                    }
                    read += header + len;
                }
                other => return Err(format!("WebSocket: unknown opcode {other:#x}")),
            }
        }
    }
}

/// The opcode, header length and payload length of the frame `bytes` starts with, once
/// its header is complete.
fn header(bytes: &[u8]) -> Result<Option<(u8, usize, u64)>, String> {
    let [b0, b1, ..] = *bytes else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err("WebSocket: a masked frame from the server".into());
    }
    if b0 & 0x70 != 0 {
        return Err("WebSocket: reserved bits set (no extension was agreed)".into());
    }
    let (header, len) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(b);
                (10, u64::from_be_bytes(word))
            }
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    Ok(Some((b0 & 0x0f, header, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks a client frame the way a server does: (opcode, payload).
    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[0] & 0x80, 0x80, "FIN");
        assert_eq!(frame[1] & 0x80, 0x80, "masked");
        let (header, len) = match frame[1] & 0x7f {
            126 => (4, usize::from(u16::from_be_bytes([frame[2], frame[3]]))),
            127 => (
                10,
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, usize::from(n)),
        };
        let mask = &frame[header..header + 4];
        let payload = frame[header + 4..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect::<Vec<_>>();
        assert_eq!(payload.len(), len);
        (frame[0] & 0x0f, payload)
    }

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_of_every_length_class_unmask_to_their_payload() {
        let mut masks = Masks::new(7);
        for len in [0, 1, 5, 125, 126, 127, 65_535, 65_536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut out = Vec::new();
            frame(&mut out, BINARY, &payload, &mut masks);
            assert_eq!(unmask(&out), (BINARY, payload), "length {len}");
        }
    }

    #[test]
    fn the_accept_value_of_rfc_6455s_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_of("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                   Sec-WebSocket-Protocol: mqtt\r\n\r\n\x82\x00";
        assert_eq!(parse_response(ok, key), Ok(Some(ok.len() - 2)));
        assert_eq!(parse_response(&ok[..20], key), Ok(None));
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xx\r\n\r\n";
        assert!(parse_response(wrong, key).is_err());
        let refused = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(parse_response(refused, key).unwrap_err().contains("404"));
    }

    #[test]
    fn data_frames_split_anywhere_come_out_whole_and_pings_are_answered() {
        let mut wire = server_frame(BINARY, b"hello ");
        wire.extend(server_frame(PING, b"p"));
        wire.extend(server_frame(CONTINUATION, &[b'x'; 300]));
        wire.extend(server_frame(PONG, b""));
        wire.extend(server_frame(CLOSE, b""));
        let mut expected = b"hello ".to_vec();
        expected.extend([b'x'; 300]);
        // Fed in pieces of every size, into outputs of every size.
        for piece in [1, 2, 3, 7, 64, 1000] {
            for room in [1, 5, 4096] {
                let mut d = Deframer::default();
                let mut masks = Masks::new(1);
                let (mut pongs, mut got) = (Vec::new(), Vec::new());
                let (mut fed, mut start) = (0, 0);
                let mut closed = false;
                while !closed {
                    fed = (fed + piece).min(wire.len());
                    loop {
                        let mut out = vec![0u8; room];
                        let (r, w, stop) = d
                            .deframe(&wire[start..fed], &mut out, &mut pongs, &mut masks)
                            .unwrap();
                        start += r;
                        got.extend_from_slice(&out[..w]);
                        if stop == Stop::Closed {
                            closed = true;
                            break;
                        }
                        if r == 0 && w == 0 {
                            break;
                        }
                    }
                    assert!(closed || fed < wire.len(), "stalled");
                }
                assert_eq!(got, expected, "pieces of {piece}, room {room}");
                assert_eq!(unmask(&pongs), (PONG, b"p".to_vec()));
            }
        }
    }

    #[test]
    fn frames_no_server_may_send_are_errors() {
        let mut masks = Masks::new(1);
        let mut pongs = Vec::new();
        let mut out = [0u8; 16];
        let mut d = Deframer::default();
        for bad in [
            vec![0x82, 0x81, 0, 0, 0, 0, 0], // masked
            vec![0xC2, 0x00],                // RSV1
            vec![0x81, 0x01, b'a'],          // text
            vec![0x89, 126, 0, 200],         // ping over 125 bytes
            vec![0x83, 0x00],                // reserved opcode
        ] {
            assert!(d.deframe(&bad, &mut out, &mut pongs, &mut masks).is_err());
        }
    }
}
