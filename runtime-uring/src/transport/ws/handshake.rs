//! The WebSocket opening handshake (RFC 6455 section 4.2), sans-IO: the client's HTTP
//! request in, the server's response bytes out.
//!
//! MQTT asks for the subprotocol `mqtt` [MQTT-6.0.0-3]; clients of MQTT 3.1 offer
//! `mqttv3.1`, which is accepted too and echoed back.

use base64::Engine;
use sha1::{Digest, Sha1};

/// The longest request accepted: a browser's request with cookies fits easily, and a peer
/// that sends more without a blank line is not speaking WebSocket.
pub(crate) const MAX_REQUEST: usize = 8 * 1024;

/// RFC 6455 section 1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocols accepted, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A request the handshake accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// The bytes of the request, including the blank line: what follows is frames.
    pub(crate) request_len: usize,
    /// The `Sec-WebSocket-Accept` value.
    pub(crate) accept: String,
    /// The subprotocol chosen.
    pub(crate) protocol: &'static str,
}

impl Upgrade {
    /// The `101 Switching Protocols` response.
    pub(crate) fn response(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {}\r\n\r\n",
            self.accept, self.protocol
        )
        .into_bytes()
    }
}

/// Why a request was refused; each is answered with an HTTP error before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not an HTTP/1.1 GET with the headers RFC 6455 requires.
    BadRequest(&'static str),
    /// Another path than the listener's.
    NotFound,
    /// A WebSocket version other than 13.
    UpgradeRequired,
    /// No subprotocol MQTT can speak was offered.
    NoMqttProtocol,
    /// The request did not end within [`MAX_REQUEST`] bytes.
    TooLarge,
}

impl Refusal {
    /// The HTTP response that tells the client why.
    pub(crate) fn response(&self) -> Vec<u8> {
        let (status, extra, body) = match self {
            Refusal::BadRequest(why) => ("400 Bad Request", "", *why),
            Refusal::NotFound => ("404 Not Found", "", "no WebSocket endpoint at this path"),
            Refusal::UpgradeRequired => (
                "426 Upgrade Required",
                "Sec-WebSocket-Version: 13\r\n",
                "WebSocket version 13 only",
            ),
            Refusal::NoMqttProtocol => ("400 Bad Request", "", "the subprotocol must be mqtt"),
            Refusal::TooLarge => (
                "431 Request Header Fields Too Large",
                "",
                "request too large",
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\n{extra}Connection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Reads the request in `buf` for the WebSocket endpoint at `path`. `Ok(None)`: the
/// request is not complete yet, read more.
pub(crate) fn parse_request(buf: &[u8], path: &str) -> Result<Option<Upgrade>, Refusal> {
    let Some(end) = find_blank_line(buf) else {
        return if buf.len() >= MAX_REQUEST {
            Err(Refusal::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_REQUEST {
        return Err(Refusal::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| Refusal::BadRequest("the request is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest("malformed request line"));
    };
    if method != "GET" {
        return Err(Refusal::BadRequest("the method must be GET"));
    }
    if version != "HTTP/1.1" {
        return Err(Refusal::BadRequest("HTTP/1.1 is required"));
    }
    let target_path = target.split('?').next().unwrap_or("");
    if target_path != path {
        return Err(Refusal::NotFound);
    }
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut ws_version = None;
    let mut key = None;
    let mut protocol = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Refusal::BadRequest("malformed header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            ws_version = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            // The header may repeat; the first offer MQTT can speak wins, in the client's
            // order of preference.
            if protocol.is_none() {
                protocol = tokens(value)
                    .find_map(|offer| SUBPROTOCOLS.iter().find(|p| **p == offer).copied());
            }
        }
    }
    if !upgrade || !connection_upgrade {
        return Err(Refusal::BadRequest("not a WebSocket upgrade"));
    }
    if ws_version != Some("13") {
        return Err(Refusal::UpgradeRequired);
    }
    let key = key.ok_or(Refusal::BadRequest("no Sec-WebSocket-Key"))?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => {
            return Err(Refusal::BadRequest(
                "Sec-WebSocket-Key is not 16 bytes of base64",
            ))
        }
    }
    let protocol = protocol.ok_or(Refusal::NoMqttProtocol)?;
    Ok(Some(Upgrade {
        request_len: end,
        accept: accept_key(key),
        protocol,
    }))
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 section 4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

/// The end of the request head (after `\r\n\r\n`), if it is in `buf`.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The comma-separated tokens of a header value.
fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(extra: &str) -> String {
        format!(
            "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn the_rfc_example_key_is_accepted() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let text = request("Sec-WebSocket-Protocol: mqtt\r\n");
        let upgrade = parse_request(text.as_bytes(), "/mqtt").unwrap().unwrap();
        assert_eq!(upgrade.request_len, text.len());
        assert_eq!(upgrade.protocol, "mqtt");
        let response = String::from_utf8(upgrade.response()).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 "));
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    }

    #[test]
    fn the_first_mqtt_offer_is_chosen() {
        let text = request("Sec-WebSocket-Protocol: chat, mqttv3.1, mqtt\r\n");
        let upgrade = parse_request(text.as_bytes(), "/mqtt").unwrap().unwrap();
        assert_eq!(upgrade.protocol, "mqttv3.1");
    }

    #[test]
    fn the_query_string_is_ignored() {
        let text = request("Sec-WebSocket-Protocol: mqtt\r\n").replace("/mqtt ", "/mqtt?x=1 ");
        assert!(parse_request(text.as_bytes(), "/mqtt").unwrap().is_some());
    }

    #[test]
    fn incomplete_requests_ask_for_more() {
        let text = request("Sec-WebSocket-Protocol: mqtt\r\n");
        for cut in 0..text.len() {
            assert_eq!(parse_request(&text.as_bytes()[..cut], "/mqtt"), Ok(None));
        }
    }

    #[test]
    fn bad_requests_are_refused_with_the_right_status() {
        let good = request("Sec-WebSocket-Protocol: mqtt\r\n");
        let cases: [(String, &str); 7] = [
            (good.replace("GET", "POST"), "400"),
            (good.replace("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost"), "400"),
            (good.clone(), "404"),
            (good.replace("Version: 13", "Version: 8"), "426"),
            (request(""), "400"),
            (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), "400"),
            (good.replace("Upgrade: websocket", "Upgrade: h2c"), "400"),
        ];
        for (i, (text, status)) in cases.iter().enumerate() {
            let path = if i == 2 { "/other" } else { "/mqtt" };
            let refusal = parse_request(text.as_bytes(), path).unwrap_err();
            let response = String::from_utf8(refusal.response()).unwrap();
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "case {i}: {response}"
            );
        }
        let endless = vec![b'a'; MAX_REQUEST];
        assert_eq!(parse_request(&endless, "/mqtt"), Err(Refusal::TooLarge));
    }

    proptest! {
        /// Arbitrary bytes never panic, and an answer is only given on a complete head.
        #[test]
        fn arbitrary_requests_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(upgrade)) = parse_request(&input, "/mqtt") {
                prop_assert!(upgrade.request_len <= input.len());
                prop_assert!(input[..upgrade.request_len].ends_with(b"\r\n\r\n"));
            }
        }

        /// Header names are case-insensitive and the order of headers does not matter.
        #[test]
        fn header_case_and_order_do_not_matter(upper in any::<bool>(), rotate in 0usize..6) {
            let mut headers = vec![
                "Host: x".to_string(),
                "Upgrade: websocket".to_string(),
                "Connection: Upgrade".to_string(),
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_string(),
                "Sec-WebSocket-Version: 13".to_string(),
                "Sec-WebSocket-Protocol: mqtt".to_string(),
            ];
            headers.rotate_left(rotate);
            if upper {
                for h in &mut headers {
                    let (name, value) = h.split_once(':').unwrap();
                    *h = format!("{}:{}", name.to_ascii_uppercase(), value);
                }
            }
            let text = format!("GET /mqtt HTTP/1.1\r\n{}\r\n\r\n", headers.join("\r\n"));
            let upgrade = parse_request(text.as_bytes(), "/mqtt").unwrap().unwrap();
            prop_assert_eq!(upgrade.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        }
    }
}
