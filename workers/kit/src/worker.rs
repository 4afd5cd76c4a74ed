//! The frame every worker runs in: its micro service, every task it starts, and its stop.
//!
//! A worker is a list of endpoints ([`Worker::serve`]), the consumers that take work from
//! JetStream ([`Worker::intake`]) and the tasks behind them ([`Worker::background`]: batch
//! writers, relays, probes). The frame owns every one of them; nothing is detached. Then
//! [`Worker::run`] waits for a stop signal, or for any task to end on its own, which is a
//! failure (an error, a panic, a subscription that closed): it is logged by name, the
//! worker stops as below and exits non-zero, so its supervisor replaces it.
//!
//! A stop happens in order, so nothing admitted is lost:
//! 1. `stopping` fires: endpoints are fenced (the queue group's other members get new
//!    requests; those already routed here are served, [`crate::micro`]) and consumers stop
//!    pulling and settle what they hold (ack or nak);
//! 2. the requests in flight finish;
//! 3. `draining` fires: background tasks flush (the last batch commits, the outbox relays
//!    what it holds) and end;
//! 4. the connection is flushed, so every reply and publish has left.
//!
//! All of it within `shutdown_timeout`; past it the worker says what it abandoned and
//! returns an error.

use std::future::Future;
use std::time::Duration;

use async_nats::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::{Admission, ServiceError, Serving};
use crate::held::Holding;
use crate::micro::{Service, ServiceConfig};

/// Why a task of a worker ended.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// How a worker run ended badly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the {worker} worker's task {task} failed: {reason}")]
    TaskFailed {
        worker: &'static str,
        task: &'static str,
        reason: String,
    },
    #[error(
        "the {worker} worker did not stop within {timeout:?}: abandoned {requests} requests \
         in flight and the tasks {tasks:?}"
    )]
    Abandoned {
        worker: &'static str,
        timeout: Duration,
        requests: usize,
        tasks: Vec<&'static str>,
    },
}

type Exit = Result<(), TaskError>;
/// Each task's name, by its tokio id (a panicked or aborted task has no output to say it).
type Names = std::collections::HashMap<tokio::task::Id, &'static str>;

/// A worker under construction, then running: see the module docs.
pub struct Worker {
    name: &'static str,
    client: Client,
    service: Service,
    intake: JoinSet<Exit>,
    background: JoinSet<Exit>,
    stopping: CancellationToken,
    draining: CancellationToken,
    requests: TaskTracker,
    names: Names,
}

impl Worker {
    /// Starts the micro service `config` on `client`; endpoints and tasks are added next.
    pub async fn start(client: Client, config: ServiceConfig) -> Result<Worker, async_nats::Error> {
        let name = config.name;
        let service = Service::start(client.clone(), config).await?;
        Ok(Worker {
            name,
            client,
            service,
            intake: JoinSet::new(),
            background: JoinSet::new(),
            stopping: CancellationToken::new(),
            draining: CancellationToken::new(),
            requests: TaskTracker::new(),
            names: Names::new(),
        })
    }

    /// Fires when the worker stops taking work: consumers stop pulling and settle.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Fires once every request and consumer has finished: background tasks flush and end.
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Serves `subject` with `handler(state.clone(), request)`, a task per request.
    pub async fn serve<S, Req, Rep, Err, H, Fut>(
        &mut self,
        subject: &'static str,
        state: S,
        handler: H,
    ) -> Result<(), async_nats::Error>
    where
        S: Clone + Send + Sync + 'static,
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        Err: ServiceError,
        H: Fn(S, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, Err>> + Send + 'static,
    {
        self.serve_admitted(subject, None, state, handler).await
    }

    /// [`Worker::serve`], with requests beyond `admission`'s bound waiting briefly for a slot
    /// or refused; when it holds refusals, their held replies wait in a background task of
    /// this worker (one per endpoint).
    pub async fn serve_admitted<S, Req, Rep, Err, H, Fut>(
        &mut self,
        subject: &'static str,
        admission: Option<Admission>,
        state: S,
        handler: H,
    ) -> Result<(), async_nats::Error>
    where
        S: Clone + Send + Sync + 'static,
        Req: DeserializeOwned + Send + 'static,
        Rep: Serialize + Send + 'static,
        Err: ServiceError,
        H: Fn(S, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rep, Err>> + Send + 'static,
    {
        let endpoint = self.service.endpoint(subject).await?;
        let holding = match &admission {
            Some(admission) if admission.holds_refusals() => {
                let (holding, holder) = Holding::new(self.client.clone(), endpoint.stats());
                spawn_named(
                    &mut self.background,
                    &mut self.names,
                    "held refusals",
                    holder.run(self.draining.clone()),
                );
                Some(holding)
            }
            _ => None,
        };
        let serving = Serving {
            endpoint,
            subject,
            admission,
            holding,
            client: self.client.clone(),
            state,
            handler: std::sync::Arc::new(handler),
            stopping: self.stopping.clone(),
            requests: self.requests.clone(),
        };
        let id = self.intake.spawn(serving.run()).id();
        self.names.insert(id, subject);
        Ok(())
    }

    /// A task that takes work in (a JetStream consumer): it must end once
    /// [`Worker::stopping`] fires, having settled every message it holds.
    pub fn intake<E>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: Into<TaskError>,
    {
        spawn_named(&mut self.intake, &mut self.names, name, task);
    }

    /// A task behind the intake (a batch writer, a relay, a probe): it must end once
    /// [`Worker::draining`] fires, having flushed what it holds.
    pub fn background<E>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: Into<TaskError>,
    {
        spawn_named(&mut self.background, &mut self.names, name, task);
    }

    /// Runs until `stop` resolves or a task ends on its own, then stops in order (module
    /// docs) within `timeout`.
    pub async fn run(
        mut self,
        stop: impl Future<Output = ()>,
        timeout: Duration,
    ) -> Result<(), WorkerError> {
        let worker = self.name;
        tracing::info!(worker, instance = self.service.id(), "serving");
        let failed = tokio::select! {
            _ = stop => None,
            Some(exit) = self.intake.join_next_with_id() => Some(exit),
            Some(exit) = self.background.join_next_with_id() => Some(exit),
        };
        let names = &self.names;
        let mut failure = failed.map(|exit| {
            let (task, reason) = describe(names, exit);
            tracing::error!(worker, task, %reason, "a task of the worker ended; stopping the worker");
            WorkerError::TaskFailed {
                worker,
                task,
                reason,
            }
        });
        if failure.is_none() {
            tracing::info!(
                worker,
                ?timeout,
                "stopping: fencing endpoints, finishing what was admitted"
            );
        }
        let deadline = Instant::now() + timeout;

        self.stopping.cancel();
        let mut abandoned = wait_all(worker, names, &mut self.intake, deadline, &mut failure).await;
        self.requests.close();
        let in_flight = match tokio::time::timeout_at(deadline, self.requests.wait()).await {
            Ok(()) => 0,
            Err(_) => self.requests.len(),
        };
        self.draining.cancel();
        abandoned
            .extend(wait_all(worker, names, &mut self.background, deadline, &mut failure).await);
        self.service.stop();
        if tokio::time::timeout_at(deadline, self.client.flush())
            .await
            .is_err()
        {
            abandoned.push("the connection's last writes");
        }

        if in_flight > 0 || !abandoned.is_empty() {
            let error = WorkerError::Abandoned {
                worker,
                timeout,
                requests: in_flight,
                tasks: abandoned,
            };
            tracing::error!(%error);
            return Err(error);
        }
        match failure {
            Some(failure) => Err(failure),
            None => {
                tracing::info!(
                    worker,
                    "stopped: every admitted request answered, every batch flushed"
                );
                Ok(())
            }
        }
    }
}

fn spawn_named<E: Into<TaskError>>(
    tasks: &mut JoinSet<Exit>,
    names: &mut Names,
    name: &'static str,
    task: impl Future<Output = Result<(), E>> + Send + 'static,
) {
    let id = tasks
        .spawn(async move { task.await.map_err(Into::into) })
        .id();
    names.insert(id, name);
}

/// Waits for every task of `tasks` until `deadline`; returns the names of those still
/// running (aborted), and keeps the first failure among those that ended.
async fn wait_all(
    worker: &'static str,
    names: &Names,
    tasks: &mut JoinSet<Exit>,
    deadline: Instant,
    failure: &mut Option<WorkerError>,
) -> Vec<&'static str> {
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
            Ok(None) => return Vec::new(),
            Ok(Some(Ok((_, Ok(()))))) => {}
            Ok(Some(exit)) => {
                let (task, reason) = describe(names, exit);
                tracing::error!(worker, task, %reason, "a task failed while the worker stopped");
                failure.get_or_insert(WorkerError::TaskFailed {
                    worker,
                    task,
                    reason,
                });
            }
            Err(_) => {
                tasks.abort_all();
                let mut left = Vec::new();
                while let Some(exit) = tasks.join_next_with_id().await {
                    let id = match &exit {
                        Ok((id, _)) => *id,
                        Err(error) => error.id(),
                    };
                    left.push(names.get(&id).copied().unwrap_or("a task"));
                }
                return left;
            }
        }
    }
}

fn describe(
    names: &Names,
    exit: Result<(tokio::task::Id, Exit), JoinError>,
) -> (&'static str, String) {
    let name = |id| names.get(&id).copied().unwrap_or("a task");
    match exit {
        Ok((id, Ok(()))) => (name(id), "it ended on its own".to_owned()),
        Ok((id, Err(error))) => (name(id), error.to_string()),
        Err(error) if error.is_panic() => (name(error.id()), format!("it panicked: {error}")),
        Err(error) => (name(error.id()), error.to_string()),
    }
}
