//! Driving a Docker Garden from tests: connect with the static lifecycles,
//! and run a process to its end, collecting its output by stream.

use futures::StreamExt;
use lattice_garden::docker::{DockerGarden, DockerGardenConfig};
use lattice_garden::{Garden, OutputStream, ProcessSpec};

/// A Docker Garden whose containers get the static lifecycle binaries
/// (built on first use).
///
/// # Panics
/// When the build fails or the engine cannot be reached: a container test
/// cannot run without either.
pub async fn connect() -> DockerGarden {
    let dir = tokio::task::spawn_blocking(crate::lifecycles::build_static)
        .await
        .expect("the build does not panic");
    DockerGarden::connect(DockerGardenConfig::new(dir))
        .await
        .expect("the engine is reachable")
}

/// A process of `path` with `args`, everything else the image's defaults.
pub fn process(path: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        path: path.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// Output of a finished process, by stream, and its exit status.
#[derive(Debug)]
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
    pub status: i64,
}

/// Runs `spec` in the container `handle` until it ends.
///
/// # Panics
/// When the process cannot start or be waited for, or writes non-UTF-8.
pub async fn run(garden: &DockerGarden, handle: &str, spec: ProcessSpec) -> Finished {
    let mut process = garden.run(handle, spec).await.expect("process starts");
    let chunks: Vec<_> = process.output().collect().await;
    let status = process.wait().await.expect("process ends");
    let text = |stream| {
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream == stream)
            .flat_map(|c| c.bytes.to_vec())
            .collect();
        String::from_utf8(bytes).expect("test output is utf-8")
    };
    Finished {
        stdout: text(OutputStream::Stdout),
        stderr: text(OutputStream::Stderr),
        status,
    }
}
