//! The specification's data representations (section 1.5): integers, variable byte integers,
//! UTF-8 strings and binary data, as nom parsers over a complete packet body and as writes
//! into a caller's buffer.

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u8};
use nom::Parser;

use crate::error::{DecodeError, EncodeError};

/// nom's result type with our error.
pub(crate) type PResult<'a, T> = nom::IResult<&'a [u8], T, DecodeError>;

/// The largest value a variable byte integer can hold.
pub const VBI_MAX: u32 = 268_435_455;

pub(crate) fn fail<T>(error: DecodeError) -> Result<T, nom::Err<DecodeError>> {
    Err(nom::Err::Failure(error))
}

/// Turns a nom outcome into a plain one: with `complete` parsers over a whole body there is
/// no `Incomplete`, and running out of input is [`DecodeError::UnexpectedEnd`].
pub(crate) fn finish<T>(result: Result<T, nom::Err<DecodeError>>) -> Result<T, DecodeError> {
    result.map_err(|err| match err {
        nom::Err::Error(e) | nom::Err::Failure(e) => e,
        nom::Err::Incomplete(_) => DecodeError::UnexpectedEnd,
    })
}

pub(crate) fn u8_(input: &[u8]) -> PResult<'_, u8> {
    be_u8(input)
}

pub(crate) fn u16_(input: &[u8]) -> PResult<'_, u16> {
    be_u16(input)
}

/// Outcome of reading a variable byte integer from a possibly partial buffer.
pub(crate) enum VbiRead {
    /// The value and the number of bytes it took.
    Value(u32, usize),
    /// The buffer ends inside the integer.
    Incomplete,
}

/// Reads a variable byte integer from the start of `input`, which may end early.
pub(crate) fn read_vbi(input: &[u8]) -> Result<VbiRead, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in input.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A zero final byte after the first means a shorter encoding existed.
            if index > 0 && byte == 0 {
                return Err(DecodeError::MalformedVariableByteInteger);
            }
            return Ok(VbiRead::Value(value, index + 1));
        }
    }
    if input.len() >= 4 {
        Err(DecodeError::MalformedVariableByteInteger)
    } else {
        Ok(VbiRead::Incomplete)
    }
}

pub(crate) fn vbi(input: &[u8]) -> PResult<'_, u32> {
    match read_vbi(input) {
        Ok(VbiRead::Value(value, len)) => Ok((&input[len..], value)),
        Ok(VbiRead::Incomplete) => fail(DecodeError::UnexpectedEnd),
        Err(e) => fail(e),
    }
}

/// Binary data: a two-byte length, then that many bytes.
pub(crate) fn binary(input: &[u8]) -> PResult<'_, &[u8]> {
    let (input, len) = be_u16(input)?;
    take(len).parse(input)
}

/// A UTF-8 encoded string: well formed and free of U+0000 [MQTT-1.5.4-1], [MQTT-1.5.4-2].
pub(crate) fn utf8(input: &[u8]) -> PResult<'_, &str> {
    let (rest, bytes) = binary(input)?;
    match validate_utf8(bytes) {
        Ok(s) => Ok((rest, s)),
        Err(e) => fail(e),
    }
}

/// Re-reads a string field that the decoder has already validated, for list iteration: a
/// list is walked again each time it is iterated, so this skips what cannot fail (the
/// U+0000 scan) and nom's error plumbing. `from_utf8` stays: it is the safe way to a `&str`.
pub(crate) fn validated_utf8(input: &[u8]) -> Option<(&[u8], &str)> {
    let (len, rest) = input.split_first_chunk::<2>()?;
    let (bytes, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
    Some((rest, core::str::from_utf8(bytes).ok()?))
}

/// Checks the specification's string rules. `core::str::from_utf8` already refuses surrogate
/// code points and overlong forms; U+0000 is the one extra rule, and in UTF-8 it is the only
/// character that contains a zero byte.
pub(crate) fn validate_utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if contains_either(bytes, 0, 0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

#[cfg(target_pointer_width = "64")]
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
#[cfg(target_pointer_width = "64")]
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether `word` has a zero byte (the exact test: a borrow can only mark bytes above a
/// zero byte, never invent the first one).
#[cfg(target_pointer_width = "64")]
const fn has_zero_byte(word: u64) -> bool {
    word.wrapping_sub(ONES) & !word & HIGHS != 0
}

/// Whether some byte of `bytes` is `a` or `b`; neither may be 0xFF, the padding of a string
/// shorter than a word.
#[cfg(target_pointer_width = "64")]
pub(crate) fn contains_either(bytes: &[u8], a: u8, b: u8) -> bool {
    let [a_word, b_word] = [a, b].map(|byte| ONES * u64::from(byte));
    fold_words(
        bytes,
        |word| has_zero_byte(word ^ a_word) | has_zero_byte(word ^ b_word),
        |x, y| x | y,
    )
}

/// Whether some byte of `bytes` is `a`, and whether some byte is `b` or `c`, in one pass;
/// none may be 0xFF, the padding of a string shorter than a word.
#[cfg(target_pointer_width = "64")]
pub(crate) fn scan(bytes: &[u8], a: u8, b: u8, c: u8) -> (bool, bool) {
    let [a_word, b_word, c_word] = [a, b, c].map(|byte| ONES * u64::from(byte));
    fold_words(
        bytes,
        |word| {
            (
                has_zero_byte(word ^ a_word),
                has_zero_byte(word ^ b_word) | has_zero_byte(word ^ c_word),
            )
        },
        |x, y| (x.0 | y.0, x.1 | y.1),
    )
}

/// Applies `test` to `bytes` eight at a time and joins the results. Every string of every
/// packet goes through here (U+0000, topic wildcards), and most are short: a word at a time
/// without early exit beats both `memchr`, which pays for alignment on each call, and a
/// byte loop. Always inlined, so each caller's closures compile into one plain loop.
#[cfg(target_pointer_width = "64")]
#[inline(always)]
fn fold_words<T>(bytes: &[u8], test: impl Fn(u64) -> T, join: impl Fn(T, T) -> T) -> T {
    let Some(last) = bytes.last_chunk::<8>() else {
        // Shorter than a word: the bytes shift in under 0xFF padding, which matches nothing
        // the callers look for.
        let word = bytes
            .iter()
            .fold(u64::MAX, |word, &byte| word << 8 | u64::from(byte));
        return test(word);
    };
    // The bytes after the last whole word: the last eight bytes cover them, overlapping.
    let mut found = test(u64::from_ne_bytes(*last));
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        found = join(found, test(u64::from_ne_bytes(word)));
    }
    found
}

/// [`contains_either`] where words are not 64 bits: there a word takes two registers and the
/// word-at-a-time scan 0.4 KB of flash, while a byte loop is a few instructions.
#[cfg(not(target_pointer_width = "64"))]
pub(crate) fn contains_either(bytes: &[u8], a: u8, b: u8) -> bool {
    bytes.iter().any(|&x| x == a || x == b)
}

/// [`scan`] where words are not 64 bits, a byte at a time as [`contains_either`] there.
#[cfg(not(target_pointer_width = "64"))]
pub(crate) fn scan(bytes: &[u8], a: u8, b: u8, c: u8) -> (bool, bool) {
    bytes
        .iter()
        .fold((false, false), |(found_a, found_bc), &x| {
            (found_a | (x == a), found_bc | (x == b) | (x == c))
        })
}

/// A topic name field: a string under the UTF-8 rules, and whether it holds a wildcard,
/// found in the same pass as U+0000. PUBLISH is the hot path; its caller decides what a
/// wildcard means, after the checks that come first.
pub(crate) fn topic_utf8(input: &[u8]) -> PResult<'_, (&str, bool)> {
    let (rest, bytes) = binary(input)?;
    let Ok(s) = core::str::from_utf8(bytes) else {
        return fail(DecodeError::InvalidUtf8);
    };
    let (null, wildcard) = scan(bytes, 0, b'+', b'#');
    if null {
        return fail(DecodeError::NullCharacter);
    }
    Ok((rest, (s, wildcard)))
}

/// The number of bytes a variable byte integer takes.
pub const fn vbi_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The encoded size of a string or binary field, checking the 65,535-byte limit.
pub(crate) fn field_len(bytes: &[u8]) -> Result<usize, EncodeError> {
    if bytes.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong);
    }
    Ok(2 + bytes.len())
}

/// A cursor over the caller's output buffer. Every write is checked, so a wrong size
/// computation surfaces as an error, never a panic or an out-of-bounds write.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        let required = end;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { required })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, value: u8) -> Result<(), EncodeError> {
        self.bytes(&[value])
    }

    pub(crate) fn u16(&mut self, value: u16) -> Result<(), EncodeError> {
        self.bytes(&value.to_be_bytes())
    }

    /// Only properties hold four-byte integers.
    #[cfg(feature = "v5")]
    pub(crate) fn u32(&mut self, value: u32) -> Result<(), EncodeError> {
        self.bytes(&value.to_be_bytes())
    }

    pub(crate) fn vbi(&mut self, value: u32) -> Result<(), EncodeError> {
        if value > VBI_MAX {
            return Err(EncodeError::ValueTooLarge);
        }
        let mut rest = value;
        loop {
            let mut byte = (rest % 128) as u8;
            rest /= 128;
            if rest > 0 {
                byte |= 0x80;
            }
            self.u8(byte)?;
            if rest == 0 {
                return Ok(());
            }
        }
    }

    /// A string or binary field: two-byte length, then the bytes.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.u16(len)?;
        self.bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_vbi(value: u32) -> ([u8; 4], usize) {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.vbi(value).unwrap();
        let len = w.position();
        (buf, len)
    }

    #[test]
    fn vbi_boundaries_from_the_specification_table() {
        // MQTT 5.0 table 1-1 / 3.1.1 table 2.4.
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            let (buf, len) = encode_vbi(value);
            assert_eq!(&buf[..len], bytes, "encoding {value}");
            assert_eq!(vbi_len(value), bytes.len());
            match read_vbi(bytes).unwrap() {
                VbiRead::Value(v, n) => assert_eq!((v, n), (value, bytes.len())),
                VbiRead::Incomplete => panic!("complete integer read as incomplete"),
            }
        }
    }

    #[test]
    fn vbi_rejects_five_bytes_and_non_minimal_forms() {
        assert_eq!(
            read_vbi(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).err(),
            Some(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(
            read_vbi(&[0x80, 0x00]).err(),
            Some(DecodeError::MalformedVariableByteInteger)
        );
        assert!(matches!(read_vbi(&[0x80, 0x80]), Ok(VbiRead::Incomplete)));
        assert!(matches!(read_vbi(&[]), Ok(VbiRead::Incomplete)));
        let mut buf = [0u8; 8];
        assert_eq!(
            Writer::new(&mut buf).vbi(VBI_MAX + 1),
            Err(EncodeError::ValueTooLarge)
        );
    }

    #[test]
    fn contains_either_finds_a_byte_at_every_position() {
        for len in 0..40 {
            let mut bytes = [b'a'; 40];
            assert!(!contains_either(&bytes[..len], b'+', b'#'));
            assert!(!contains_either(&bytes[..len], 0, 0));
            for at in 0..len {
                for (needle, a, b) in [(b'+', b'+', b'#'), (b'#', b'+', b'#'), (0, 0, 0)] {
                    bytes[at] = needle;
                    assert!(contains_either(&bytes[..len], a, b), "{len} {at} {needle}");
                    bytes[at] = b'a';
                }
                // Neighbours of the needles, and bytes with the high bit set, are no match.
                for other in [b'*', b',', b'"', b'$', 0x01, 0x80, 0xAB, 0xFF] {
                    bytes[at] = other;
                    assert!(!contains_either(&bytes[..len], b'+', b'#'));
                    assert!(!contains_either(&bytes[..len], 0, 0));
                    bytes[at] = b'a';
                }
            }
        }
    }

    #[test]
    fn scan_reports_each_kind_of_byte() {
        assert_eq!(scan(b"", 0, b'+', b'#'), (false, false));
        assert_eq!(scan(b"a/b", 0, b'+', b'#'), (false, false));
        assert_eq!(scan(b"a/+", 0, b'+', b'#'), (false, true));
        assert_eq!(scan(b"sensors/building-7/#", 0, b'+', b'#'), (false, true));
        assert_eq!(scan(b"a\0b", 0, b'+', b'#'), (true, false));
        assert_eq!(
            scan(b"sensors/\0/building-7/+", 0, b'+', b'#'),
            (true, true)
        );
        assert_eq!(
            topic_utf8(&[0, 3, b'a', b'/', b'#', 9]),
            Ok((&[9][..], ("a/#", true)))
        );
        assert_eq!(
            topic_utf8(&[0, 3, b'a', 0, b'b']),
            Err(nom::Err::Failure(DecodeError::NullCharacter))
        );
        assert_eq!(
            topic_utf8(&[0, 2, 0xC0, 0xAF]),
            Err(nom::Err::Failure(DecodeError::InvalidUtf8))
        );
    }

    #[test]
    fn strings_follow_the_utf8_rules() {
        assert_eq!(validate_utf8(b"a/b").unwrap(), "a/b");
        // U+0000 [MQTT-1.5.4-2]
        assert_eq!(validate_utf8(b"a\0b"), Err(DecodeError::NullCharacter));
        // An encoded surrogate (U+D800) is not UTF-8 [MQTT-1.5.4-1].
        assert_eq!(
            validate_utf8(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        );
        // Overlong encoding of '/'.
        assert_eq!(validate_utf8(&[0xC0, 0xAF]), Err(DecodeError::InvalidUtf8));
        // The specification's example: U+FEFF is valid and must not be skipped [MQTT-1.5.4-3].
        let (rest, s) = utf8(&[0x00, 0x03, 0xEF, 0xBB, 0xBF]).unwrap();
        assert_eq!((rest, s), (&[][..], "\u{feff}"));
        assert!(utf8(&[0x00, 0x05, b'a']).is_err());
    }
}
