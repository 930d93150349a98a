//! `ltc ssh APP`: a shell or a command in an instance, and local port
//! forwarding into it, through the cluster's SSH proxy (port 2222 of the
//! receptor's host by default; `/v1/info` says which).
//!
//! The proxy's host key is checked against `known_hosts` in ltc's config
//! dir: the first key seen for a cluster is trusted (when it is the one
//! the receptor's `/v1/info` names) and recorded; a different one later is
//! refused.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use lattice_models::ssh::SshTarget;
use lattice_models::ActualLrpState;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::sync::mpsc;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  # A shell in instance 0 of web (exit it with `exit` or Ctrl-D)
  ltc ssh web
  # A command in instance 2, its exit status becomes ltc's
  ltc ssh web -i 2 -- ls -l /
  # Pipe data through a command, binary safe (no terminal)
  ltc ssh web -T -- sh -c 'cat > /tmp/data' < data.bin
  # Reach port 9090 of the instance (not routed) on localhost:9090
  ltc ssh web -N -L 9090:localhost:9090
  # The cluster's host key fingerprint, to compare with OpenSSH's
  ltc ssh --print-host-key
  # The same with OpenSSH (password: the API's USER:PASSWORD)
  ssh -p 2222 diego:web/0@HOST";

/// The file, in ltc's config dir, of the SSH proxies' host keys seen.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app (its process guid).
    #[arg(required_unless_present = "print_host_key")]
    pub app: Option<String>,
    /// The instance to log into.
    #[arg(short, long, default_value_t = 0)]
    pub index: i64,
    /// Forward a local port to a port of the instance, as ssh -L:
    /// [BIND:]PORT:HOST:HOSTPORT. HOST is the instance itself
    /// (`localhost`); BIND defaults to 127.0.0.1. Repeatable.
    #[arg(short = 'L', value_name = "[BIND:]PORT:HOST:HOSTPORT", value_parser = parse_forward)]
    pub forwards: Vec<Forward>,
    /// Run no command: only forward ports (with -L), until Ctrl-C.
    #[arg(short = 'N', requires = "forwards")]
    pub no_command: bool,
    /// No terminal: the command's stdin, stdout and stderr are piped,
    /// binary safe. The default with a command.
    #[arg(short = 'T', conflicts_with = "tty")]
    pub no_tty: bool,
    /// A terminal even for a command (the default for a shell when stdin
    /// is a terminal).
    #[arg(short = 't')]
    pub tty: bool,
    /// Print the SSH proxy's host key fingerprint and exit.
    #[arg(long, conflicts_with_all = ["forwards", "command"])]
    pub print_host_key: bool,
    /// The command to run instead of a shell (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// One `-L`: where to listen, and the port of the instance to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub bind: String,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
}

/// Parses `[BIND:]PORT:HOST:HOSTPORT`.
pub fn parse_forward(value: &str) -> Result<Forward, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let (bind, port, host, host_port) = match parts.as_slice() {
        [port, host, host_port] => ("127.0.0.1", *port, *host, *host_port),
        [bind, port, host, host_port] => (*bind, *port, *host, *host_port),
        _ => return Err(format!("{value:?} is not [BIND:]PORT:HOST:HOSTPORT")),
    };
    let number = |what: &str, text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{what} {text:?} in {value:?} is not a port (1-65535)"))
    };
    if host.is_empty() || bind.is_empty() {
        return Err(format!("{value:?} is not [BIND:]PORT:HOST:HOSTPORT"));
    }
    Ok(Forward {
        bind: bind.to_string(),
        port: number("PORT", port)?,
        host: host.to_string(),
        host_port: number("HOSTPORT", host_port)?,
    })
}

/// The remote command's exit status, when it is not 0: ltc exits with it
/// and prints nothing more (the command said what it had to).
#[derive(Debug, thiserror::Error)]
#[error("the remote command exited with status {0}")]
pub struct RemoteExit(pub u8);

/// Joins command words as OpenSSH does for its command line, quoting each
/// that a shell would split or expand, so `-- ls 'a b'` means what it says.
fn command_line(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Host and port of the SSH proxy: the receptor's host and the port
/// `/v1/info` names.
fn proxy_host(target_url: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(target_url)
        .with_context(|| format!("the target {target_url:?} is not a URL"))?;
    let host = url
        .host_str()
        .with_context(|| format!("the target {target_url:?} has no host"))?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

/// Why a host key was not accepted.
#[derive(Debug, thiserror::Error)]
enum HostKeyError {
    #[error(
        "the SSH host key of {host}:{port} changed (now {fingerprint}); it does not match line {line} of {path}. \
         If the cluster was reinstalled, remove that line; otherwise someone may be intercepting the connection"
    )]
    Changed {
        host: String,
        port: u16,
        fingerprint: String,
        line: usize,
        path: PathBuf,
    },
    #[error(
        "the SSH proxy at {host}:{port} presents host key {presented}, but the cluster's API says {announced}; refusing to connect"
    )]
    NotTheClusters {
        host: String,
        port: u16,
        presented: String,
        announced: String,
    },
    #[error("cannot read or record {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

/// Checks the proxy's key against the known hosts, recording it on first
/// use when it is the one the API announced.
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    announced: Option<String>,
    /// A line for the user when a key was recorded.
    learned: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = HostKeyError;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, HostKeyError> {
        // The proxy presents a plain key (see lattice_ssh::host_key).
        let PublicKeyOrCertificate::PublicKey { key, .. } = presented else {
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) => {
                if let Some(announced) = &self.announced {
                    if *announced != fingerprint {
                        return Err(HostKeyError::NotTheClusters {
                            host: self.host.clone(),
                            port: self.port,
                            presented: fingerprint,
                            announced: announced.clone(),
                        });
                    }
                }
                if let Some(dir) = self.known_hosts.parent() {
                    std::fs::create_dir_all(dir).map_err(|err| HostKeyError::File {
                        path: self.known_hosts.clone(),
                        reason: err.to_string(),
                    })?;
                }
                russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    key,
                    &self.known_hosts,
                )
                .map_err(|err| HostKeyError::File {
                    path: self.known_hosts.clone(),
                    reason: err.to_string(),
                })?;
                *self.learned.lock().expect("no panic holds it") = Some(format!(
                    "Trusting the SSH host key {fingerprint} of {}:{} (recorded in {})",
                    self.host,
                    self.port,
                    self.known_hosts.display()
                ));
                Ok(true)
            }
            Err(russh::keys::Error::KeyChanged { line }) => Err(HostKeyError::Changed {
                host: self.host.clone(),
                port: self.port,
                fingerprint,
                line,
                path: self.known_hosts.clone(),
            }),
            Err(err) => Err(HostKeyError::File {
                path: self.known_hosts.clone(),
                reason: err.to_string(),
            }),
        }
    }
}

/// The known-hosts file beside ltc's config file.
fn known_hosts_path(ctx: &Context) -> PathBuf {
    ctx.config_file
        .path()
        .parent()
        .unwrap_or(Path::new("."))
        .join(KNOWN_HOSTS_FILE)
}

/// Checks, through the API, that the instance runs, so that the user gets
/// a precise message rather than a refused channel.
async fn check_instance(ctx: &Context, app: &str, index: i64) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let desired = match client.desired_lrp(app).await {
        Ok(desired) => desired,
        Err(err) if err.is_not_found() => {
            bail!("no app {app:?}; see `ltc list` (tasks have no ssh)")
        }
        Err(err) => return Err(err).with_context(|| format!("cannot look up {app}")),
    };
    if desired.disable_ssh {
        bail!("ssh is turned off for {app} (it was created with --no-ssh)");
    }
    if index < 0 || index >= desired.instances {
        bail!(
            "{app} has no instance {index}: it has {} (indexes 0 to {}); pick one with -i",
            desired.instances,
            desired.instances - 1
        );
    }
    let actual = client.actual_lrp(app, index).await.with_context(|| {
        format!("instance {index} of {app} is not running yet; see `ltc status {app}`")
    })?;
    if actual.state != ActualLrpState::Running {
        bail!(
            "instance {index} of {app} is {}, not RUNNING; see `ltc status {app}`",
            actual.state.as_str()
        );
    }
    Ok(())
}

/// Connects and logs in to the proxy as the instance's user.
async fn connect(
    ctx: &Context,
    host: &str,
    port: u16,
    announced: Option<String>,
    user: &str,
) -> anyhow::Result<Handle<Verifier>> {
    let learned = Arc::new(std::sync::Mutex::new(None));
    let verifier = Verifier {
        host: host.to_string(),
        port,
        known_hosts: known_hosts_path(ctx),
        announced,
        learned: learned.clone(),
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        ..client::Config::default()
    });
    let mut handle = client::connect(config, (host, port), verifier)
        .await
        .with_context(|| format!("cannot connect to the cluster's SSH proxy at {host}:{port}"))?;
    if let Some(line) = learned.lock().expect("no panic holds it").take() {
        ctx.stderr.line(&line);
    }
    let password = match &ctx.target.credentials {
        Some(c) => format!("{}:{}", c.username, c.password),
        None => String::new(),
    };
    let auth = handle
        .authenticate_password(user, password)
        .await
        .context("cannot log in to the SSH proxy")?;
    if !auth.success() {
        bail!("the SSH proxy refused the login; check the credentials of `ltc target`");
    }
    Ok(handle)
}

/// Listens on each forward's local port and relays every connection to
/// the instance through its own direct-tcpip channel.
async fn start_forwards(
    ctx: &Context,
    handle: &Arc<Handle<Verifier>>,
    forwards: &[Forward],
) -> anyhow::Result<()> {
    for forward in forwards {
        let listener = tokio::net::TcpListener::bind((forward.bind.as_str(), forward.port))
            .await
            .with_context(|| {
                format!("cannot listen on {}:{} for -L", forward.bind, forward.port)
            })?;
        ctx.stderr.line(&format!(
            "Forwarding {}:{} to {}:{} in the instance",
            forward.bind, forward.port, forward.host, forward.host_port
        ));
        let handle = handle.clone();
        let forward = forward.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, peer)) = listener.accept().await else {
                    continue;
                };
                let handle = handle.clone();
                let forward = forward.clone();
                tokio::spawn(async move {
                    let channel = handle
                        .channel_open_direct_tcpip(
                            forward.host.clone(),
                            u32::from(forward.host_port),
                            peer.ip().to_string(),
                            u32::from(peer.port()),
                        )
                        .await;
                    if let Ok(channel) = channel {
                        let mut stream = channel.into_stream();
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
                    }
                });
            }
        });
    }
    Ok(())
}

/// Reads stdin on a thread of its own (a blocking read must not keep the
/// runtime from ending when the session does) and hands the bytes over;
/// the channel closes at end of input.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

/// Raw mode while it lives: keys go to the remote terminal as typed.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing more to do if the terminal is gone.
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// The local terminal's size, 80x24 when it has none.
fn terminal_size() -> (u32, u32) {
    crossterm::terminal::size()
        .map(|(columns, rows)| (u32::from(columns), u32::from(rows)))
        .unwrap_or((80, 24))
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;

    let info = ctx
        .client()?
        .info()
        .await
        .context("cannot ask the cluster about its SSH proxy")?;
    let Some(port) = info.ssh_port else {
        bail!("this cluster runs no SSH proxy (its server was started with --no-ssh)");
    };
    if args.print_host_key {
        let fingerprint = info
            .ssh_host_key_fingerprint
            .context("the cluster did not say its SSH host key")?;
        writeln!(out, "{fingerprint}")?;
        return Ok(());
    }
    // clap requires APP unless --print-host-key.
    let app = args.app.as_deref().context("name the app to log into")?;
    let target = SshTarget {
        process_guid: app.to_string(),
        index: args.index,
    };
    check_instance(ctx, app, args.index).await?;
    let host = proxy_host(&ctx.target.url)?;
    let handle = Arc::new(
        connect(
            ctx,
            &host,
            port,
            info.ssh_host_key_fingerprint,
            &target.user(),
        )
        .await?,
    );
    start_forwards(ctx, &handle, &args.forwards).await?;
    if args.no_command {
        crate::output::ctrl_c().await;
        return Ok(());
    }

    let command = (!args.command.is_empty()).then(|| command_line(&args.command));
    let tty = args.tty || (command.is_none() && !args.no_tty && std::io::stdin().is_terminal());
    let mut channel = handle
        .channel_open_session()
        .await
        .context("the SSH proxy refused the session")?;
    let _raw = if tty {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".to_string());
        let (columns, rows) = terminal_size();
        channel
            .request_pty(true, &term, columns, rows, 0, 0, &[])
            .await
            .context("cannot ask for a terminal")?;
        Some(RawMode::enable()?)
    } else {
        None
    };
    match &command {
        Some(command) => channel.exec(true, command.as_bytes()).await,
        None => channel.request_shell(true).await,
    }
    .context("cannot start the session")?;

    let mut stdin = read_stdin();
    let mut stdin_open = true;
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("cannot follow the terminal's size")?;
    let mut status = None;
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            input = stdin.recv(), if stdin_open => match input {
                Some(bytes) => channel.data(bytes.as_slice()).await.context("cannot send input")?,
                None => {
                    stdin_open = false;
                    channel.eof().await.context("cannot send the end of input")?;
                }
            },
            Some(()) = resized.recv(), if tty => {
                let (columns, rows) = terminal_size();
                let _ = channel.window_change(columns, rows, 0, 0).await;
            }
            message = channel.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::ExitSignal { .. }) => status = Some(255),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    drop(_raw);
    match status {
        Some(0) => Ok(()),
        Some(code) => Err(RemoteExit(u8::try_from(code).unwrap_or(255)).into()),
        None => bail!("the session ended without an exit status (the connection was lost)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_as_ssh_takes_them() {
        assert_eq!(
            parse_forward("9090:localhost:8080"),
            Ok(Forward {
                bind: "127.0.0.1".into(),
                port: 9090,
                host: "localhost".into(),
                host_port: 8080
            })
        );
        assert_eq!(
            parse_forward("0.0.0.0:1:localhost:2").map(|f| f.bind),
            Ok("0.0.0.0".to_string())
        );
        for bad in [
            "",
            "9090",
            "9090:localhost",
            "x:localhost:80",
            "0:localhost:80",
            "1:localhost:70000",
            "1::80",
        ] {
            assert!(parse_forward(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_words_are_quoted_for_the_remote_shell() {
        let words = |w: &[&str]| command_line(&w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(words(&["ls", "-l", "/tmp"]), "ls -l /tmp");
        assert_eq!(words(&["echo", "a b"]), "echo 'a b'");
        assert_eq!(words(&["echo", "it's"]), r"echo 'it'\''s'");
        assert_eq!(words(&["sh", "-c", "exit 3"]), "sh -c 'exit 3'");
        assert_eq!(words(&["echo", ""]), "echo ''");
    }

    #[test]
    fn the_proxy_is_on_the_receptors_host() {
        assert_eq!(proxy_host("http://10.0.0.5:8888").unwrap(), "10.0.0.5");
        assert_eq!(proxy_host("http://[::1]:8888").unwrap(), "::1");
        assert!(proxy_host("not a url").is_err());
    }
}
