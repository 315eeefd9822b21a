//! The password file and the ACL file: loaded at start, reloaded on SIGHUP
//! ([`RunningServer::reload_auth`](crate::RunningServer::reload_auth)) or when a file
//! changes, and consulted by the runtime's hooks. Parsing and decisions are
//! `petrel-auth`'s; this module reads the files and swaps what the workers see.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use petrel_auth::acl::{Acl, Subject};
use petrel_auth::password::PasswordFile;
use petrel_state::broker::ClientInfo;
use petrel_state::server::ConnectRequest;
use serde::Deserialize;
use tracing::{info, warn};

/// Where the broker finds its users and its access rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A password file (`petrel passwd` or mosquitto_passwd writes it). When set, a client
    /// that gives a user name must give that user's password.
    pub password_file: Option<PathBuf>,
    /// An ACL file; when set, what it does not allow is denied.
    pub acl_file: Option<PathBuf>,
}

/// What the files said when they were last read.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) passwords: Option<PasswordFile>,
    pub(crate) acl: Option<Acl>,
}

/// Refusals counted for `$SYS`.
#[derive(Debug, Default)]
pub(crate) struct AuthStats {
    pub(crate) bad_credentials: AtomicU64,
    pub(crate) publish_denied: AtomicU64,
    pub(crate) subscribe_denied: AtomicU64,
}

/// The loaded files, shared by every worker.
#[derive(Debug)]
pub(crate) struct Access {
    config: AuthConfig,
    current: RwLock<Arc<Loaded>>,
    /// Bumped on every successful reload; a worker re-reads `current` when it moves.
    generation: AtomicU64,
    modified: RwLock<[Option<SystemTime>; 2]>,
    pub(crate) stats: AuthStats,
    stop: AtomicBool,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn modified(path: Option<&PathBuf>) -> Option<SystemTime> {
    path.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

impl Access {
    /// Reads the configured files; the error names the file and the line.
    pub(crate) fn load(config: AuthConfig) -> Result<Access, String> {
        let access = Access {
            current: RwLock::new(Arc::new(Loaded::default())),
            generation: AtomicU64::new(0),
            modified: RwLock::new([None, None]),
            stats: AuthStats::default(),
            stop: AtomicBool::new(false),
            config,
        };
        access.reload()?;
        Ok(access)
    }

    /// Whether there is anything to watch.
    pub(crate) fn configured(&self) -> bool {
        self.config.password_file.is_some() || self.config.acl_file.is_some()
    }

    /// Reads both files again; on any error the rules in force stay as they were.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let stamps = [
            modified(self.config.password_file.as_ref()),
            modified(self.config.acl_file.as_ref()),
        ];
        let passwords = match &self.config.password_file {
            Some(path) => Some(
                PasswordFile::parse(&read(path)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => None,
        };
        let acl = match &self.config.acl_file {
            Some(path) => {
                Some(Acl::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        if let Some(p) = &passwords {
            info!(users = p.len(), "password file loaded");
        }
        if let Some(a) = &acl {
            info!(rules = a.len(), "ACL file loaded");
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Loaded { passwords, acl });
        *self.modified.write().unwrap_or_else(|e| e.into_inner()) = stamps;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Reloads when a file's modification time moved since the last load.
    fn reload_if_changed(&self) {
        let stamps = [
            modified(self.config.password_file.as_ref()),
            modified(self.config.acl_file.as_ref()),
        ];
        let last = *self.modified.read().unwrap_or_else(|e| e.into_inner());
        if stamps != last {
            if let Err(e) = self.reload() {
                warn!("reload failed, the previous rules stay in force: {e}");
                // Do not retry the same broken file every second.
                *self.modified.write().unwrap_or_else(|e| e.into_inner()) = stamps;
            }
        }
    }

    /// Polls the files' modification times once a second until [`Access::stop`].
    pub(crate) fn watch(self: Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(String::from("petrel-auth-watch"))
            .spawn(move || {
                while !self.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    self.reload_if_changed();
                }
            })
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `$SYS` topics of the refusals.
    pub(crate) fn sys_entries(&self) -> [(&'static str, String); 3] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        [
            (
                "$SYS/broker/auth/bad credentials",
                load(&self.stats.bad_credentials),
            ),
            (
                "$SYS/broker/acl/publish denied",
                load(&self.stats.publish_denied),
            ),
            (
                "$SYS/broker/acl/subscribe denied",
                load(&self.stats.subscribe_denied),
            ),
        ]
    }
}

/// One worker's view of the files, refreshed when a reload happened.
pub(crate) struct AccessView {
    access: Arc<Access>,
    seen: u64,
    loaded: Arc<Loaded>,
}

impl AccessView {
    pub(crate) fn new(access: Arc<Access>) -> Self {
        let seen = access.generation();
        let loaded = access.snapshot();
        AccessView {
            access,
            seen,
            loaded,
        }
    }

    /// The files in force now.
    pub(crate) fn current(&mut self) -> &Loaded {
        let generation = self.access.generation();
        if generation != self.seen {
            self.seen = generation;
            self.loaded = self.access.snapshot();
        }
        &self.loaded
    }

    pub(crate) fn stats(&self) -> &AuthStats {
        &self.access.stats
    }

    /// Whether a CONNECT's credentials pass the password file: yes without a file, without
    /// a user name, or when the verified client certificate names the user; otherwise the
    /// password must verify, and a refusal is counted. An unknown user and a wrong password
    /// get the same answer, in the same time.
    pub(crate) fn credentials_pass(
        &mut self,
        client: &ClientInfo<'_>,
        request: &ConnectRequest,
    ) -> bool {
        let Some(username) = &request.username else {
            return true;
        };
        // A user name the verified client certificate gives needs no password.
        if client
            .identity
            .is_some_and(|subject| crate::transport::certs::certificate_names(subject, username))
        {
            return true;
        }
        let Some(passwords) = &self.current().passwords else {
            return true;
        };
        let password = request.password.as_deref().unwrap_or_default();
        if passwords.verify(username, password) {
            return true;
        }
        self.stats().bad_credentials.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// The ACL's view of a hook's client.
pub(crate) fn subject<'a>(client: &ClientInfo<'a>) -> Subject<'a> {
    Subject {
        client_id: client.client_id,
        username: client.username,
        address: client.remote.and_then(remote_ip),
    }
}

fn remote_ip(remote: &str) -> Option<IpAddr> {
    remote
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| remote.parse::<IpAddr>())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("petrel-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_broken_reload_keeps_the_rules_in_force() {
        let dir = temp_dir("reload");
        let acl = dir.join("acl");
        std::fs::write(&acl, "readwrite a/#\n").unwrap();
        let access = Access::load(AuthConfig {
            password_file: None,
            acl_file: Some(acl.clone()),
        })
        .unwrap();
        let mut view = AccessView::new(Arc::new(access));
        let who = Subject {
            client_id: "c",
            username: None,
            address: None,
        };
        assert!(view
            .current()
            .acl
            .as_ref()
            .unwrap()
            .can_publish(&who, "a/x"));
        std::fs::write(&acl, "readwrite b/#\nnonsense\n").unwrap();
        let err = view.access.reload().unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(view
            .current()
            .acl
            .as_ref()
            .unwrap()
            .can_publish(&who, "a/x"));
        std::fs::write(&acl, "readwrite b/#\n").unwrap();
        view.access.reload().unwrap();
        let acl = view.current().acl.as_ref().unwrap();
        assert!(!acl.can_publish(&who, "a/x"));
        assert!(acl.can_publish(&who, "b/x"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn remote_addresses() {
        assert_eq!(remote_ip("10.0.0.1:1883"), Some([10, 0, 0, 1].into()));
        assert_eq!(
            remote_ip("[::1]:1883"),
            Some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        );
        assert_eq!(remote_ip("unix"), None);
    }
}
