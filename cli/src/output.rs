//! Output shared by the commands: tables, `--json`, timestamps, and the
//! error stream ([`Stderr`]).

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use lattice_models::ActualLrpState;
use serde::Serialize;

/// A command's error stream: notices (a lost log connection, an app that
/// does not exist) and the log lines shown while a command waits. It is the
/// process's stderr, or a buffer in tests, so that what a command says there
/// can be checked too.
#[derive(Clone)]
pub struct Stderr {
    /// Shared, because the spinner and the command both write to it.
    writer: Arc<Mutex<dyn Write + Send>>,
    /// It is a terminal: spinners draw on it, and lines go above them.
    pub terminal: bool,
    /// Lines on it may be coloured: a terminal, and `NO_COLOR` unset.
    pub color: bool,
}

impl Stderr {
    /// The process's stderr; `no_color` is whether `NO_COLOR` is set.
    pub fn process(no_color: bool) -> Stderr {
        let terminal = std::io::stderr().is_terminal();
        Stderr::new(std::io::stderr(), terminal, terminal && !no_color)
    }

    pub fn new(writer: impl Write + Send + 'static, terminal: bool, color: bool) -> Stderr {
        Stderr {
            writer: Arc::new(Mutex::new(writer)),
            terminal,
            color,
        }
    }

    /// Writes `text` and a newline. A failure is ignored: stderr is where
    /// ltc would report it, and a notice is never worth failing a command.
    pub fn line(&self, text: &str) {
        // Each write is a whole line, so a panic elsewhere while the lock was
        // held cannot leave anything half-done that matters.
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(writer, "{text}").and_then(|()| writer.flush());
    }
}

impl std::fmt::Debug for Stderr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stderr")
            .field("terminal", &self.terminal)
            .field("color", &self.color)
            .finish_non_exhaustive()
    }
}

/// A table with `header`, in the style of every ltc list.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// A two-column table of `(name, value)` rows, for one record's details.
pub fn details(rows: &[(&str, String)]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (name, value) in rows {
        table.add_row(vec![name.to_string(), value.clone()]);
    }
    table
}

pub fn write_table(out: &mut dyn Write, table: &Table) -> std::io::Result<()> {
    writeln!(out, "{table}")
}

/// `value` as pretty JSON, for `--json`: the receptor's own shapes, so
/// that scripts can rely on the API documentation.
pub fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> anyhow::Result<()> {
    // Serialised first, then written: serde_json's writer errors hide the
    // `io::Error` from the cause chain, and a closed pipe (`| head`) must be
    // recognisable as one (see `is_broken_pipe`).
    let mut json = serde_json::to_vec_pretty(value)?;
    json.push(b'\n');
    out.write_all(&json)?;
    Ok(())
}

/// Nanoseconds since the epoch (Diego's unit) as RFC 3339 UTC; `-` for 0,
/// which the API uses for "never".
pub fn timestamp(nanos: i64) -> String {
    match u64::try_from(nanos) {
        Ok(0) | Err(_) => "-".to_string(),
        Ok(nanos) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
        }
    }
}

/// `-` for an empty field, so that table columns never look missing.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_string()
    } else {
        value.to_string()
    }
}

/// A `--rate` value: a humantime duration above zero (zero would refresh in
/// a busy loop).
pub fn parse_rate(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(rate) if rate.is_zero() => Err("must be more than 0".to_string()),
        Ok(rate) => Ok(rate),
        Err(err) => Err(err.to_string()),
    }
}

/// Shows what `render` writes every `rate` until `stop` completes (Ctrl-C
/// for the commands). On a terminal (`clear`) each frame replaces the last
/// one; elsewhere frames follow each other, separated by a blank line.
///
/// # Errors
/// The first frame's error (a typo in a name must not loop forever), and
/// errors writing the output. A later frame's error is shown in its place
/// and the refresh goes on, so that a restarting receptor does not end a
/// watch.
pub async fn refresh<F>(
    rate: Duration,
    clear: bool,
    out: &mut dyn Write,
    stop: impl std::future::Future<Output = ()>,
    mut render: F,
) -> anyhow::Result<()>
where
    F: AsyncFnMut(&mut Vec<u8>) -> anyhow::Result<()>,
{
    let mut stop = std::pin::pin!(stop);
    let mut first = true;
    loop {
        let mut frame = Vec::new();
        if let Err(err) = render(&mut frame).await {
            if first {
                return Err(err);
            }
            frame.clear();
            writeln!(frame, "error: {err:#}")?;
        }
        first = false;
        if clear {
            out.write_all(b"\x1b[2J\x1b[H")?;
        }
        out.write_all(&frame)?;
        if !clear {
            writeln!(out)?;
        }
        out.flush()?;
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(rate) => {}
        }
    }
}

/// Completes on Ctrl-C; never if the handler cannot be installed (then
/// Ctrl-C keeps its default effect of ending the process).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Lets `table` carry colours when `color` is on (stdout is a terminal and
/// `NO_COLOR` is unset); cells are only coloured in that case anyway.
pub fn allow_color(table: &mut Table, color: bool) {
    if color {
        table.enforce_styling();
    }
}

/// The colour of an instance state: green serves, yellow is on its way, red
/// crashed; UNCLAIMED waits for the auction and stays plain.
pub fn state_color(state: ActualLrpState) -> Option<Color> {
    match state {
        ActualLrpState::Running => Some(Color::Green),
        ActualLrpState::Claimed => Some(Color::Yellow),
        ActualLrpState::Crashed => Some(Color::Red),
        ActualLrpState::Unclaimed => None,
    }
}

/// A table cell of `text` in the colour of `state` when `color` is on.
pub fn state_cell(text: impl Into<String>, state: ActualLrpState, color: bool) -> Cell {
    let cell = Cell::new(text.into());
    match state_color(state) {
        Some(c) if color => cell.fg(c),
        _ => cell,
    }
}

/// How long ago `since_nanos` was at `now_nanos`, to the second (`3m 12s`);
/// `-` when unknown.
pub fn age(since_nanos: i64, now_nanos: i64) -> String {
    if since_nanos <= 0 {
        return "-".to_string();
    }
    let seconds = u64::try_from(now_nanos.saturating_sub(since_nanos) / 1_000_000_000).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away, as stdout under `| head`.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_into_a_closed_pipe_is_a_broken_pipe() {
        let err = write_json(&mut ClosedPipe, &serde_json::json!({"a": [1, 2]})).unwrap_err();
        assert!(crate::is_broken_pipe(&err), "{err:#}");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_rate("0s"), Err("must be more than 0".to_string()));
        assert!(parse_rate("often").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_shows_frames_until_stopped_and_survives_later_errors() {
        let mut out = Vec::new();
        let mut calls = 0;
        refresh(
            Duration::from_millis(50),
            false,
            &mut out,
            tokio::time::sleep(Duration::from_millis(125)),
            async |frame: &mut Vec<u8>| {
                calls += 1;
                if calls == 2 {
                    anyhow::bail!("receptor down");
                }
                writeln!(frame, "frame {calls}")?;
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "frame 1\n\nerror: receptor down\n\nframe 3\n\n"
        );

        let err = refresh(
            Duration::from_millis(50),
            true,
            &mut Vec::new(),
            std::future::pending(),
            async |_: &mut Vec<u8>| anyhow::bail!("no such app"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "no such app");
    }

    #[test]
    fn ages() {
        let s = 1_000_000_000;
        assert_eq!(age(0, 5 * s), "-");
        assert_eq!(age(s, 193 * s + 5), "3m 12s");
        assert_eq!(age(10 * s, 5 * s), "0s", "a clock behind the cell's");
    }

    #[test]
    fn colours_only_when_asked() {
        let mut table = table(&["State"]);
        allow_color(&mut table, true);
        table.add_row(vec![state_cell("RUNNING", ActualLrpState::Running, true)]);
        assert!(table.to_string().contains("\x1b["), "{table}");
        let mut table = self::table(&["State"]);
        table.add_row(vec![state_cell("RUNNING", ActualLrpState::Running, false)]);
        assert!(!table.to_string().contains("\x1b["), "{table}");
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(-5), "-");
        assert_eq!(timestamp(1_700_000_000_123_456_789), "2023-11-14T22:13:20Z");
    }
}
