//! Child processes kept running the way a supervisor (systemd, Kubernetes) keeps them: each
//! one started from a recipe, started again whenever it exits (and the log says so), and
//! stopped with SIGTERM, given time to finish what it admitted, then killed. `shop up` runs
//! its workers and gateway under it, and the soak its workers.

use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{die_with_parent, StackError};

/// Spawns `command` bound to this thread's life (SIGTERM when it ends, see
/// [`die_with_parent`]) and killed if its handle is dropped.
pub fn spawn_child(mut command: std::process::Command, what: &str) -> Result<Child, StackError> {
    die_with_parent(&mut command, libc::SIGTERM);
    let mut command = Command::from(command);
    command.kill_on_drop(true);
    command.spawn().map_err(|source| StackError::Spawn {
        what: what.to_owned(),
        source,
    })
}

/// A child process that is started again whenever it exits: a worker exits after a failure
/// so that it is replaced.
pub struct Supervised {
    name: String,
    recipe: Box<dyn Fn() -> std::process::Command + Send>,
    child: Child,
}

impl Supervised {
    /// Starts `name` from `recipe`, which [`supervise`] uses again for each restart.
    pub fn start(
        name: String,
        recipe: impl Fn() -> std::process::Command + Send + 'static,
    ) -> Result<Supervised, StackError> {
        let child = spawn_child(recipe(), &name)?;
        Ok(Supervised {
            name,
            recipe: Box::new(recipe),
            child,
        })
    }
}

/// Restarts every child that exits, for as long as it is polled. A child that keeps
/// exiting at once is restarted at most once a second.
pub async fn supervise(children: &mut [Supervised]) {
    const PAUSE: Duration = Duration::from_secs(1);
    loop {
        let (i, status) = wait_any(children).await;
        let process = &mut children[i];
        tracing::warn!(process = %process.name, %status, "exited; starting it again");
        loop {
            // Pacing a crash loop, not waiting for a condition.
            tokio::time::sleep(PAUSE).await;
            match spawn_child((process.recipe)(), &process.name) {
                Ok(child) => {
                    process.child = child;
                    tracing::info!(process = %process.name, "started again");
                    break;
                }
                Err(error) => {
                    tracing::error!(process = %process.name, %error, "could not start it again; retrying");
                }
            }
        }
    }
}

/// Stops every child at once, each as [`stop`] does.
pub async fn stop_all(children: &mut [Supervised]) {
    futures::future::join_all(children.iter_mut().map(|p| stop(&mut p.child))).await;
}

/// Resolves with the index and exit status of the first child to exit.
async fn wait_any(children: &mut [Supervised]) -> (usize, String) {
    let waits = children.iter_mut().map(|process| {
        Box::pin(async move {
            process
                .child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string())
        })
    });
    let (status, i, _) = futures::future::select_all(waits).await;
    (i, status)
}

/// SIGTERM, then up to 15 s for the child to exit (a worker takes up to its
/// `shutdown_timeout`, 10 s by default, to finish what it admitted), then SIGKILL.
pub async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
