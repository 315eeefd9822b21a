//! The `[http]` table.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The HTTP API: publish, management, `/health` and `/metrics`. Off unless the `[http]`
/// table is present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen; loopback unless `allow_remote` is set.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// A bearer token (`Authorization: Bearer TOKEN`).
    #[serde(default)]
    pub token: Option<String>,
    /// A password file (`petrel passwd` writes it) whose users may use HTTP basic auth.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Listen on a non-loopback address; then `token` or `password_file` is required.
    #[serde(default)]
    pub allow_remote: bool,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl HttpConfig {
    /// Whether requests must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.token.is_some() || self.password_file.is_some()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.bind.ip().is_loopback() {
            if !self.allow_remote {
                return Err(format!(
                    "http.bind: {} is not a loopback address; set http.allow_remote = true to \
                     listen there",
                    self.bind
                ));
            }
            if !self.requires_auth() {
                return Err(String::from(
                    "http.allow_remote: needs http.token or http.password_file",
                ));
            }
        }
        if self.token.as_deref() == Some("") {
            return Err(String::from("http.token: must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HttpConfig, String> {
        let config: HttpConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn loopback_by_default_and_remote_only_with_auth() {
        let config = parse("").unwrap();
        assert_eq!(config.bind, default_bind());
        assert!(!config.requires_auth());
        assert!(parse("bind = \"0.0.0.0:8080\"")
            .unwrap_err()
            .contains("allow_remote"));
        assert!(parse("bind = \"0.0.0.0:8080\"\nallow_remote = true")
            .unwrap_err()
            .contains("token"));
        parse("bind = \"0.0.0.0:8080\"\nallow_remote = true\ntoken = \"t\"").unwrap();
        assert!(parse("token = \"\"").is_err());
    }
}
