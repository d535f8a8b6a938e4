//! Commands run with their standard input attached, and optionally a terminal, for
//! `ms exec -i/-t` (not part of [`crate::engine::Engine`]: the reconciler never needs them).

use std::pin::Pin;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use futures::StreamExt;
use tokio::io::AsyncWrite;

use super::{classify, output_chunk, with_host, DockerEngine, Output};
use crate::engine::{EngineError, Result};

/// The command's standard input.
pub type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// A started command with its input attached.
pub struct Attached {
    /// For [`DockerEngine::exec_exit_code`] and [`DockerEngine::resize_exec`].
    pub exec_id: String,
    pub output: Output,
    pub input: Input,
}

impl DockerEngine {
    /// Runs `cmd` in container `id` with its standard input attached and, with `tty`, a
    /// terminal (whose output is all on stdout, as with `docker exec -t`).
    ///
    /// # Errors
    /// [`EngineError::NotFound`] when the container is gone; others as classified.
    pub async fn exec_attached(&self, id: &str, cmd: Vec<String>, tty: bool) -> Result<Attached> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    cmd: Some(cmd),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        let options = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&created.id, Some(options))
            .await
            .map_err(|e| with_host(classify(e), &self.host))?;
        let host = self.host.clone();
        match started {
            StartExecResults::Attached { output, input } => Ok(Attached {
                exec_id: created.id,
                output: output.map(move |item| output_chunk(&host, item)).boxed(),
                input,
            }),
            StartExecResults::Detached => Err(EngineError::Other(
                "the engine started the command detached".into(),
            )),
        }
    }

    /// Sets the terminal size of a command started with a terminal.
    ///
    /// # Errors
    /// As classified (an exec that already ended is [`EngineError::NotFound`] or a conflict).
    pub async fn resize_exec(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        self.docker
            .resize_exec(
                exec_id,
                ResizeExecOptions {
                    h: i32::from(rows),
                    w: i32::from(cols),
                },
            )
            .await
            .map_err(|e| with_host(classify(e), &self.host))
    }
}
