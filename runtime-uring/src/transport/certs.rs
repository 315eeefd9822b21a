//! A TLS listener's certificates: loaded from PEM files, chosen by SNI, client
//! certificates verified against a CA and a CRL, and reloaded without a restart.
//!
//! The rustls configuration is immutable, so a reload builds a new one and swaps it in:
//! connections accepted afterwards use it, established ones keep theirs. A reload that
//! fails (a half-written file, a key that does not match its certificate) keeps the
//! configuration in use and says why.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use petrel_state::broker::PeerIdentity;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use tracing::{info, warn};

use crate::config::{CertUsername, TlsConfig, TlsVersion};
use crate::shared::Shared;

/// Hands out the rustls configuration of one TLS listener, and reloads it.
pub(crate) struct TlsAcceptor {
    settings: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// The modification times of the files when last loaded.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Loads every file; the error names the file and what is wrong with it.
    pub(crate) fn new(settings: TlsConfig) -> Result<TlsAcceptor, String> {
        let stamps = modification_times(&settings);
        let config = build(&settings)?;
        Ok(TlsAcceptor {
            settings,
            current: RwLock::new(config),
            stamps: Mutex::new(stamps),
        })
    }

    /// The configuration for a new connection.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on failure the configuration in use stays.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let stamps = modification_times(&self.settings);
        let config = build(&self.settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        Ok(())
    }

    /// Reloads if a file changed since the last load: `None` when none did.
    pub(crate) fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = modification_times(&self.settings);
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if *stamps == now {
                return None;
            }
            // Remember the new times even if the reload fails, so a broken file is
            // reported once, not at every check; the next change tries again.
            *stamps = now;
        }
        Some(self.reload())
    }

    /// Seconds between change checks (0: SIGHUP only).
    pub(crate) fn watch_interval(&self) -> u64 {
        self.settings.watch_interval
    }

    /// The listener's files, for log lines.
    pub(crate) fn describe(&self) -> String {
        self.settings.certs[0].cert.display().to_string()
    }

    /// What a finished handshake proved about the client: the subject of its verified
    /// certificate, and the user name taken from it if the listener says so.
    pub(crate) fn identity(&self, conn: &ServerConnection) -> Option<PeerIdentity> {
        let der = conn.peer_certificates()?.first()?;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let subject = rfc4514(cert.subject());
        let username = match self.settings.cert_username {
            None => None,
            Some(CertUsername::Subject) => Some(subject.clone()),
            Some(CertUsername::Cn) => common_name(cert.subject()),
        };
        Some(PeerIdentity { subject, username })
    }
}

/// Starts the thread that reloads TLS files when they change, if a listener asks for it;
/// it ends with the server.
pub(crate) fn watch(shared: Weak<Shared>) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    if strong
        .tls
        .iter()
        .all(|acceptor| acceptor.watch_interval() == 0)
    {
        return;
    }
    drop(strong);
    let spawned = std::thread::Builder::new()
        .name(String::from("petrel-tls-watch"))
        .spawn(move || {
            let mut elapsed: u64 = 0;
            loop {
                std::thread::sleep(Duration::from_secs(1));
                elapsed += 1;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                for acceptor in &shared.tls {
                    let interval = acceptor.watch_interval();
                    if interval == 0 || elapsed % interval != 0 {
                        continue;
                    }
                    match acceptor.reload_if_changed() {
                        None => {}
                        Some(Ok(())) => info!(cert = acceptor.describe(), "TLS files reloaded"),
                        Some(Err(e)) => warn!("TLS files changed but were not reloaded: {e}"),
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot watch TLS files for changes: {e}");
    }
}

fn modification_times(settings: &TlsConfig) -> Vec<Option<SystemTime>> {
    settings
        .files()
        .into_iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls configuration from the files the settings name.
fn build(settings: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS12, &rustls::version::TLS13],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if let Some(crl) = &settings.crl {
                verifier = verifier.with_crls(read_crls(crl)?);
            }
            if !settings.requires_client_cert() {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut certs = Vec::new();
    for pair in &settings.certs {
        let chain = read_certs(&pair.cert)?;
        let key = PrivateKeyDer::from_pem_file(&pair.key)
            .map_err(|e| format!("{}: no private key ({e})", pair.key.display()))?;
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("{} with {}: {e}", pair.cert.display(), pair.key.display()))?;
        let names = certified
            .cert
            .first()
            .map(|der| host_names(der.as_ref()))
            .unwrap_or_default();
        certs.push((names, Arc::new(certified)));
    }
    let config = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("{}: no CRL in the file", path.display()));
    }
    Ok(crls)
}

/// Picks the certificate by the name the client asked for (SNI).
#[derive(Debug)]
struct SniResolver {
    /// Each certificate with the host names it covers; the first is the default.
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            if let Some((_, key)) = self
                .certs
                .iter()
                .find(|(names, _)| names.iter().any(|pattern| name_matches(pattern, name)))
            {
                return Some(key.clone());
            }
        }
        self.certs.first().map(|(_, key)| key.clone())
    }
}

/// The DNS names a certificate covers: its subject alternative names, or its common name
/// when it has none.
fn host_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(common_name(cert.subject()).map(|cn| cn.to_ascii_lowercase()));
    }
    names
}

/// Whether the host name a client asked for matches a certificate name, with a leading
/// `*.` matching exactly one label (RFC 6125 section 6.4.3).
fn name_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Whether `username` is a name a verified certificate with this subject (RFC 4514, as
/// [`ClientInfo::identity`] carries it) gives its holder: the whole subject or its common
/// name. The certificate proved that name, so no password is asked for it.
///
/// [`ClientInfo::identity`]: petrel_state::broker::ClientInfo::identity
pub(crate) fn certificate_names(subject: &str, username: &str) -> bool {
    username == subject || common_name_in(subject).is_some_and(|cn| cn == username)
}

/// The common name in an RFC 4514 string written by [`rfc4514`], unescaped.
fn common_name_in(subject: &str) -> Option<String> {
    let mut attribute = String::new();
    let mut chars = subject.chars();
    loop {
        let c = chars.next();
        match c {
            Some('\\') => {
                attribute.push('\\');
                attribute.extend(chars.next());
            }
            Some(',' | '+') | None => {
                if let Some(value) = attribute.strip_prefix("CN=") {
                    return Some(unescape(value));
                }
                attribute.clear();
                c?;
            }
            Some(other) => attribute.push(other),
        }
    }
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                // The only hex pair `escape_value` writes.
                Some('0') => {
                    chars.next();
                    out.push('\0');
                }
                Some(escaped) => out.push(escaped),
                None => {}
            },
            other => out.push(other),
        }
    }
    out
}

fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(String::from)
}

/// A distinguished name as RFC 4514 writes it (the form OpenSSL's RFC 2253 flag and
/// mosquitto's `use_subject_as_username` give): most specific first, `CN=alice,O=Acme`.
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for rdn in name.iter().collect::<Vec<_>>().into_iter().rev() {
        if !out.is_empty() {
            out.push(',');
        }
        for (i, attribute) in rdn.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type();
            match x509_parser::objects::oid2abbrev(oid, registry) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            match attribute.as_str() {
                Ok(value) => escape_value(value, &mut out),
                // Not a string type: RFC 4514 writes the DER encoding in hex.
                Err(_) => {
                    out.push('#');
                    for byte in attribute.attr_value().data.iter() {
                        out.push_str(&format!("{byte:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// RFC 4514 section 2.4.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("broker.example", "BROKER.example"));
        assert!(name_matches("broker.example", "broker.example."));
        assert!(name_matches("*.example", "a.example"));
        assert!(!name_matches("*.example", "a.b.example"));
        assert!(!name_matches("*.example", "example"));
        assert!(!name_matches("*.example", ".example"));
        assert!(!name_matches("a.example", "b.example"));
    }

    #[test]
    fn subjects_are_written_most_specific_first_and_escaped() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "#sensor 7 ");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = X509Certificate::from_der(cert.der()).unwrap();
        // What `openssl x509 -noout -subject -nameopt RFC2253` prints for the same file.
        assert_eq!(
            rfc4514(parsed.subject()),
            "O=Acme\\, Inc.,CN=\\#sensor 7\\ "
        );
        assert_eq!(common_name(parsed.subject()).as_deref(), Some("#sensor 7 "));
    }

    #[test]
    fn the_common_name_is_read_back_from_the_subject() {
        let subject = "O=Acme\\, Inc.,CN=\\#sensor\\,7\\ ";
        assert_eq!(common_name_in(subject).as_deref(), Some("#sensor,7 "));
        assert!(certificate_names(subject, "#sensor,7 "));
        assert!(certificate_names(subject, subject));
        assert!(!certificate_names(subject, "sensor"));
        assert!(!certificate_names("O=Acme", "Acme"));
        assert!(certificate_names("CN=a+UID=b,O=x", "a"));
        assert_eq!(common_name_in("O=x,CN=\\00y"), Some(String::from("\0y")));
    }

    #[test]
    fn host_names_come_from_alternative_names_then_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let with_san = rcgen::CertificateParams::new(vec!["A.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(host_names(with_san.der()), vec!["a.example"]);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "b.example");
        let cn_only = params.self_signed(&key).unwrap();
        assert_eq!(host_names(cn_only.der()), vec!["b.example"]);
        assert!(host_names(b"not a certificate").is_empty());
    }
}
