//! `petrel-auth`: who may connect and what they may do, decided from two text files.
//!
//! - [`password`]: a password file of salted hashes, one `user:hash` line per user, in
//!   mosquitto_passwd's format (PBKDF2-SHA512 `$7$` lines and SHA-512 `$6$` ones), plus
//!   Easegress's salted SHA-256, so users can bring the files they have. Verification
//!   compares in constant time, and an unknown user costs the same hashing as a known one.
//! - [`acl`]: an access control list, rules matched by user name, client identifier and
//!   remote address, first match wins, default deny.
//!
//! Nothing here reads a file, a clock or a random number generator: the broker and the
//! proxy read the files, pass the text in, and supply salts, so both authenticate the same
//! way and every decision is testable without a socket.
#![forbid(unsafe_code)]

pub mod acl;
pub mod password;
mod topic;

/// A line of a password or ACL file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}
