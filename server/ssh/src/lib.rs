//! The SSH proxy (`ltc ssh`, Diego's ssh-proxy): an SSH server in the brain
//! (and in `lattice up`) that lets a user into any running instance.
//!
//! A login names the instance as Lattice's did, `diego:PROCESS_GUID/INDEX`
//! (or `APP/INDEX`), with the API's `USER:PASSWORD` as password. The proxy
//! finds the instance's cell in the store and asks that cell's rep, with
//! the cluster secret, to run the session (`lattice_client::session`): the
//! rep runs the process through the engine's exec API, or connects to a
//! port of the container for `ssh -L`. No sshd is needed in the image.
//!
//! # Guarantees
//! - Without API credentials the proxy accepts any login, so the caller
//!   must bind it to loopback only (`lattice` does, and says so); with
//!   credentials, a wrong password is refused (after russh's constant
//!   rejection delay).
//! - A forward (`-L`) reaches only the instance's own ports: the host to
//!   connect to must be `localhost` (or a loopback address), never another
//!   machine, so the proxy is no way into the cluster's network.
//! - An LRP created with `--no-ssh`, an index that does not run, or a task
//!   is refused with a message naming why.
//!
//! # Layout
//! - [`SshProxy`]: the server; [`SshProxy::run`] serves a bound listener.
//! - [`host_key`]: the host key kept in the data dir, and its fingerprint.
//! - `target`: the password check and the lookup of an instance's cell.
//! - `channels`: relaying session and direct-tcpip channels to the rep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lattice_bbs::SharedStore;
use lattice_client::RepClient;
use lattice_models::ssh::SshTarget;
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Server as _, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod channels;
pub mod host_key;
mod target;

pub use host_key::{fingerprint, HostKeyError};
pub use lattice_models::ssh::DEFAULT_SSH_PORT;

use target::{Instance, Password};

/// How long open sessions may take to end after a shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// An SSH proxy, ready to serve a listener.
pub struct SshProxy {
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
}

/// What every connection of the proxy uses.
struct Shared {
    store: SharedStore,
    /// Reaches reps with the cluster secret they require.
    reps: RepClient,
    password: Password,
    /// Every relayed channel, so shutdown can wait for them.
    sessions: TaskTracker,
}

impl SshProxy {
    /// A proxy with `host_key` that finds instances in `store` and reaches
    /// their reps with `reps`. `credentials`: the API's; `None` accepts
    /// every login (bind the listener to loopback only then).
    pub fn new(
        store: SharedStore,
        host_key: PrivateKey,
        credentials: Option<&lattice_client::Credentials>,
        reps: RepClient,
    ) -> SshProxy {
        let password = Password::new(credentials);
        let methods: &[MethodKind] = if password.required() {
            &[MethodKind::Password]
        } else {
            &[MethodKind::None, MethodKind::Password]
        };
        let config = russh::server::Config {
            methods: MethodSet::from(methods),
            keys: vec![host_key],
            auth_rejection_time: Duration::from_secs(1),
            // OpenSSH probes with "none" first: no delay for that one.
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            nodelay: true,
            ..Default::default()
        };
        SshProxy {
            shared: Arc::new(Shared {
                store,
                reps,
                password,
                sessions: TaskTracker::new(),
            }),
            config: Arc::new(config),
        }
    }

    /// Serves SSH on `listener` until `shutdown`; then disconnects every
    /// client and waits (a few seconds at most) for their sessions to end,
    /// which ends their processes on the cells.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let mut acceptor = Acceptor(self.shared.clone());
        let address = listener
            .local_addr()
            .map_or_else(|err| err.to_string(), |a| a.to_string());
        let server = acceptor.run_on_socket(self.config.clone(), &listener);
        let handle = server.handle();
        tracing::info!(%address, "ssh proxy is up");
        tokio::select! {
            result = server => {
                if let Err(err) = result {
                    tracing::error!(error = %err, "the ssh proxy stopped accepting connections");
                }
            }
            () = shutdown.cancelled() => handle.shutdown("lattice is stopping".to_string()),
        }
        self.shared.sessions.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.shared.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "ssh sessions did not end in time");
        }
        tracing::info!("ssh proxy stopped");
    }
}

/// Makes a [`Connection`] per client.
struct Acceptor(Arc<Shared>);

impl russh::server::Server for Acceptor {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            shared: self.0.clone(),
            peer,
            login: None,
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!(%error, "an ssh connection ended with an error");
    }
}

/// One client's connection.
struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// After a successful login: the instance the user named, or why the
    /// name names none (told when a channel is opened).
    login: Option<Result<SshTarget, String>>,
}

impl Connection {
    fn log_in(&mut self, user: &str) -> Auth {
        tracing::info!(user, peer = ?self.peer, "ssh login");
        self.login = Some(SshTarget::parse_user(user).map_err(|err| err.to_string()));
        Auth::Accept
    }

    /// The instance the login names, or the message to refuse a channel
    /// with.
    async fn instance(
        shared: &Shared,
        login: Option<Result<SshTarget, String>>,
    ) -> Result<Instance, String> {
        match login {
            Some(Ok(target)) => target::resolve(&shared.store, &target).await,
            Some(Err(message)) => Err(message),
            None => Err("not logged in".to_string()),
        }
    }
}

/// A channel refused with `message`, which OpenSSH shows as
/// "open failed: administratively prohibited: MESSAGE".
async fn refuse(reply: ChannelOpenHandle, message: String) {
    reply
        .reject(ChannelOpenFailure::Other {
            code: 1,
            reason: message,
        })
        .await;
}

/// Hosts a forward may name: the instance itself.
fn is_instance_itself(host: &str) -> bool {
    matches!(
        host,
        "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0"
    )
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        if self.shared.password.required() {
            return Ok(Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&[MethodKind::Password][..])),
                partial_success: false,
            });
        }
        Ok(self.log_in(user))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.password.accepts(password) {
            return Ok(self.log_in(user));
        }
        tracing::info!(user, peer = ?self.peer, "ssh login refused: wrong password");
        Ok(Auth::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let shared = self.shared.clone();
        let login = self.login.clone();
        self.shared.sessions.spawn(async move {
            match Connection::instance(&shared, login).await {
                Ok(instance) => {
                    reply.accept().await;
                    channels::session(channel, instance, shared.reps.clone()).await;
                }
                Err(message) => refuse(reply, message).await,
            }
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let port = match u16::try_from(port_to_connect) {
            Ok(port) if port > 0 && is_instance_itself(host_to_connect) => port,
            _ => {
                let message = format!(
                    "cannot forward to {host_to_connect}:{port_to_connect}: only ports of the instance itself, as localhost:PORT"
                );
                refuse(reply, message).await;
                return Ok(());
            }
        };
        let shared = self.shared.clone();
        let login = self.login.clone();
        self.shared.sessions.spawn(async move {
            match Connection::instance(&shared, login).await {
                Ok(instance) => {
                    reply.accept().await;
                    channels::forward(channel, instance, port, shared.reps.clone()).await;
                }
                Err(message) => refuse(reply, message).await,
            }
        });
        Ok(())
    }

    // The session channel's task acts on these; here they are only
    // acknowledged, as clients wait for the answer.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_reach_the_instance_only() {
        for host in ["localhost", "127.0.0.1", "::1"] {
            assert!(is_instance_itself(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "172.17.0.1", ""] {
            assert!(!is_instance_itself(host), "{host}");
        }
    }
}
