//! Sessions (`ltc ssh`): the SSH proxy asks this rep to run a process in an
//! instance's container, or to open a TCP connection to one of its ports
//! (`ssh -L`), over `GET /v1/sessions/{process_guid}/{index}` upgraded to a
//! stream of frames (`lattice_models::ssh`).
//!
//! The process runs through the engine's exec API, so the image needs no
//! sshd and no shell for a plain command; the port is reached from this
//! machine, which runs the container, so the image needs no tool for it.
//!
//! # Guarantees
//! - A session reaches only an instance this cell runs, under the instance
//!   guid the proxy looked up: never a container of another cell, of a
//!   task, or of an older or newer run of the instance.
//! - When the proxy's connection ends before the process, the process is
//!   killed: a session leaves nothing running behind.
//! - Memory per session is bounded: frames are at most
//!   [`MAX_FRAME_PAYLOAD`] and each direction holds one at a time.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use lattice_client::session::{read_frame, write_frame, SESSION_PROTOCOL};
use lattice_garden::{OutputStream, ProcessSpec, Signal, TtySize};
use lattice_models::auction::LrpKey;
use lattice_models::ssh::{split_plain_command, Frame, SessionRequest, Tty, MAX_FRAME_PAYLOAD};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Rep;

/// The shell of an interactive session, and of a command that needs one.
const SHELL: &str = "/bin/sh";

/// `GET /v1/sessions/{process_guid}/{index}` with `Upgrade: lattice-session`.
pub(crate) async fn open(
    State(rep): State<Arc<Rep>>,
    Path((process_guid, index)): Path<(String, i64)>,
    mut request: Request,
) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    if upgrade != Some(SESSION_PROTOCOL) {
        return (
            StatusCode::BAD_REQUEST,
            format!("a session needs `Upgrade: {SESSION_PROTOCOL}`"),
        )
            .into_response();
    }
    let key = LrpKey::new(process_guid.clone(), index);
    if rep.instance_guid_of(&key).is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("instance {index} of {process_guid} does not run on this cell"),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(rep, key, TokioIo::new(upgraded)).await,
            Err(err) => {
                tracing::info!(process_guid = %key.process_guid, index = key.index, error = %err, "session connection was not upgraded")
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, SESSION_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Runs one session on its upgraded connection until it ends.
async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(rep: Arc<Rep>, key: LrpKey, stream: S) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let request = match read_frame(&mut reader).await {
        Ok(Some(Frame::Start(request))) => request,
        Ok(_) | Err(_) => {
            let _ = write_frame(
                &mut writer,
                &Frame::Error("a session must begin with a start frame".to_string()),
            )
            .await;
            return;
        }
    };
    let instance_guid = match &request {
        SessionRequest::Exec { instance_guid, .. }
        | SessionRequest::Forward { instance_guid, .. } => instance_guid.clone(),
    };
    if rep.instance_guid_of(&key).as_deref() != Some(instance_guid.as_str()) {
        let message = format!(
            "instance {} of {} was restarted or moved; try again",
            key.index, key.process_guid
        );
        let _ = write_frame(&mut writer, &Frame::Error(message)).await;
        return;
    }
    let handle = crate::lrps::container_handle(&instance_guid);
    let result = match request {
        SessionRequest::Exec {
            command, tty, env, ..
        } => exec(&rep, &handle, command, tty, env, reader, &mut writer).await,
        SessionRequest::Forward { port, .. } => {
            forward(&rep, &handle, port, reader, &mut writer).await
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(process_guid = %key.process_guid, index = key.index, "session ended")
        }
        Err(message) => {
            tracing::info!(process_guid = %key.process_guid, index = key.index, %message, "session failed");
            let _ = write_frame(&mut writer, &Frame::Error(message)).await;
        }
    }
    let _ = writer.shutdown().await;
}

/// What the process of a session runs: the shell, the plain command
/// itself (so an image without a shell runs it), or the shell with the
/// command.
fn process_spec(
    command: Option<String>,
    tty: Option<&Tty>,
    env: Vec<(String, String)>,
) -> ProcessSpec {
    let (path, args) = match command {
        None => (SHELL.to_string(), Vec::new()),
        Some(command) => match split_plain_command(&command) {
            Some(mut words) => {
                let path = words.remove(0);
                (path, words)
            }
            None => (SHELL.to_string(), vec!["-c".to_string(), command]),
        },
    };
    let mut env = env;
    if let Some(tty) = tty {
        env.retain(|(name, _)| name != "TERM");
        env.push(("TERM".to_string(), tty.term.clone()));
    }
    ProcessSpec {
        path,
        args,
        env,
        ..ProcessSpec::default()
    }
}

/// Runs the process: frames from the proxy feed its stdin and terminal
/// size, its output goes back as frames, then its exit status.
async fn exec<R, W>(
    rep: &Rep,
    handle: &str,
    command: Option<String>,
    tty: Option<Tty>,
    env: Vec<(String, String)>,
    reader: R,
    writer: &mut W,
) -> Result<(), String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let spec = process_spec(command, tty.as_ref(), env);
    let size = tty.as_ref().map(|tty| tty.size);
    let interactive = rep
        .executor
        .garden()
        .exec_interactive(handle, spec, size)
        .await
        .map_err(|err| format!("cannot start the process: {err}"))?;
    let mut process = interactive.process;
    let mut output = process.output();
    let (resizes, mut resized) = mpsc::channel::<TtySize>(4);
    let gone = CancellationToken::new();
    // Its own task: a process that does not read its stdin must not stop
    // its output from being forwarded (nor the other way round).
    let input = tokio::spawn(feed_input(reader, interactive.stdin, resizes, gone.clone()));
    let mut killed = false;
    loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                Some(chunk) => {
                    let sent = send_output(writer, chunk.stream, &chunk.bytes).await;
                    if sent.is_err() && !killed {
                        gone.cancel();
                    }
                }
                None => break,
            },
            Some(size) = resized.recv() => {
                if let Err(err) = process.resize(size).await {
                    tracing::debug!(error = %err, "cannot resize the session's terminal");
                }
            }
            _ = gone.cancelled(), if !killed => {
                killed = true;
                if let Err(err) = process.signal(Signal::Kill).await {
                    tracing::warn!(%handle, error = %err, "cannot stop the process of a session whose user left");
                }
            }
        }
    }
    input.abort();
    let status = process
        .wait()
        .await
        .map_err(|err| format!("cannot read the process's exit status: {err}"))?;
    // Statuses are 0-255 or 128+N; anything else is the engine's own oddity.
    let status = i32::try_from(status).unwrap_or(255);
    let _ = write_frame(writer, &Frame::Exit(status)).await;
    Ok(())
}

/// Sends process output as frames of at most [`MAX_FRAME_PAYLOAD`].
async fn send_output<W: AsyncWrite + Unpin>(
    writer: &mut W,
    stream: OutputStream,
    bytes: &[u8],
) -> std::io::Result<()> {
    for piece in bytes.chunks(MAX_FRAME_PAYLOAD) {
        let frame = match stream {
            OutputStream::Stdout => Frame::Data(piece.to_vec()),
            OutputStream::Stderr => Frame::Stderr(piece.to_vec()),
        };
        write_frame(writer, &frame).await?;
    }
    Ok(())
}

/// Writes the proxy's data to the process's stdin (closing it at the
/// proxy's end of input) and passes terminal sizes on, until the proxy's
/// connection ends: then `gone` fires.
async fn feed_input<R: AsyncRead + Unpin>(
    mut reader: R,
    mut stdin: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    resizes: mpsc::Sender<TtySize>,
    gone: CancellationToken,
) {
    let mut stdin_open = true;
    loop {
        match read_frame(&mut reader).await {
            Ok(Some(Frame::Data(bytes))) if stdin_open => {
                // A process that closed its stdin just loses the input.
                if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
                    stdin_open = false;
                }
            }
            Ok(Some(Frame::Eof)) if stdin_open => {
                stdin_open = false;
                let _ = stdin.shutdown().await;
            }
            Ok(Some(Frame::Resize(size))) => {
                let _ = resizes.send(size).await;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    gone.cancel();
}

/// Connects to `port` of the container from this machine and relays bytes
/// both ways, each direction's end passed on, until both ended.
async fn forward<R, W>(
    rep: &Rep,
    handle: &str,
    port: u16,
    mut reader: R,
    writer: &mut W,
) -> Result<(), String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;

    let info = rep
        .executor
        .info(handle)
        .await
        .map_err(|err| format!("cannot find the instance's container: {err}"))?;
    let connection = tokio::net::TcpStream::connect((info.container_ip.as_str(), port))
        .await
        .map_err(|err| format!("cannot connect to port {port} of the instance: {err}"))?;
    let (mut from_port, mut to_port) = connection.into_split();
    let upstream = tokio::spawn(async move {
        loop {
            match read_frame(&mut reader).await {
                Ok(Some(Frame::Data(bytes))) => {
                    if to_port.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Frame::Eof)) => {
                    let _ = to_port.shutdown().await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from_port.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if write_frame(writer, &Frame::Data(buffer[..n].to_vec()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = write_frame(writer, &Frame::Eof).await;
    // The proxy closes the connection once it has passed the end on.
    let _ = upstream.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_plainly_or_through_the_shell() {
        let spec = process_spec(Some("ls -l /".into()), None, vec![]);
        assert_eq!(
            (spec.path.as_str(), spec.args.clone()),
            ("ls", vec!["-l".into(), "/".into()])
        );
        let spec = process_spec(Some("echo hi; exit 3".into()), None, vec![]);
        assert_eq!(spec.path, SHELL);
        assert_eq!(
            spec.args,
            vec!["-c".to_string(), "echo hi; exit 3".to_string()]
        );
        let tty = Tty {
            term: "xterm".into(),
            size: TtySize {
                columns: 80,
                rows: 24,
            },
        };
        let spec = process_spec(None, Some(&tty), vec![("TERM".into(), "dumb".into())]);
        assert_eq!(spec.path, SHELL);
        assert_eq!(spec.env, vec![("TERM".to_string(), "xterm".to_string())]);
    }
}

#[cfg(test)]
mod session_tests {
    use std::collections::BTreeMap;

    use lattice_client::session::{read_frame, write_frame};
    use lattice_executor::fake::Script;
    use lattice_executor::ContainerRequest;
    use lattice_models::auction::Resource;
    use lattice_models::ssh::{Frame, SessionRequest};

    use super::*;
    use crate::fake::TestRep;
    use crate::WorkKey;

    /// A rep running instance 0 of `web` as `instance-1` in a fake garden.
    async fn rep_with_instance() -> TestRep {
        let cell = TestRep::small("cell-ssh").await;
        let rep = cell.rep();
        let key = LrpKey::new("web", 0);
        rep.reserve(&WorkKey::Lrp(key.clone()), Resource::for_container(1, 1))
            .expect("room for it");
        rep.set_instance_guid(&key, "instance-1");
        rep.executor
            .create_container(ContainerRequest {
                handle: crate::lrps::container_handle("instance-1"),
                rootfs: "docker:///busybox".into(),
                properties: BTreeMap::from([(
                    lattice_garden::OWNER_PROPERTY.into(),
                    "cell-ssh".into(),
                )]),
                ..ContainerRequest::default()
            })
            .await
            .expect("created");
        cell
    }

    fn exec(instance_guid: &str, command: &str) -> Frame {
        Frame::Start(SessionRequest::Exec {
            instance_guid: instance_guid.into(),
            command: Some(command.into()),
            tty: None,
            env: vec![],
        })
    }

    #[tokio::test]
    async fn a_command_sends_its_output_then_its_exit_status() {
        let cell = rep_with_instance().await;
        let (rep, garden) = (cell.rep().clone(), cell.garden());
        garden.script("/bin/sh", Script::exits(3).stdout("hi\n").stderr("oops"));
        let (mut proxy, cell) = tokio::io::duplex(1024);
        let session = tokio::spawn(serve(rep, LrpKey::new("web", 0), cell));
        write_frame(&mut proxy, &exec("instance-1", "echo hi; exit 3"))
            .await
            .expect("sent");
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(&mut proxy).await.expect("a frame") {
            frames.push(frame);
        }
        session.await.expect("the session ends");
        assert!(
            frames.contains(&Frame::Data(b"hi\n".to_vec())),
            "{frames:?}"
        );
        assert!(
            frames.contains(&Frame::Stderr(b"oops".to_vec())),
            "{frames:?}"
        );
        assert_eq!(frames.last(), Some(&Frame::Exit(3)));
        let started = garden.processes_of("/bin/sh");
        assert_eq!(started[0].spec.args, ["-c", "echo hi; exit 3"]);
    }

    #[tokio::test]
    async fn another_run_of_the_instance_is_refused() {
        let cell = rep_with_instance().await;
        let (rep, garden) = (cell.rep().clone(), cell.garden());
        let (mut proxy, cell) = tokio::io::duplex(1024);
        let session = tokio::spawn(serve(rep, LrpKey::new("web", 0), cell));
        write_frame(&mut proxy, &exec("instance-0", "true"))
            .await
            .expect("sent");
        let frame = read_frame(&mut proxy).await.expect("a frame");
        session.await.expect("the session ends");
        assert!(
            matches!(&frame, Some(Frame::Error(message)) if message.contains("restarted or moved")),
            "{frame:?}"
        );
        assert!(garden.processes().is_empty(), "nothing ran");
    }
}
