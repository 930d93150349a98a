//! The two kinds of channel a login opens, each relayed to a session with
//! the instance's rep: a session channel (shell or command, with or without
//! a terminal) and a direct-tcpip channel (`ssh -L`).

use lattice_client::session::{read_frame, write_frame, SessionReader, SessionWriter};
use lattice_client::RepClient;
use lattice_models::ssh::{Frame, SessionRequest, Tty, TtySize, MAX_FRAME_PAYLOAD};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf};

use crate::target::Instance;

/// Most `env` requests one session keeps; more are ignored.
const MAX_ENV: usize = 64;

/// The exit status a client sees when the session ended without one (the
/// cell failed or could not be reached), as OpenSSH's own errors.
const NO_STATUS: u32 = 255;

fn size(columns: u32, rows: u32) -> TtySize {
    TtySize {
        columns: u16::try_from(columns).unwrap_or(u16::MAX),
        rows: u16::try_from(rows).unwrap_or(u16::MAX),
    }
}

/// Tells the client why its session ends, and ends it.
async fn fail(to_client: &ChannelWriteHalf<Msg>, message: &str, tty: bool) {
    let end = if tty { "\r\n" } else { "\n" };
    let line = format!("lattice: {message}{end}");
    let _ = to_client.extended_data(1, line.as_bytes()).await;
    let _ = to_client.exit_status(NO_STATUS).await;
    let _ = to_client.eof().await;
    let _ = to_client.close().await;
}

/// Waits for the client's shell or exec request (taking its terminal and
/// environment on the way), runs it through the rep, and relays it until
/// the process exits or the client goes away.
pub(crate) async fn session(channel: Channel<Msg>, instance: Instance, reps: RepClient) {
    let (mut from_client, to_client) = channel.split();
    let mut tty: Option<Tty> = None;
    let mut env = Vec::new();
    let command = loop {
        match from_client.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                tty = Some(Tty {
                    term,
                    size: size(col_width, row_height),
                })
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) if env.len() < MAX_ENV => env.push((variable_name, variable_value)),
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(tty) = tty.as_mut() {
                    tty.size = size(col_width, row_height);
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break None,
            Some(ChannelMsg::Exec { command, .. }) => {
                break Some(String::from_utf8_lossy(&command).into_owned())
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                let message = format!(
                    "the {name} subsystem is not supported (no sftp or scp); run a command instead"
                );
                fail(&to_client, &message, false).await;
                return;
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let has_tty = tty.is_some();
    let request = SessionRequest::Exec {
        instance_guid: instance.instance_guid.clone(),
        command,
        tty,
        env,
    };
    let (from_rep, to_rep) = match reps
        .open_session(
            &instance.rep_address,
            &instance.process_guid,
            instance.index,
            request,
        )
        .await
    {
        Ok(session) => session,
        Err(err) => {
            tracing::warn!(process_guid = %instance.process_guid, index = instance.index, error = %err, "cannot open a session with the instance's cell");
            fail(
                &to_client,
                "cannot reach the instance's cell; try again",
                has_tty,
            )
            .await;
            return;
        }
    };
    tracing::info!(process_guid = %instance.process_guid, index = instance.index, tty = has_tty, "ssh session started");
    tokio::select! {
        status = relay_output(from_rep, &to_client, has_tty) => {
            let _ = to_client.exit_status(status).await;
            let _ = to_client.eof().await;
            let _ = to_client.close().await;
        }
        () = relay_input(&mut from_client, to_rep) => {
            // The client went away: dropping the rep's connection ends the
            // process there.
        }
    }
    tracing::info!(process_guid = %instance.process_guid, index = instance.index, "ssh session ended");
}

/// Passes the rep's output on to the client until the process's exit
/// status, which it returns.
async fn relay_output(
    mut from_rep: SessionReader,
    to_client: &ChannelWriteHalf<Msg>,
    tty: bool,
) -> u32 {
    loop {
        let sent = match read_frame(&mut from_rep).await {
            Ok(Some(Frame::Data(bytes))) => to_client.data(bytes.as_slice()).await,
            Ok(Some(Frame::Stderr(bytes))) => to_client.extended_data(1, bytes.as_slice()).await,
            Ok(Some(Frame::Exit(status))) => return u32::try_from(status).unwrap_or(NO_STATUS),
            Ok(Some(Frame::Error(message))) => {
                let end = if tty { "\r\n" } else { "\n" };
                let line = format!("lattice: {message}{end}");
                let _ = to_client.extended_data(1, line.as_bytes()).await;
                return NO_STATUS;
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) | Err(_) => {
                let _ = to_client
                    .extended_data(
                        1,
                        &b"lattice: the connection to the instance's cell was lost\n"[..],
                    )
                    .await;
                return NO_STATUS;
            }
        };
        if sent.is_err() {
            // The client is gone; nothing more to tell it.
            return NO_STATUS;
        }
    }
}

/// Passes the client's input, end of input and terminal sizes on to the
/// rep until the client closes the channel.
async fn relay_input(from_client: &mut russh::ChannelReadHalf, mut to_rep: SessionWriter) {
    loop {
        let frame = match from_client.wait().await {
            Some(ChannelMsg::Data { data }) => {
                let mut failed = false;
                for piece in data.chunks(MAX_FRAME_PAYLOAD) {
                    if write_frame(&mut to_rep, &Frame::Data(piece.to_vec()))
                        .await
                        .is_err()
                    {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    return;
                }
                continue;
            }
            Some(ChannelMsg::Eof) => Frame::Eof,
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => Frame::Resize(size(col_width, row_height)),
            Some(ChannelMsg::Close) | None => return,
            Some(_) => continue,
        };
        if write_frame(&mut to_rep, &frame).await.is_err() {
            return;
        }
    }
}

/// Relays a direct-tcpip channel to a TCP connection the rep opens to
/// `port` of the instance, each direction's end passed on, until the
/// client closes the channel or the rep's side ends.
pub(crate) async fn forward(channel: Channel<Msg>, instance: Instance, port: u16, reps: RepClient) {
    let (mut from_client, to_client) = channel.split();
    let request = SessionRequest::Forward {
        instance_guid: instance.instance_guid.clone(),
        port,
    };
    let (mut from_rep, mut to_rep) = match reps
        .open_session(
            &instance.rep_address,
            &instance.process_guid,
            instance.index,
            request,
        )
        .await
    {
        Ok(session) => session,
        Err(err) => {
            tracing::warn!(process_guid = %instance.process_guid, index = instance.index, port, error = %err, "cannot open a forward through the instance's cell");
            let _ = to_client.close().await;
            return;
        }
    };
    let upstream = async {
        loop {
            let frame = match from_client.wait().await {
                Some(ChannelMsg::Data { data }) => Frame::Data(data.to_vec()),
                Some(ChannelMsg::Eof) => Frame::Eof,
                Some(ChannelMsg::Close) | None => return,
                Some(_) => continue,
            };
            if write_frame(&mut to_rep, &frame).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        loop {
            match read_frame(&mut from_rep).await {
                Ok(Some(Frame::Data(bytes))) => {
                    if to_client.data(bytes.as_slice()).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Frame::Eof)) => {
                    let _ = to_client.eof().await;
                }
                Ok(Some(Frame::Error(message))) => {
                    tracing::info!(process_guid = %instance.process_guid, index = instance.index, port, %message, "forward failed");
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
    let _ = to_client.close().await;
}
