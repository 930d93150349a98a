//! The SSH proxy (`ltc ssh`) as `lattice up` and `lattice brain` run it
//! (see `lattice_ssh`): its listener, bound before the server says it is
//! up, and its host key, kept in the data dir.
//!
//! # Guarantees
//! A server without API credentials binds the proxy to loopback only,
//! whatever `--ssh-listen` says, and says so at start: the proxy then
//! accepts any login, so it must never be reachable from another machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use lattice_bbs::SharedStore;
use lattice_receptor::{Credentials, SshInfo};
use russh::keys::PrivateKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where the SSH proxy listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshListen {
    pub address: SocketAddr,
    /// Whether the address was asked for (`--ssh-listen`): then a port in
    /// use is an error. The default port in use only turns the proxy off,
    /// with a warning, so that a second cluster on one machine still starts.
    pub required: bool,
}

/// The proxy's listener and host key, ready to serve.
pub struct PreparedSsh {
    listener: TcpListener,
    host_key: PrivateKey,
}

/// `listen`, or its port on loopback when the API has no credentials.
pub fn effective_listen(listen: SocketAddr, has_credentials: bool) -> SocketAddr {
    if has_credentials || listen.ip().is_loopback() {
        return listen;
    }
    let loopback: IpAddr = match listen.ip() {
        IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(loopback, listen.port())
}

impl PreparedSsh {
    /// Loads (or makes) the host key in `data_dir` and binds the listener;
    /// `None` when the default port is taken (see [`SshListen::required`]).
    ///
    /// # Errors
    /// An unreadable or invalid host key file, a required port in use.
    pub async fn prepare(
        data_dir: &Path,
        listen: SshListen,
        credentials: Option<&Credentials>,
    ) -> anyhow::Result<Option<PreparedSsh>> {
        let address = effective_listen(listen.address, credentials.is_some());
        let listener = match TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(err) if !listen.required && err.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::warn!(%address, "the ssh proxy is off: its default port is in use (pass --ssh-listen HOST:PORT, or --no-ssh)");
                return Ok(None);
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot listen for ssh on {address} (try --ssh-listen, or --no-ssh)")
                })
            }
        };
        if address != listen.address {
            tracing::warn!(
                requested = %listen.address,
                listening = %address,
                "the API has no credentials (--username/--password), so the ssh proxy accepts any login and listens on loopback only"
            );
        } else if credentials.is_none() {
            tracing::info!(
                listening = %address,
                "the API has no credentials, so the ssh proxy accepts any login; it listens on loopback only"
            );
        }
        let host_key = lattice_ssh::host_key::load_or_create(data_dir)?;
        Ok(Some(PreparedSsh { listener, host_key }))
    }

    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What `/v1/info` tells clients about the proxy.
    pub fn info(&self) -> std::io::Result<SshInfo> {
        Ok(SshInfo {
            port: self.address()?.port(),
            host_key_fingerprint: lattice_ssh::fingerprint(&self.host_key),
        })
    }

    /// Serves the proxy on `tracker` until `shutdown`. It finds instances
    /// in `store` and reaches their reps with `rep_secret`.
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        store: SharedStore,
        credentials: Option<&Credentials>,
        rep_secret: String,
        shutdown: CancellationToken,
    ) {
        let credentials = credentials
            .map(|c| lattice_client::Credentials::new(c.username.clone(), c.password.clone()));
        let proxy = lattice_ssh::SshProxy::new(
            store,
            self.host_key,
            credentials.as_ref(),
            lattice_client::RepClient::with_secret(rep_secret),
        );
        tracker.spawn(proxy.run(self.listener, shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_credentials_the_proxy_stays_on_loopback() {
        let any: SocketAddr = "0.0.0.0:2222".parse().expect("valid");
        assert_eq!(effective_listen(any, true), any);
        assert_eq!(
            effective_listen(any, false),
            "127.0.0.1:2222".parse::<SocketAddr>().expect("valid")
        );
        let any6: SocketAddr = "[::]:2222".parse().expect("valid");
        assert_eq!(
            effective_listen(any6, false),
            "[::1]:2222".parse::<SocketAddr>().expect("valid")
        );
        let local: SocketAddr = "127.0.0.1:0".parse().expect("valid");
        assert_eq!(effective_listen(local, false), local);
    }
}
