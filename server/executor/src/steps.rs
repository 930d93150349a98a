//! The action tree's semantics: one function per kind, recursing through
//! [`Executor::perform`].
//!
//! Every step takes the cancellation token of its parent. Combinators hand
//! their children a child token when they must stop some children without
//! stopping their siblings' parents (`timeout`, `codependent`).

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use lattice_models::action::{
    Action, CodependentAction, DownloadAction, EmitProgressAction, ParallelAction, SerialAction,
    TimeoutAction, TryAction, UploadAction,
};
use tokio_util::sync::CancellationToken;

use crate::error::{ActionError, UploadError};
use crate::log::LogTarget;
use crate::Executor;

/// What every step of one `Executor::run` shares.
pub(crate) struct Scope<'a> {
    pub handle: &'a str,
    /// The container's disk limit in MB (0: none); caps downloads.
    pub disk_mb: u64,
    /// Added to the environment of every process.
    pub env: &'a [(String, String)],
}

impl Executor {
    /// Performs `action`, boxed because the tree is recursive.
    pub(crate) fn perform<'a>(
        &'a self,
        scope: &'a Scope<'a>,
        action: &'a Action,
        log: &'a LogTarget,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async move {
            if cancel.is_cancelled() {
                return Err(ActionError::Cancelled);
            }
            let log = &log.with_source(log_source(action));
            match action {
                Action::Run(run) => {
                    self.run_process(scope.handle, run, scope.env, log, cancel)
                        .await
                }
                Action::Download(download) => self.download(scope, download, log, cancel).await,
                Action::Upload(upload) => self.upload(scope, upload, log, cancel).await,
                Action::Timeout(timeout) => self.timeout(scope, timeout, log, cancel).await,
                Action::Try(attempt) => self.attempt(scope, attempt, log, cancel).await,
                Action::Serial(SerialAction { actions, .. }) => {
                    self.serial(scope, actions, log, cancel).await
                }
                Action::Parallel(ParallelAction { actions, .. }) => {
                    self.parallel(scope, actions, log, cancel).await
                }
                Action::Codependent(CodependentAction { actions, .. }) => {
                    self.codependent(scope, actions, log, cancel).await
                }
                Action::EmitProgress(progress) => {
                    self.emit_progress(scope, progress, log, cancel).await
                }
            }
        })
    }

    /// One after another; the first failure ends the sequence.
    async fn serial(
        &self,
        scope: &Scope<'_>,
        actions: &[Action],
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        for action in actions {
            self.perform(scope, action, log, cancel).await?;
        }
        Ok(())
    }

    /// All at once; waits for every one, then fails with the reasons of all
    /// that failed.
    async fn parallel(
        &self,
        scope: &Scope<'_>,
        actions: &[Action],
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        let results = futures::future::join_all(
            actions
                .iter()
                .map(|action| self.perform(scope, action, log, cancel)),
        )
        .await;
        if cancel.is_cancelled() {
            return Err(ActionError::Cancelled);
        }
        ActionError::combine(results.into_iter().filter_map(Result::err).collect())
    }

    /// All at once; when the first one ends, successfully or not, the others
    /// are cancelled and awaited. Fails if the first failed, or if another
    /// failed before it was cancelled; being cancelled by the first one's end
    /// is not a failure.
    ///
    /// Diego also fails a codependent whose first action ends successfully
    /// (its `errorOnExit`). We do not: a recipe like "serve, and run a client
    /// against it" then succeeds when the client does, and the rep treats the
    /// end of an LRP's action as a crash whatever the result.
    async fn codependent(
        &self,
        scope: &Scope<'_>,
        actions: &[Action],
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        let others = cancel.child_token();
        let mut running: FuturesUnordered<_> = actions
            .iter()
            .map(|action| self.perform(scope, action, log, &others))
            .collect();
        let mut errors = Vec::new();
        if let Some(Err(first)) = running.next().await {
            errors.push(first);
        }
        others.cancel();
        while let Some(result) = running.next().await {
            match result {
                Err(ActionError::Cancelled) | Ok(()) => {}
                Err(error) => errors.push(error),
            }
        }
        if cancel.is_cancelled() {
            return Err(ActionError::Cancelled);
        }
        ActionError::combine(errors)
    }

    /// Fails after the action's limit, cancelling the inner action and waiting for
    /// its processes to be stopped.
    async fn timeout(
        &self,
        scope: &Scope<'_>,
        timeout: &TimeoutAction,
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        let limit = timeout.duration();
        let timeout_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let inner_cancel = cancel.child_token();
        let inner = self.perform(scope, &timeout.action, log, &inner_cancel);
        tokio::pin!(inner);
        tokio::select! {
            result = &mut inner => result,
            _ = tokio::time::sleep(limit) => {
                tracing::debug!(timeout_ms, "timed out; cancelling the inner action");
                inner_cancel.cancel();
                // Whatever it says now, it ran out of time.
                let _ = inner.await;
                if cancel.is_cancelled() {
                    Err(ActionError::Cancelled)
                } else {
                    Err(ActionError::TimedOut { timeout_ms })
                }
            }
        }
    }

    /// Runs the inner action and ignores its failure, but not cancellation.
    async fn attempt(
        &self,
        scope: &Scope<'_>,
        attempt: &TryAction,
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        match self.perform(scope, &attempt.action, log, cancel).await {
            Ok(()) => Ok(()),
            Err(_) if cancel.is_cancelled() => Err(ActionError::Cancelled),
            Err(error) => {
                tracing::info!(reason = %error, "try: ignoring failure");
                Ok(())
            }
        }
    }

    /// Writes `start_message` before the inner action, then `success_message`
    /// or `failure_message_prefix: reason`. Nothing is written when it was
    /// cancelled: that is the caller's doing, not the work's failure.
    async fn emit_progress(
        &self,
        scope: &Scope<'_>,
        progress: &EmitProgressAction,
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        let message =
            |m: &Option<String>| m.as_deref().filter(|m| !m.is_empty()).map(str::to_string);
        if let Some(start) = message(&progress.start_message) {
            log.out(start);
        }
        let result = self.perform(scope, &progress.action, log, cancel).await;
        match &result {
            Ok(()) => {
                if let Some(success) = message(&progress.success_message) {
                    log.out(success);
                }
            }
            Err(ActionError::Cancelled) => {}
            Err(error) => {
                if let Some(prefix) = message(&progress.failure_message_prefix) {
                    log.err(format!("{prefix}: {error}"));
                }
            }
        }
        result
    }

    /// Fetches (or takes from the cache) and streams into the container.
    async fn download(
        &self,
        scope: &Scope<'_>,
        download: &DownloadAction,
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        let failed = |source| ActionError::Download {
            url: download.from.clone(),
            source,
        };
        if let Some(artifact) = &download.artifact {
            log.out(format!("Downloading {artifact}..."));
        }
        let max_bytes = self.download_limit(scope);
        let fetch = self
            .downloads
            .fetch(&download.from, download.cache_key.as_deref(), max_bytes);
        let body = tokio::select! {
            body = fetch => body.map_err(failed)?,
            _ = cancel.cancelled() => return Err(ActionError::Cancelled),
        };
        let size = body.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let to = download.to.clone();
        let scratch = self.config.cache_dir.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&scratch).map_err(crate::error::DownloadError::Disk)?;
            crate::archive::unpack_download(body, &to, max_bytes, &scratch)
        })
        .await
        .map_err(|e| {
            failed(crate::error::DownloadError::Archive(std::io::Error::other(
                e,
            )))
        })?
        .map_err(failed)?;
        tracing::debug!(destination = %unpacked.destination, bytes = unpacked.bytes, "streaming download in");
        tokio::select! {
            streamed = self.garden.stream_in_file(scope.handle, &unpacked.destination, unpacked.tar) => streamed?,
            _ = cancel.cancelled() => return Err(ActionError::Cancelled),
        }
        if let Some(artifact) = &download.artifact {
            log.out(format!("Downloaded {artifact} ({})", human_size(size)));
        }
        Ok(())
    }

    /// The most a download may write into the container: its disk limit
    /// when it has one, never more than the cell's maximum.
    fn download_limit(&self, scope: &Scope<'_>) -> u64 {
        let cell_max = self.config.max_download_bytes;
        match scope.disk_mb {
            0 => cell_max,
            mb => cell_max.min(mb.saturating_mul(1024 * 1024)),
        }
    }

    /// Takes the file out of the container and POSTs it.
    async fn upload(
        &self,
        scope: &Scope<'_>,
        upload: &UploadAction,
        log: &LogTarget,
        cancel: &CancellationToken,
    ) -> Result<(), ActionError> {
        let failed = |source| ActionError::Upload {
            from: upload.from.clone(),
            to: upload.to.clone(),
            source,
        };
        if let Some(artifact) = &upload.artifact {
            log.out(format!("Uploading {artifact}..."));
        }
        let contents = tokio::select! {
            contents = self.file_contents(scope.handle, &upload.from, None) => {
                contents.map_err(|e| failed(UploadError::File(e)))?
            }
            _ = cancel.cancelled() => return Err(ActionError::Cancelled),
        };
        let size = contents.len();
        let post = self.config.http.post(&upload.to).body(contents).send();
        let response = tokio::select! {
            response = post => response.map_err(|e| failed(UploadError::Request(e)))?,
            _ = cancel.cancelled() => return Err(ActionError::Cancelled),
        };
        if !response.status().is_success() {
            return Err(failed(UploadError::Status {
                status: response.status().as_u16(),
            }));
        }
        if let Some(artifact) = &upload.artifact {
            log.out(format!("Uploaded {artifact} ({})", human_size(size)));
        }
        Ok(())
    }
}

/// The `log_source` an action names, if any.
fn log_source(action: &Action) -> Option<&str> {
    match action {
        Action::Download(a) => a.log_source.as_deref(),
        Action::Upload(a) => a.log_source.as_deref(),
        Action::Run(a) => a.log_source.as_deref(),
        Action::Timeout(a) => a.log_source.as_deref(),
        Action::Try(a) => a.log_source.as_deref(),
        Action::Serial(a) => a.log_source.as_deref(),
        Action::Parallel(a) => a.log_source.as_deref(),
        Action::Codependent(a) => a.log_source.as_deref(),
        Action::EmitProgress(a) => a.log_source.as_deref(),
    }
}

/// `512B`, `1.5K`, `12.0M`: short, for progress lines.
fn human_size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0M");
    }
}
