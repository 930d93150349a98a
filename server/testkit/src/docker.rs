//! The Docker engine as tests use it: a negotiated connection, and removal
//! of every container a test created, found by its owner label.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use lattice_garden::OWNER_PROPERTY;

/// Connects to the local engine and agrees on an API version with it (the
/// engine here speaks 1.41, older than bollard's default).
///
/// # Panics
/// When the engine cannot be reached: no container test can run then.
pub async fn connect() -> Docker {
    try_connect()
        .await
        .unwrap_or_else(|err| panic!("cannot reach the Docker engine: {err}"))
}

/// Like [`connect`], returning the error.
///
/// # Errors
/// When the socket cannot be opened or the version request fails.
pub async fn try_connect() -> Result<Docker, bollard::errors::Error> {
    Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await
}

/// Force-removes (with their volumes) every container labelled
/// `io.lattice.owner=<owner>`, running or not; returns how many it removed.
///
/// # Errors
/// When listing fails, or removing one fails for another reason than that it
/// is gone already.
pub async fn remove_containers_by_label(
    docker: &Docker,
    owner: &str,
) -> Result<usize, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![format!("{OWNER_PROPERTY}={owner}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    let mut removed = 0;
    for id in containers.into_iter().filter_map(|c| c.id) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            // Removed meanwhile, by the code under test or a removal in progress.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}

/// A unique owner for one test's containers, whose containers are removed
/// when it is dropped, even when the test panics.
#[derive(Debug)]
pub struct OwnerGuard {
    owner: String,
}

impl OwnerGuard {
    /// A fresh owner named `<prefix>-<uuid>`.
    pub fn new(prefix: &str) -> OwnerGuard {
        OwnerGuard {
            owner: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// `{io.lattice.owner: owner}`, the properties every container of the
    /// test must carry.
    pub fn properties(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(OWNER_PROPERTY.to_string(), self.owner.clone())])
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let owner = self.owner.clone();
        // Drop may run inside a tokio runtime (where blocking on another
        // future is refused) or outside any; a thread with its own runtime
        // works in both.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let docker = try_connect().await.map_err(std::io::Error::other)?;
                remove_containers_by_label(&docker, &owner)
                    .await
                    .map_err(std::io::Error::other)
            })
        });
        match cleanup.join() {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => eprintln!(
                "cleanup of containers owned by {} failed: {err}",
                self.owner
            ),
            Err(_) => eprintln!("cleanup of containers owned by {} panicked", self.owner),
        }
    }
}
