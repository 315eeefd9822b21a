//! The transport keys of a `[[listener]]`: `tls` and `websocket`.

use std::path::PathBuf;

use serde::Deserialize;

/// TLS on a listener (`tls = { certs = [...], ... }`). With `websocket` too, the listener
/// speaks secure WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificates. A client naming a host (SNI) gets the first certificate
    /// whose subject alternative names (or, without any, common name) cover it; a client
    /// naming none, or one no certificate covers, gets the first.
    pub certs: Vec<CertificateConfig>,
    /// PEM file of the certificate authorities that sign client certificates. Setting it
    /// turns on client certificates (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// PEM file of certificate revocation lists: a client certificate listed there is
    /// refused. Needs `client_ca`.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Whether a client without a certificate is refused (when `client_ca` is set). On by
    /// default; off, certificates are optional but verified when given.
    #[serde(default)]
    pub require_client_cert: Option<bool>,
    /// The user name of a client with a certificate: `"cn"` (its common name) or
    /// `"subject"` (the whole subject, RFC 4514). Unset, the CONNECT's user name stands.
    #[serde(default)]
    pub cert_username: Option<CertUsername>,
    /// The oldest TLS version accepted: `"1.2"` or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Seconds between checks of the files above for changes, which are then reloaded
    /// without a restart; 0 reloads only on SIGHUP.
    #[serde(default = "default_watch_interval")]
    pub watch_interval: u64,
}

fn default_watch_interval() -> u64 {
    5
}

impl TlsConfig {
    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some() && self.require_client_cert.unwrap_or(true)
    }

    /// Every file the configuration reads, for change detection.
    pub fn files(&self) -> Vec<&PathBuf> {
        let mut files: Vec<&PathBuf> = self.certs.iter().flat_map(|c| [&c.cert, &c.key]).collect();
        files.extend(self.client_ca.iter());
        files.extend(self.crl.iter());
        files
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.certs.is_empty() {
            return Err(String::from("tls.certs: give at least one certificate"));
        }
        if self.client_ca.is_none() {
            if self.crl.is_some() {
                return Err(String::from("tls.crl: needs tls.client_ca"));
            }
            if self.require_client_cert == Some(true) {
                return Err(String::from("tls.require_client_cert: needs tls.client_ca"));
            }
            if self.cert_username.is_some() {
                return Err(String::from("tls.cert_username: needs tls.client_ca"));
            }
        }
        Ok(())
    }
}

/// One certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The chain, the server's certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Which part of a client certificate becomes the user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertUsername {
    /// The subject's common name (mosquitto's `use_identity_as_username`).
    Cn,
    /// The whole subject, RFC 4514 (mosquitto's `use_subject_as_username`).
    Subject,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// WebSocket on a listener (`websocket = { path = "/mqtt" }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// The path clients upgrade at; other paths get 404.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    String::from("/mqtt")
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            path: default_path(),
        }
    }
}
