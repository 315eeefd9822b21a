//! Password files: one `user:hash` line per user, as mosquitto_passwd writes them.
//!
//! Hash formats read:
//!
//! | Line | Scheme | Written by |
//! | --- | --- | --- |
//! | `user:$7$<iterations>$<salt>$<hash>` | PBKDF2-HMAC-SHA512, 64-byte hash, base64 fields | `petrel passwd`, mosquitto_passwd 2.x |
//! | `user:$6$<salt>$<hash>` | SHA-512 of password then salt, base64 fields | `mosquitto_passwd -H sha512` (mosquitto 1.x) |
//! | `user:$sha256$<salt>$<hex>` | SHA-256 of password then salt, hex digest | Easegress's `saltedSha256Pass` with its `salt` |
//!
//! Easegress keeps one salt for all users and the digest in its YAML; a user brings
//! `username:$sha256$<salt>$<saltedSha256Pass>` lines. New entries are always written as
//! `$7$`, which mosquitto reads too. Blank lines and lines starting with `#` are ignored.
//!
//! [`PasswordFile::verify`] compares in constant time, and for a user it does not know it
//! hashes the password against a dummy entry of the same cost, so that neither the answer
//! nor the time taken tells an unknown user from a wrong password.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::ParseError;

/// PBKDF2 iterations of entries written by [`PasswordFile::set`] unless told otherwise.
///
/// Verification runs on the broker's shard thread during CONNECT, so the cost is a trade:
/// 1,000 iterations take about a millisecond there; mosquitto_passwd uses 101.
pub const DEFAULT_ITERATIONS: u32 = 1000;
/// The most PBKDF2 iterations accepted in a file: more would stall a shard on every
/// CONNECT of that user.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt bytes of entries written by [`PasswordFile::set`] (mosquitto_passwd's size).
pub const SALT_LEN: usize = 12;

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// PBKDF2-HMAC-SHA512 (`$7$`).
    Pbkdf2Sha512 {
        /// Iterations.
        iterations: u32,
        /// The salt.
        salt: Vec<u8>,
        /// The derived key (64 bytes from mosquitto; any length is compared).
        hash: Vec<u8>,
    },
    /// SHA-512 of the password followed by the salt (`$6$`).
    Sha512 {
        /// The salt.
        salt: Vec<u8>,
        /// The digest.
        hash: Vec<u8>,
    },
    /// SHA-256 of the password followed by the salt, Easegress's scheme (`$sha256$`).
    SaltedSha256 {
        /// The salt, as text (Easegress appends its bytes).
        salt: String,
        /// The digest.
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for PasswordHash {
    // Never print hashes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "Pbkdf2Sha512 {{ iterations: {iterations}, .. }}")
            }
            PasswordHash::Sha512 { .. } => f.write_str("Sha512 { .. }"),
            PasswordHash::SaltedSha256 { .. } => f.write_str("SaltedSha256 { .. }"),
        }
    }
}

impl PasswordHash {
    /// A PBKDF2-SHA512 hash of `password`.
    pub fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> PasswordHash {
        let mut hash = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut hash);
        PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt: salt.to_vec(),
            hash,
        }
    }

    /// Whether `password` is the one hashed, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut derived = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut derived);
                derived.ct_eq(hash).into()
            }
            PasswordHash::Sha512 { salt, hash } => {
                let digest = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                digest.as_slice().ct_eq(hash).into()
            }
            PasswordHash::SaltedSha256 { salt, hash } => {
                let digest = Sha256::new()
                    .chain_update(password)
                    .chain_update(salt.as_bytes())
                    .finalize();
                digest.as_slice().ct_eq(hash).into()
            }
        }
    }

    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .map_err(|_| format!("`$7$` iterations `{iterations}` is not a number"))?;
                if iterations == 0 || iterations > MAX_ITERATIONS {
                    return Err(format!(
                        "`$7$` iterations must be between 1 and {MAX_ITERATIONS}"
                    ));
                }
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt: base64(salt, "salt")?,
                    hash: nonempty(base64(hash, "hash")?)?,
                })
            }
            ["", "6", salt, hash] => Ok(PasswordHash::Sha512 {
                salt: base64(salt, "salt")?,
                hash: nonempty(base64(hash, "hash")?)?,
            }),
            ["", "sha256", salt, hex] => Ok(PasswordHash::SaltedSha256 {
                salt: (*salt).to_string(),
                hash: nonempty(unhex(hex)?)?,
            }),
            ["", scheme, ..] if scheme.starts_with("argon2") => Err(String::from(
                "argon2 hashes are not supported: rehash with `petrel passwd` \
                 or `mosquitto_passwd -H sha512-pbkdf2`",
            )),
            _ => Err(String::from(
                "not a `$7$`, `$6$` or `$sha256$` hash (plain-text passwords are not accepted)",
            )),
        }
    }
}

impl std::fmt::Display for PasswordHash {
    /// The hash as written in a password file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            PasswordHash::SaltedSha256 { salt, hash } => {
                write!(f, "$sha256${salt}$")?;
                hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

fn base64(text: &str, what: &str) -> Result<Vec<u8>, String> {
    // mosquitto pads; other tools do not.
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| format!("the {what} is not base64"))
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || String::from("the digest is not hexadecimal");
    if text.len() % 2 != 0 || !text.is_ascii() {
        return Err(invalid());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| invalid()))
        .collect()
}

fn nonempty(hash: Vec<u8>) -> Result<Vec<u8>, String> {
    if hash.is_empty() {
        Err(String::from("the hash is empty"))
    } else {
        Ok(hash)
    }
}

/// A password file: users and their hashes, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    entries: Vec<(String, PasswordHash)>,
    /// Hashed for unknown users, at the cost of the file's dearest entry.
    dummy: PasswordHash,
}

impl Default for PasswordFile {
    fn default() -> Self {
        PasswordFile {
            entries: Vec::new(),
            dummy: dummy_for(DEFAULT_ITERATIONS),
        }
    }
}

fn dummy_for(iterations: u32) -> PasswordHash {
    PasswordHash::Pbkdf2Sha512 {
        iterations,
        salt: vec![0; SALT_LEN],
        hash: vec![0; 64],
    }
}

impl PasswordFile {
    /// An empty file.
    pub fn new() -> Self {
        PasswordFile::default()
    }

    /// Parses a password file; the error names the line.
    pub fn parse(text: &str) -> Result<PasswordFile, ParseError> {
        let mut file = PasswordFile::new();
        for (n, line) in text.lines().enumerate() {
            let error = |message: String| ParseError {
                line: n + 1,
                message,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(error(String::from("expected `user:hash`")));
            };
            if user.is_empty() {
                return Err(error(String::from("empty user name")));
            }
            if file.get(user).is_some() {
                return Err(error(format!("user `{user}` appears twice")));
            }
            let hash = PasswordHash::parse(hash.trim()).map_err(error)?;
            file.entries.push((user.to_string(), hash));
        }
        file.refresh_dummy();
        Ok(file)
    }

    /// Picks the dummy hashed for unknown users: the dearest scheme in the file, so that
    /// an unknown user never answers faster than a known one.
    fn refresh_dummy(&mut self) {
        let dearest_pbkdf2 = self
            .entries
            .iter()
            .filter_map(|(_, hash)| match hash {
                PasswordHash::Pbkdf2Sha512 { iterations, .. } => Some(*iterations),
                _ => None,
            })
            .max();
        let has = |f: fn(&PasswordHash) -> bool| self.entries.iter().any(|(_, h)| f(h));
        self.dummy = if let Some(iterations) = dearest_pbkdf2 {
            dummy_for(iterations)
        } else if has(|h| matches!(h, PasswordHash::Sha512 { .. })) {
            PasswordHash::Sha512 {
                salt: vec![0; SALT_LEN],
                hash: vec![0; 64],
            }
        } else if has(|h| matches!(h, PasswordHash::SaltedSha256 { .. })) {
            PasswordHash::SaltedSha256 {
                salt: String::new(),
                hash: vec![0; 32],
            }
        } else {
            dummy_for(DEFAULT_ITERATIONS)
        };
    }

    /// The hash stored for `user`.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.entries
            .iter()
            .find(|(name, _)| name == user)
            .map(|(_, hash)| hash)
    }

    /// The users, in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `user` exists and `password` is theirs. An unknown user costs the same
    /// hashing as a known one and gives the same answer as a wrong password.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                // The result is thrown away: only the time it took matters.
                let _ = self.dummy.verify(password);
                false
            }
        }
    }

    /// Adds `user` or changes their password, hashed with PBKDF2-SHA512 over `salt`.
    /// Returns whether the user existed.
    pub fn set(&mut self, user: &str, password: &[u8], salt: &[u8], iterations: u32) -> bool {
        let hash = PasswordHash::pbkdf2(password, salt, iterations);
        let existed = match self.entries.iter_mut().find(|(name, _)| name == user) {
            Some(entry) => {
                entry.1 = hash;
                true
            }
            None => {
                self.entries.push((user.to_string(), hash));
                false
            }
        };
        self.refresh_dummy();
        existed
    }

    /// Removes `user`; returns whether they existed.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(name, _)| name != user);
        self.refresh_dummy();
        self.entries.len() != before
    }

    /// The file's text (comments are not kept).
    pub fn to_text(&self) -> String {
        self.entries
            .iter()
            .map(|(user, hash)| format!("{user}:{hash}\n"))
            .collect()
    }
}

/// Whether `user` can be stored in a password file (mosquitto's rule: no `:`; and no line
/// breaks or control characters, which would split or corrupt the line).
pub fn valid_user_name(user: &str) -> bool {
    !user.is_empty() && !user.contains(':') && !user.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Written by mosquitto_passwd 2.0.11 (Debian 12): `-c -b f alice secret`, then
    // `-H sha512 -b f bob pw2`.
    const MOSQUITTO: &str = "\
alice:$7$101$SjRRTnE3GWNBTPFt$wvhANtka0ugb9Xv1EZrKmjg9GDojvMYffsNpTBFZaK7i7rPhF7qVTNtxgJIjC/M0gZrNKlFUku6JoR73M2pJ5A==
bob:$6$PQMEyTWRoHjDuSmv$ISnygoOUt4Oxiiim1MVpN0XmOdnqVv4KCV1V6i7F33770vzJLZrOT7jApIq8wgiql5kSyvYeIjUs8EtYRhw3sQ==
";

    #[test]
    fn reads_mosquitto_passwd_lines() {
        let file = PasswordFile::parse(MOSQUITTO).unwrap();
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"secreT"));
        assert!(file.verify("bob", b"pw2"));
        assert!(!file.verify("bob", b"secret"));
        assert!(!file.verify("carol", b"secret"));
    }

    #[test]
    fn reads_easegress_salted_sha256() {
        // Easegress: saltedSha256Pass = hex(sha256(password + salt)).
        let digest = Sha256::digest(b"letmeinpepper");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let file = PasswordFile::parse(&format!("eve:$sha256$pepper${hex}\n")).unwrap();
        assert!(file.verify("eve", b"letmein"));
        assert!(!file.verify("eve", b"letmeinpepper"));
        assert_eq!(file.to_text(), format!("eve:$sha256$pepper${hex}\n"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = PasswordFile::parse("# users\n\nalice:plain\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = PasswordFile::parse("alice\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = PasswordFile::parse("a:$7$x$AA$AA\n").unwrap_err();
        assert!(err.message.contains("iterations"), "{err}");
        let err = PasswordFile::parse("a:$argon2id$v=19$m=1,t=1,p=1$AA$AA\n").unwrap_err();
        assert!(err.message.contains("argon2"), "{err}");
        let twice = MOSQUITTO.to_string() + MOSQUITTO;
        assert_eq!(PasswordFile::parse(&twice).unwrap_err().line, 3);
    }

    #[test]
    fn set_change_remove() {
        let mut file = PasswordFile::parse(MOSQUITTO).unwrap();
        assert!(!file.set("carol", b"pw", b"0123456789ab", 10));
        assert!(file.verify("carol", b"pw"));
        assert!(file.set("alice", b"new", b"0123456789ab", 10));
        assert!(file.verify("alice", b"new"));
        assert!(!file.verify("alice", b"secret"));
        assert!(file.remove("bob"));
        assert!(!file.remove("bob"));
        let again = PasswordFile::parse(&file.to_text()).unwrap();
        assert_eq!(again.users().collect::<Vec<_>>(), ["alice", "carol"]);
        assert!(again.verify("alice", b"new"));
    }

    #[test]
    fn the_dummy_costs_what_the_dearest_entry_costs() {
        let mut file = PasswordFile::new();
        file.set("a", b"x", b"s", 5000);
        file.set("b", b"x", b"s", 10);
        assert_eq!(file.dummy, dummy_for(5000));
        file.remove("a");
        assert_eq!(file.dummy, dummy_for(10));
    }

    #[test]
    fn user_names() {
        assert!(valid_user_name("alice"));
        assert!(!valid_user_name("a:b"));
        assert!(!valid_user_name("a\nb"));
        assert!(!valid_user_name(""));
    }

    proptest! {
        /// What `set` writes reads back, and verifies only the password that was set.
        #[test]
        fn written_entries_read_back(
            user in "[a-z][a-z0-9_.@-]{0,12}",
            password in proptest::collection::vec(any::<u8>(), 0..24),
            other in proptest::collection::vec(any::<u8>(), 0..24),
            salt in proptest::collection::vec(any::<u8>(), SALT_LEN),
        ) {
            let mut file = PasswordFile::new();
            file.set(&user, &password, &salt, 3);
            let read = PasswordFile::parse(&file.to_text()).unwrap();
            prop_assert!(read.verify(&user, &password));
            prop_assert_eq!(read.verify(&user, &other), other == password);
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn parsing_never_panics(text in "\\PC*") {
            let _ = PasswordFile::parse(&text);
        }
    }
}
