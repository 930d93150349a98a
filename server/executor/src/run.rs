//! The `run` action: start a process, turn its output into log lines, wait
//! for it, and stop it (TERM, then KILL) when cancelled.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use lattice_garden::{OutputChunk, OutputStream, Process, ProcessSpec, Signal};
use lattice_models::action::RunAction;
use lattice_models::log::MessageType;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ActionError;
use crate::log::{LineSplitter, LogTarget};
use crate::Executor;

/// Exit status of a process killed by SIGKILL, as the kernel's OOM killer does.
const SIGKILL_STATUS: i64 = 137;

/// How long we keep reading output after the process exited. The streams
/// normally close with it; a child that inherited them and lives on must not
/// hold the action open.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

impl Executor {
    pub(crate) async fn run_process(
        &self,
        handle: &str,
        action: &RunAction,
        env: &[(String, String)],
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        if cancel.is_cancelled() {
            return Err(ActionError::Cancelled);
        }
        let spec = ProcessSpec {
            path: action.path.clone(),
            args: action.args.clone(),
            dir: action.dir.clone(),
            // The run's own variables come last so that they win.
            env: env
                .iter()
                .cloned()
                .chain(action.env.iter().map(|e| (e.name.clone(), e.value.clone())))
                .collect(),
            user: action.user.clone(),
            nofile: action.resource_limits.as_ref().and_then(|r| r.nofile),
        };
        tracing::debug!(path = %spec.path, "starting process");
        // Not raced with `cancel`: dropping a half-started process would leave
        // it running. A cancelled token is seen at once by `wait_or_stop`.
        let mut process = self.garden.run(handle, spec).await?;

        let target = (!action.suppress_log_output).then(|| log.clone());
        let stop_reading = CancellationToken::new();
        let mut pump = spawn_pump(
            process.output(),
            target,
            self.config.max_line_bytes,
            stop_reading.clone(),
        );

        let exit = self.wait_or_stop(process.as_mut(), cancel).await;
        let pumped = tokio::select! {
            pumped = &mut pump => pumped,
            _ = tokio::time::sleep(OUTPUT_DRAIN) => {
                tracing::debug!("output still open after exit; stopping reading");
                stop_reading.cancel();
                pump.await
            }
        };
        if let Err(error) = pumped {
            tracing::warn!(%error, "output reader failed");
        }

        match exit? {
            Exit::Stopped => Err(ActionError::Cancelled),
            Exit::Status(0) => Ok(()),
            Exit::Status(status) if status == SIGKILL_STATUS && self.oom_killed(handle).await => {
                Err(ActionError::OutOfMemory { status })
            }
            Exit::Status(status) => Err(ActionError::Exited { status }),
        }
    }

    /// Waits for the process; when `cancel` fires first, sends TERM, then KILL
    /// after the grace period, and waits for it to go.
    ///
    /// # Assumptions
    /// [`Process::wait`] is cancel-safe: a `wait` dropped before it finished
    /// can be called again (we must drop it to send a signal, which needs the
    /// process too).
    async fn wait_or_stop(
        &self,
        process: &mut dyn Process,
        cancel: &CancellationToken,
    ) -> Result<Exit, ActionError> {
        tokio::select! {
            status = process.wait() => return Ok(Exit::Status(status?)),
            _ = cancel.cancelled() => {}
        }
        tracing::debug!("cancelled; terminating process");
        send(process, Signal::Terminate).await;
        if tokio::time::timeout(self.config.stop_grace, process.wait())
            .await
            .is_ok()
        {
            return Ok(Exit::Stopped);
        }
        tracing::debug!(grace = ?self.config.stop_grace, "process outlived its grace period; killing it");
        send(process, Signal::Kill).await;
        if tokio::time::timeout(self.config.kill_wait, process.wait())
            .await
            .is_err()
        {
            tracing::warn!(waited = ?self.config.kill_wait, "process did not exit after SIGKILL");
        }
        Ok(Exit::Stopped)
    }

    async fn oom_killed(&self, handle: &str) -> bool {
        match self.garden.info(handle).await {
            Ok(info) => info.oom_killed,
            Err(error) => {
                tracing::warn!(%error, "could not tell whether the container ran out of memory");
                false
            }
        }
    }
}

enum Exit {
    Status(i64),
    /// Ended by our signals after cancellation; its status is meaningless.
    Stopped,
}

async fn send(process: &dyn Process, signal: Signal) {
    // A process that already exited cannot be signalled; that is fine.
    if let Err(error) = process.signal(signal).await {
        tracing::debug!(?signal, %error, "signal not delivered");
    }
}

/// Reads the output until it ends or `stop` fires, emitting lines to `log`
/// (or discarding them, for a run with `suppress_log_output`: the output must
/// still be read, or a process writing to a full pipe would block).
fn spawn_pump(
    mut output: BoxStream<'static, OutputChunk>,
    log: Option<LogTarget>,
    max_line: usize,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut stdout = LineSplitter::new(max_line);
        let mut stderr = LineSplitter::new(max_line);
        loop {
            let chunk = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                chunk = output.next() => match chunk {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            let Some(log) = &log else { continue };
            match chunk.stream {
                OutputStream::Stdout => {
                    stdout.push(&chunk.bytes, |line| log.emit(MessageType::Out, line))
                }
                OutputStream::Stderr => {
                    stderr.push(&chunk.bytes, |line| log.emit(MessageType::Err, line))
                }
            }
        }
        if let Some(log) = &log {
            stdout.finish(|line| log.emit(MessageType::Out, line));
            stderr.finish(|line| log.emit(MessageType::Err, line));
        }
    })
}
