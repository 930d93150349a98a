//! Sessions with a rep (`ltc ssh`): the SSH proxy asks the rep of the
//! instance's cell to run a process or open a port in the container, over
//! one HTTP connection upgraded to a byte stream of
//! [`Frame`](lattice_models::ssh::Frame)s (see `lattice_models::ssh`).

use std::io;

use lattice_models::ssh::{Frame, SessionRequest, FRAME_HEADER_LEN};
use reqwest::header::{CONNECTION, UPGRADE};
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::rep::{RepClient, RepClientError};

/// The protocol name of the upgrade (`Upgrade: lattice-session`).
pub const SESSION_PROTOCOL: &str = "lattice-session";

/// The rep's path of the session with instance `index` of `process_guid`.
pub fn session_path(process_guid: &str, index: i64) -> String {
    format!("/v1/sessions/{process_guid}/{index}")
}

/// Reads the next frame; `None` when the stream ended between frames.
///
/// # Errors
/// An I/O error, a stream that ends inside a frame, or a frame that cannot
/// be decoded (`InvalidData`; a payload over the limit is refused before
/// it is read).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let (tag, length) = Frame::decode_header(header)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Frame::decode(tag, payload)
        .map(Some)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> io::Result<()> {
    writer.write_all(&frame.encode()).await?;
    writer.flush().await
}

/// The two directions of an open session.
pub type SessionReader = ReadHalf<reqwest::Upgraded>;
pub type SessionWriter = WriteHalf<reqwest::Upgraded>;

impl RepClient {
    /// Opens a session with the rep at `address` for instance `index` of
    /// `process_guid` and sends `request` as its first frame.
    ///
    /// # Errors
    /// [`RepClientError::Session`] with the rep's own words when it refuses
    /// (the instance does not run there, a wrong secret), or when it cannot
    /// be reached.
    pub async fn open_session(
        &self,
        address: &str,
        process_guid: &str,
        index: i64,
        request: SessionRequest,
    ) -> Result<(SessionReader, SessionWriter), RepClientError> {
        let failed = |message: String| RepClientError::Session {
            address: address.to_string(),
            message,
        };
        let mut url = reqwest::Url::parse(address)
            .map_err(|err| failed(format!("invalid rep address: {err}")))?;
        url.path_segments_mut()
            .map_err(|()| failed("invalid rep address".to_string()))?
            .pop_if_empty()
            .extend(["v1", "sessions", process_guid, &index.to_string()]);
        let response = self
            .authorize(self.session_http().get(url))
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, SESSION_PROTOCOL)
            .send()
            .await
            .map_err(|err| failed(err.to_string()))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("{status}: {}", body.trim())));
        }
        let upgraded = response
            .upgrade()
            .await
            .map_err(|err| failed(err.to_string()))?;
        let (reader, mut writer) = tokio::io::split(upgraded);
        write_frame(&mut writer, &Frame::Start(request))
            .await
            .map_err(|err| failed(err.to_string()))?;
        Ok((reader, writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_cross_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frames = vec![Frame::Data(vec![7; 1000]), Frame::Eof, Frame::Exit(3)];
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            for frame in &sent {
                write_frame(&mut a, frame).await.expect("written");
            }
        });
        let mut received = Vec::new();
        while let Some(frame) = read_frame(&mut b).await.expect("a frame") {
            received.push(frame);
        }
        writer.await.expect("the writer ends");
        assert_eq!(received, frames);
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        let bytes = Frame::Data(vec![1, 2, 3]).encode();
        let mut cut = &bytes[..bytes.len() - 1];
        assert!(read_frame(&mut cut).await.is_err());
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.expect("clean end").is_none());
    }
}
