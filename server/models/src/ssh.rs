//! `ltc ssh`: who a login names, and the frames the SSH proxy and a cell's
//! rep exchange for one session.
//!
//! The proxy (brain) authenticates the user and finds the instance's cell;
//! the rep (on the machine that runs the container) runs the session. They
//! talk over one HTTP connection upgraded to a byte stream that carries
//! [`Frame`]s: the proxy's first frame is a [`Frame::Start`], then stdin,
//! end of input and terminal sizes go one way, output, the exit status or an
//! error the other. Pure encoding and decoding here; the I/O lives in the
//! client and the rep.

use serde::{Deserialize, Serialize};

/// The port the SSH proxy listens on by default, as Diego's did.
pub const DEFAULT_SSH_PORT: u16 = 2222;

/// Largest payload of one frame. Output is sent in chunks of at most this;
/// a peer announcing more is broken or hostile and is refused before any
/// memory is taken for it.
pub const MAX_FRAME_PAYLOAD: usize = 256 * 1024;

/// Length of a frame's header: a tag byte and a big-endian u32 length.
pub const FRAME_HEADER_LEN: usize = 5;

/// The instance a login names: `diego:PROCESS_GUID/INDEX` as Diego's proxy
/// took it, or `APP/INDEX` (`ltc`'s app name is the process guid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub process_guid: String,
    pub index: i64,
}

/// Why a login user name names no instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user {user:?} names no instance: expected diego:APP/INDEX or APP/INDEX (e.g. diego:web/0)"
)]
pub struct SshUserError {
    pub user: String,
}

impl SshTarget {
    /// Parses a login user name (see [`SshTarget`]); the index defaults to
    /// 0 when the name has none (`diego:web`).
    ///
    /// # Errors
    /// [`SshUserError`] when the name is empty, has an empty app, or an
    /// index that is not a non-negative number.
    pub fn parse_user(user: &str) -> Result<SshTarget, SshUserError> {
        let error = || SshUserError {
            user: user.to_string(),
        };
        let rest = user.strip_prefix("diego:").unwrap_or(user);
        let (guid, index) = match rest.rsplit_once('/') {
            Some((guid, index)) => (guid, index.parse::<i64>().map_err(|_| error())?),
            None => (rest, 0),
        };
        if guid.is_empty() || index < 0 {
            return Err(error());
        }
        crate::validation::validate_guid("user", guid).map_err(|_| error())?;
        Ok(SshTarget {
            process_guid: guid.to_string(),
            index,
        })
    }

    /// The user name `ltc ssh` logs in as.
    pub fn user(&self) -> String {
        format!("diego:{}/{}", self.process_guid, self.index)
    }
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub columns: u16,
    pub rows: u16,
}

/// A pseudo-terminal for the session's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tty {
    /// `TERM` for the process, e.g. `xterm-256color`.
    pub term: String,
    pub size: TtySize,
}

/// What a session does, sent by the proxy in [`Frame::Start`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionRequest {
    /// Runs a command (or the shell) in the instance's container.
    Exec {
        /// Which run of the instance: a session never reaches a newer or an
        /// older container than the one the proxy looked up.
        instance_guid: String,
        /// As an SSH client sends it: one string. `None`: an interactive
        /// shell.
        command: Option<String>,
        tty: Option<Tty>,
        /// Variables the client asked to set (SSH `env` requests).
        env: Vec<(String, String)>,
    },
    /// Opens a TCP connection to `port` of the container (`ssh -L`).
    Forward { instance_guid: String, port: u16 },
}

/// One message of a session's stream (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Proxy to rep, first and once: what to run.
    Start(SessionRequest),
    /// Proxy to rep: stdin (or bytes to the forwarded port); rep to proxy:
    /// stdout (or bytes from the port).
    Data(Vec<u8>),
    /// Rep to proxy: stderr.
    Stderr(Vec<u8>),
    /// No more data this way.
    Eof,
    /// Proxy to rep: the client's terminal changed size.
    Resize(TtySize),
    /// Rep to proxy, last: the process's exit status (128+N for signal N).
    Exit(i32),
    /// Rep to proxy, last: the session could not run; says why.
    Error(String),
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_PAYLOAD}")]
    TooLarge(usize),
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    #[error("malformed {tag} frame: {reason}")]
    Malformed { tag: &'static str, reason: String },
}

const TAG_START: u8 = 0;
const TAG_DATA: u8 = 1;
const TAG_STDERR: u8 = 2;
const TAG_EOF: u8 = 3;
const TAG_RESIZE: u8 = 4;
const TAG_EXIT: u8 = 5;
const TAG_ERROR: u8 = 6;

impl Frame {
    /// The frame as bytes: header ([`FRAME_HEADER_LEN`]) then payload.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, payload): (u8, Vec<u8>) = match self {
            // A derived Serialize of plain strings and numbers cannot fail.
            Frame::Start(request) => (
                TAG_START,
                serde_json::to_vec(request).expect("a session request serializes"),
            ),
            Frame::Data(bytes) => (TAG_DATA, bytes.clone()),
            Frame::Stderr(bytes) => (TAG_STDERR, bytes.clone()),
            Frame::Eof => (TAG_EOF, Vec::new()),
            Frame::Resize(size) => {
                let mut payload = size.columns.to_be_bytes().to_vec();
                payload.extend_from_slice(&size.rows.to_be_bytes());
                (TAG_RESIZE, payload)
            }
            Frame::Exit(status) => (TAG_EXIT, status.to_be_bytes().to_vec()),
            Frame::Error(message) => (TAG_ERROR, message.as_bytes().to_vec()),
        };
        let mut bytes = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        bytes.push(tag);
        // Payloads are at most MAX_FRAME_PAYLOAD (callers chunk data), far
        // below u32::MAX.
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Reads a header: the tag and the payload's length, refused above
    /// [`MAX_FRAME_PAYLOAD`] so a reader never allocates more.
    pub fn decode_header(header: [u8; FRAME_HEADER_LEN]) -> Result<(u8, usize), FrameError> {
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if length > MAX_FRAME_PAYLOAD {
            return Err(FrameError::TooLarge(length));
        }
        Ok((header[0], length))
    }

    /// The frame of `tag` with `payload` (as [`Frame::decode_header`] read).
    pub fn decode(tag: u8, payload: Vec<u8>) -> Result<Frame, FrameError> {
        let malformed = |tag: &'static str, reason: &str| FrameError::Malformed {
            tag,
            reason: reason.to_string(),
        };
        Ok(match tag {
            TAG_START => Frame::Start(
                serde_json::from_slice(&payload)
                    .map_err(|err| malformed("start", &err.to_string()))?,
            ),
            TAG_DATA => Frame::Data(payload),
            TAG_STDERR => Frame::Stderr(payload),
            TAG_EOF => Frame::Eof,
            TAG_RESIZE => match payload.as_slice() {
                [c0, c1, r0, r1] => Frame::Resize(TtySize {
                    columns: u16::from_be_bytes([*c0, *c1]),
                    rows: u16::from_be_bytes([*r0, *r1]),
                }),
                _ => return Err(malformed("resize", "expected 4 bytes")),
            },
            TAG_EXIT => match <[u8; 4]>::try_from(payload.as_slice()) {
                Ok(bytes) => Frame::Exit(i32::from_be_bytes(bytes)),
                Err(_) => return Err(malformed("exit", "expected 4 bytes")),
            },
            TAG_ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(FrameError::UnknownTag(other)),
        })
    }
}

/// Splits a command as an SSH client sent it into a program and its
/// arguments when no shell is needed to run it (no operators, variables,
/// globs or quotes' tricks beyond plain quoting); `None` when it needs a
/// shell. So a command runs in an image without a shell (distroless) when
/// it is a plain command, and through `/bin/sh -c` otherwise.
pub fn split_plain_command(command: &str) -> Option<Vec<String>> {
    const SHELL_CHARACTERS: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '*', '?', '[', ']', '{', '}', '~', '#',
        '\n', '!', '=',
    ];
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c == ' ' || c == '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None if SHELL_CHARACTERS.contains(&c) => return None,
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    // Inside double quotes `$`, `` ` `` and `\` still mean something to a
    // shell: leave such a command to one.
    if quote.is_some() || (command.contains('"') && command.contains(['$', '`', '\\'])) {
        return None;
    }
    if in_word {
        words.push(word);
    }
    (!words.is_empty()).then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_name_an_instance() {
        let target = |process_guid: &str, index| SshTarget {
            process_guid: process_guid.to_string(),
            index,
        };
        assert_eq!(SshTarget::parse_user("diego:web/2"), Ok(target("web", 2)));
        assert_eq!(SshTarget::parse_user("web/0"), Ok(target("web", 0)));
        assert_eq!(SshTarget::parse_user("diego:web"), Ok(target("web", 0)));
        assert_eq!(SshTarget::parse_user("web"), Ok(target("web", 0)));
        for bad in [
            "",
            "diego:",
            "/1",
            "web/-1",
            "web/x",
            "diego:a b/0",
            "web/1/2",
        ] {
            assert!(SshTarget::parse_user(bad).is_err(), "{bad:?}");
        }
        assert_eq!(target("web", 3).user(), "diego:web/3");
        let message = SshTarget::parse_user("x/y").unwrap_err().to_string();
        assert!(message.contains("diego:APP/INDEX"), "{message}");
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Start(SessionRequest::Exec {
                instance_guid: "i-1".into(),
                command: Some("ls -l".into()),
                tty: Some(Tty {
                    term: "xterm".into(),
                    size: TtySize {
                        columns: 80,
                        rows: 24,
                    },
                }),
                env: vec![("LANG".into(), "C".into())],
            }),
            Frame::Start(SessionRequest::Forward {
                instance_guid: "i-1".into(),
                port: 8080,
            }),
            Frame::Data(vec![0, 255, 10, 13]),
            Frame::Stderr(b"oops".to_vec()),
            Frame::Eof,
            Frame::Resize(TtySize {
                columns: 300,
                rows: 70,
            }),
            Frame::Exit(-1),
            Frame::Exit(130),
            Frame::Error("no such instance".into()),
        ];
        for frame in frames {
            let bytes = frame.encode();
            let header: [u8; FRAME_HEADER_LEN] = bytes[..FRAME_HEADER_LEN].try_into().unwrap();
            let (tag, length) = Frame::decode_header(header).expect("a valid header");
            assert_eq!(length, bytes.len() - FRAME_HEADER_LEN);
            let decoded = Frame::decode(tag, bytes[FRAME_HEADER_LEN..].to_vec());
            assert_eq!(decoded, Ok(frame));
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let huge = ((MAX_FRAME_PAYLOAD + 1) as u32).to_be_bytes();
        assert_eq!(
            Frame::decode_header([TAG_DATA, huge[0], huge[1], huge[2], huge[3]]),
            Err(FrameError::TooLarge(MAX_FRAME_PAYLOAD + 1))
        );
        assert_eq!(Frame::decode(99, vec![]), Err(FrameError::UnknownTag(99)));
        assert!(Frame::decode(TAG_RESIZE, vec![1]).is_err());
        assert!(Frame::decode(TAG_EXIT, vec![]).is_err());
        assert!(Frame::decode(TAG_START, b"{}".to_vec()).is_err());
    }

    #[test]
    fn plain_commands_need_no_shell() {
        let words = |c: &str| split_plain_command(c);
        assert_eq!(
            words("ls -l /tmp"),
            Some(vec!["ls".into(), "-l".into(), "/tmp".into()])
        );
        assert_eq!(
            words("  echo 'a  b' \"c d\"  "),
            Some(vec!["echo".into(), "a  b".into(), "c d".into()])
        );
        assert_eq!(words("echo ''"), Some(vec!["echo".into(), "".into()]));
        for shell in [
            "echo hi; exit 3",
            "cat | wc",
            "echo $HOME",
            "ls *",
            "a && b",
            "FOO=1 env",
            "echo \"$x\"",
            "echo 'open",
            "",
            "   ",
        ] {
            assert_eq!(words(shell), None, "{shell:?}");
        }
    }
}
