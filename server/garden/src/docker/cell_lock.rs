//! A cell's liveness lock on the engine: one cell id, one live cell.
//!
//! A cell destroys, at start, every container carrying its id (the
//! leftovers of its previous run). Were a second cell to start with the id
//! of a live one (two clusters on one engine, a copied config), it would
//! destroy that cell's running instances. So before touching anything a
//! cell takes this lock, and refuses to start when a live cell holds it.
//!
//! The lock is a container named `lattice-cell-lock-CELL_ID` (names are
//! unique per engine, so creating it is the atomic "take"), labelled
//! [`CELL_LOCK_LABEL`]`=CELL_ID`. It runs `lattice-init hold`, which reads
//! its stdin until it ends; the holder keeps that stdin attached for as long
//! as it lives (`StdinOnce`). So the lock lives exactly as long as its
//! holder's connection to the engine: when the holder ends, even by
//! SIGKILL, the engine closes the stdin, the container exits and is removed
//! (`AutoRemove`). No lease to renew, nothing left behind.
//!
//! The lock container carries no [`OWNER_PROPERTY`](crate::OWNER_PROPERTY):
//! the cell's own clean-up, which destroys what carries its id, must not
//! take it.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use super::{backend, message, status, DockerGarden};
use crate::{GardenError, GardenResult};

/// The label naming the cell whose lock a container is.
pub const CELL_LOCK_LABEL: &str = "io.lattice.cell-lock";

/// The image of lock containers: just `lattice-init`, rebuilt when it
/// changes.
pub const CELL_LOCK_IMAGE: &str = "lattice/cell-lock:latest";

/// How long a new cell waits for a lock whose holder just ended (its
/// container exits as soon as the engine sees the holder's connection
/// close) before taking it as held by a live cell.
pub const HOLDER_GONE_GRACE: Duration = Duration::from_secs(3);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CellLockError {
    /// A live cell holds this id on this engine.
    #[error(
        "cell id {cell_id} is in use by a running cell on this Docker engine (its lock is \
         container {container}); give this cell another id with --cell-id, or stop the other \
         cell first"
    )]
    Held { cell_id: String, container: String },
    /// The lock container started but did not keep running: its
    /// `lattice-init` predates the `hold` mode.
    #[error(
        "the cell lock container {container} did not keep running ({state}); is lattice-init \
         in the lifecycle directory up to date? rebuild it with installers/build-lifecycles.sh"
    )]
    NotHeld { container: String, state: String },
    #[error(transparent)]
    Garden(#[from] GardenError),
}

/// A taken lock; see the module docs. Dropping it lets the lock go (the
/// engine sees the connection close); [`CellLock::release`] removes it at
/// once.
pub struct CellLock {
    docker: Docker,
    container: String,
    // Held, never used: the attached stdin whose closing ends the lock.
    _input: Pin<Box<dyn AsyncWrite + Send>>,
    _output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
}

impl std::fmt::Debug for CellLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellLock")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

/// The lock container's name for `cell_id` (a valid guid: letters, digits,
/// `-` and `_`, all of which Docker allows in a name).
pub fn cell_lock_name(cell_id: &str) -> String {
    format!("lattice-cell-lock-{cell_id}")
}

impl DockerGarden {
    /// Takes the liveness lock of `cell_id`, building the lock image from
    /// `init_program` (the lifecycle directory's `lattice-init`) if needed.
    ///
    /// # Errors
    /// [`CellLockError::Held`] when a live cell holds it (a holder that has
    /// just ended is waited for, up to [`HOLDER_GONE_GRACE`]);
    /// [`CellLockError::NotHeld`] when the lock container does not stay up;
    /// the engine's errors.
    pub async fn lock_cell(
        &self,
        cell_id: &str,
        init_program: &Path,
    ) -> Result<CellLock, CellLockError> {
        self.ensure_program_image(CELL_LOCK_IMAGE, init_program, &[])
            .await?;
        let container = cell_lock_name(cell_id);
        // Twice at most: a stale lock found on the first try is removed.
        for _ in 0..2 {
            match self.create_lock(cell_id, &container).await? {
                true => return self.hold(container).await,
                false => self.clear_stale(cell_id, &container).await?,
            }
        }
        Err(CellLockError::Held {
            cell_id: cell_id.to_string(),
            container,
        })
    }

    /// Creates the (stopped) lock container; `false` when one exists.
    async fn create_lock(&self, cell_id: &str, container: &str) -> GardenResult<bool> {
        let body = ContainerCreateBody {
            image: Some(CELL_LOCK_IMAGE.to_string()),
            cmd: Some(vec![
                format!("/bin/{}", super::INIT_BINARY),
                "hold".to_string(),
            ]),
            attach_stdin: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            labels: Some(HashMap::from([(
                CELL_LOCK_LABEL.to_string(),
                cell_id.to_string(),
            )])),
            host_config: Some(HostConfig {
                auto_remove: Some(true),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(container)
            .build();
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(true),
            Err(err) if status(&err) == Some(409) => Ok(false),
            Err(err) => Err(backend("create cell lock container", err)),
        }
    }

    /// Removes a lock container whose holder is gone: one never started or
    /// already exited, or one that exits within [`HOLDER_GONE_GRACE`].
    ///
    /// # Errors
    /// [`CellLockError::Held`] when it is still running after that.
    async fn clear_stale(&self, cell_id: &str, container: &str) -> Result<(), CellLockError> {
        let running = match self.docker.inspect_container(container, None).await {
            Ok(inspect) => inspect
                .state
                .and_then(|state| state.running)
                .unwrap_or(false),
            // Removed meanwhile (its holder just ended).
            Err(err) if status(&err) == Some(404) => return Ok(()),
            Err(err) => return Err(backend("inspect cell lock container", err).into()),
        };
        if running {
            let mut wait = self.docker.wait_container(container, None);
            // Any answer (an exit, an error, the container gone) means it
            // no longer runs; only the timeout means a live holder.
            if tokio::time::timeout(HOLDER_GONE_GRACE, wait.next())
                .await
                .is_err()
            {
                return Err(CellLockError::Held {
                    cell_id: cell_id.to_string(),
                    container: container.to_string(),
                });
            }
        }
        tracing::info!(cell_id, container, "removing the lock of a cell that ended");
        self.remove_lock(container).await?;
        // The engine may answer the removal while its own auto-removal is
        // still under way (409), and the name stays taken until that ends:
        // wait for it to be gone, or the next create finds it again.
        let removed = WaitContainerOptionsBuilder::new()
            .condition("removed")
            .build();
        let mut gone = self.docker.wait_container(container, Some(removed));
        let _ = tokio::time::timeout(HOLDER_GONE_GRACE, gone.next()).await;
        Ok(())
    }

    /// Attaches to the new lock container's stdin, then starts it.
    async fn hold(&self, container: String) -> Result<CellLock, CellLockError> {
        let options = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stream(true)
            .build();
        let attached = match self
            .docker
            .attach_container(&container, Some(options))
            .await
        {
            Ok(attached) => attached,
            Err(err) => {
                self.remove_lock(&container).await?;
                return Err(backend("attach to cell lock container", err).into());
            }
        };
        let lock = CellLock {
            docker: self.docker.clone(),
            container,
            _input: attached.input,
            _output: attached.output,
        };
        if let Err(err) = self.docker.start_container(&lock.container, None).await {
            lock.release().await;
            return Err(GardenError::Backend(format!(
                "start cell lock container: {}",
                message(&err)
            ))
            .into());
        }
        let state = match self.docker.inspect_container(&lock.container, None).await {
            Ok(inspect) => inspect.state,
            Err(err) if status(&err) == Some(404) => None,
            Err(err) => return Err(backend("inspect cell lock container", err).into()),
        };
        if !state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            let state = state
                .and_then(|s| s.exit_code)
                .map_or("removed".to_string(), |code| format!("exit code {code}"));
            let container = lock.container.clone();
            lock.release().await;
            return Err(CellLockError::NotHeld { container, state });
        }
        tracing::info!(container = %lock.container, "cell lock taken");
        Ok(lock)
    }

    async fn remove_lock(&self, container: &str) -> GardenResult<()> {
        remove(&self.docker, container).await
    }
}

async fn remove(docker: &Docker, container: &str) -> GardenResult<()> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(container, Some(options)).await {
        // 404: gone; 409: its auto-removal is under way.
        Ok(()) => Ok(()),
        Err(err) if matches!(status(&err), Some(404 | 409)) => Ok(()),
        Err(err) => Err(backend("remove cell lock container", err)),
    }
}

impl CellLock {
    /// The lock container's name.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Lets the lock go now (a cell that stops cleanly), so that a cell
    /// started right after takes it without waiting. Best effort: a lock
    /// that cannot be removed still goes when this value is dropped.
    pub async fn release(self) {
        if let Err(err) = remove(&self.docker, &self.container).await {
            tracing::warn!(container = %self.container, error = %err, "cannot remove the cell lock; it goes when the connection closes");
        }
    }
}
