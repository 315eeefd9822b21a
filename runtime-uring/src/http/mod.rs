//! The HTTP API: publish, management, `/health`, `/metrics` and the OpenAPI document.
//!
//! A small HTTP/1.1 server (tiny_http) on threads of its own, off the workers' io_uring
//! loops. It never touches a shard: every question and command goes to the workers'
//! inboxes as a job ([`fanout::ask_all`]), each shard answers for itself, and the answers
//! are merged here. It listens on loopback unless told otherwise, and with a token or a
//! password file every request except `/health` and the OpenAPI document must
//! authenticate.

mod api;
pub mod config;
mod fanout;
mod metrics;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine;
use petrel_auth::password::PasswordFile;
use tracing::{info, warn};

use crate::shared::Shared;
pub use config::HttpConfig;

/// Requests served at once: a request waiting for a busy worker does not hold up `/health`.
const HANDLER_THREADS: usize = 2;

/// The running HTTP server.
pub(crate) struct HttpServer {
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

/// Who may call the API.
struct Credentials {
    token: Option<String>,
    users: Option<PasswordFile>,
}

impl Credentials {
    fn load(config: &HttpConfig) -> io::Result<Credentials> {
        let users = match &config.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("http.password_file {}: {e}", path.display()),
                    )
                })?;
                let file = PasswordFile::parse(&text).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("http.password_file {}: {e}", path.display()),
                    )
                })?;
                Some(file)
            }
            None => None,
        };
        Ok(Credentials {
            token: config.token.clone(),
            users,
        })
    }

    fn required(&self) -> bool {
        self.token.is_some() || self.users.is_some()
    }

    /// Whether an `Authorization` header value lets the caller in.
    fn allows(&self, authorization: Option<&str>) -> bool {
        if !self.required() {
            return true;
        }
        let Some(value) = authorization else {
            return false;
        };
        if let (Some(token), Some(given)) = (&self.token, value.strip_prefix("Bearer ")) {
            return constant_time_eq(token.as_bytes(), given.trim().as_bytes());
        }
        if let (Some(users), Some(encoded)) = (&self.users, value.strip_prefix("Basic ")) {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            let Ok(text) = String::from_utf8(decoded) else {
                return false;
            };
            return match text.split_once(':') {
                Some((user, password)) => users.verify(user, password.as_bytes()),
                None => false,
            };
        }
        false
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl HttpServer {
    /// Binds and starts serving.
    pub(crate) fn start(shared: Arc<Shared>, config: &HttpConfig) -> io::Result<HttpServer> {
        let credentials = Arc::new(Credentials::load(config)?);
        let server = tiny_http::Server::http(config.bind)
            .map(Arc::new)
            .map_err(|e| io::Error::other(format!("http.bind {}: {e}", config.bind)))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("http: not a TCP address"))?;
        info!(%addr, auth = credentials.required(), "http api listening on {addr}");
        let mut threads = Vec::new();
        for n in 0..HANDLER_THREADS {
            let server = server.clone();
            let shared = shared.clone();
            let credentials = credentials.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("petrel-http-{n}"))
                    .spawn(move || serve(&server, &shared, &credentials))?,
            );
        }
        Ok(HttpServer {
            server,
            threads,
            addr,
        })
    }

    /// The address it listens on (with the port chosen for port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the requests in progress.
    pub(crate) fn stop(self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn serve(server: &tiny_http::Server, shared: &Shared, credentials: &Credentials) {
    while let Ok(mut request) = server.recv() {
        let authorization = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str().to_string());
        let response = api::handle(&mut request, shared, |public| {
            public || credentials.allows(authorization.as_deref())
        });
        if let Err(e) = request.respond(response) {
            warn!("http: writing a response failed: {e}");
        }
    }
}
