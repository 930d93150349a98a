//! Interactive processes (`ltc ssh`): a Docker exec of `lattice-init spawn`
//! with stdin attached and, when asked, a pseudo-terminal the engine
//! allocates. Like [`Garden::run`](crate::Garden::run)'s processes, they can
//! be signalled through their pidfile, so a session whose user went away
//! ends its process instead of leaving it behind.

use async_trait::async_trait;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptionsBuilder;
use tokio::sync::mpsc;

use super::{
    env_strings, not_found_or, pump_output, spawn_command, validate_env, DockerGarden,
    DockerProcess, OUTPUT_BUFFER,
};
use crate::{GardenError, GardenResult, Interactive, InteractiveProcess, ProcessSpec, TtySize};

impl DockerGarden {
    /// See [`crate::Garden::exec_interactive`].
    pub(super) async fn start_interactive(
        &self,
        handle: &str,
        spec: ProcessSpec,
        tty: Option<TtySize>,
    ) -> GardenResult<Interactive> {
        if spec.path.is_empty() {
            return Err(GardenError::InvalidSpec(
                "process path is empty".to_string(),
            ));
        }
        validate_env(&spec.env)?;
        let (pidfile, cmd) = spawn_command(&spec);
        let options = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty.is_some()),
            env: (!spec.env.is_empty()).then(|| env_strings(&spec.env)),
            cmd: Some(cmd),
            user: spec.user.clone(),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(handle, options)
            .await
            .map_err(|err| not_found_or(err, handle, "create exec"))?;
        let options = StartExecOptions {
            detach: false,
            tty: tty.is_some(),
            output_capacity: None,
        };
        let (output, input) = match self.docker.start_exec(&exec.id, Some(options)).await {
            Ok(StartExecResults::Attached { output, input }) => (output, input),
            Ok(StartExecResults::Detached) => {
                return Err(GardenError::Backend("exec started detached".to_string()))
            }
            Err(err) => return Err(not_found_or(err, handle, "start exec")),
        };
        let (sender, receiver) = mpsc::channel(OUTPUT_BUFFER);
        let pump = tokio::spawn(pump_output(output, sender, exec.id.clone()));
        let process = DockerProcess {
            garden: self.clone(),
            handle: handle.to_string(),
            exec_id: exec.id,
            pidfile,
            output: Some(receiver),
            pump: Some(pump),
            exit_status: None,
        };
        if let Some(size) = tty {
            // The first size is a nicety: a shell still runs at 80x24.
            if let Err(err) = process.resize(size).await {
                tracing::debug!(handle, error = %err, "cannot size the new terminal");
            }
        }
        tracing::debug!(handle, exec_id = %process.exec_id, path = %spec.path, tty = tty.is_some(), "interactive process started");
        Ok(Interactive {
            stdin: input,
            process: Box::new(process),
        })
    }
}

#[async_trait]
impl InteractiveProcess for DockerProcess {
    /// # Caveats
    /// The engine refuses to resize an exec without a terminal; that is
    /// reported as an error, which callers may ignore.
    async fn resize(&self, size: TtySize) -> GardenResult<()> {
        self.garden
            .docker
            .resize_exec(
                &self.exec_id,
                ResizeExecOptionsBuilder::default()
                    .h(i32::from(size.rows))
                    .w(i32::from(size.columns))
                    .build(),
            )
            .await
            .map_err(|err| not_found_or(err, &self.handle, "resize exec"))
    }
}
