//! Coalesced `goods.batch` reads. Every create asks for its goods' prices; under load these
//! requests arrive by the hundred per second, each a one-row read whose cost is nearly all
//! per-statement overhead. Requests that wait while a read is in flight are answered by one
//! `SELECT ... WHERE goods_id = ANY(..)` for all of them.
//!
//! No timer: an idle worker reads at once. A request's read starts after the request
//! arrived, so it sees every write committed before it was asked, as an uncoalesced read
//! would.

use std::collections::HashMap;
use std::sync::Arc;

use shop_contracts::goods::Goods;
use shop_contracts::GoodsId;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::{repo, GoodsError};

/// Requests one read answers at most (each asks for at most 100 goods).
const MAX_REQUESTS: usize = 64;
/// Reads in flight at once: while one is at the database, the next batch can start.
const READERS: usize = 2;

struct Job {
    ids: Vec<GoodsId>,
    found: oneshot::Sender<Result<Vec<Goods>, GoodsError>>,
}

/// The handle requests read through; cheap to clone.
#[derive(Clone)]
pub struct BatchReads {
    queue: mpsc::UnboundedSender<Job>,
}

impl BatchReads {
    /// Starts the reader tasks on `pool`.
    pub fn start(pool: PgPool) -> BatchReads {
        // Unbounded: what waits here is bounded by the requests NATS hands the worker.
        let (queue, jobs) = mpsc::unbounded_channel();
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..READERS {
            tokio::spawn(read_forever(pool.clone(), jobs.clone()));
        }
        BatchReads { queue }
    }

    /// The goods among `ids` that exist, in no particular order.
    pub async fn by_ids(&self, ids: &[GoodsId]) -> Result<Vec<Goods>, GoodsError> {
        let (found, answer) = oneshot::channel();
        let job = Job {
            ids: ids.to_vec(),
            found,
        };
        let stopped = || GoodsError::Bug("the goods reader stopped".into());
        self.queue.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn read_forever(pool: PgPool, jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    let mut batch = Vec::with_capacity(MAX_REQUESTS);
    loop {
        if jobs.lock().await.recv_many(&mut batch, MAX_REQUESTS).await == 0 {
            return;
        }
        let mut ids: Vec<GoodsId> = batch
            .iter()
            .flat_map(|job| job.ids.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let read = match pool.acquire().await {
            Ok(mut conn) => repo::by_ids(&mut conn, &ids).await,
            Err(error) => Err(error.into()),
        };
        match read {
            Ok(goods) => {
                let by_id: HashMap<GoodsId, &Goods> =
                    goods.iter().map(|g| (g.goods_id, g)).collect();
                for job in batch.drain(..) {
                    let mine = job
                        .ids
                        .iter()
                        .filter_map(|id| by_id.get(id).map(|g| (*g).clone()));
                    // A requester that gave up is gone; nothing to undo for a read.
                    let _ = job.found.send(Ok(mine.collect()));
                }
            }
            Err(error) => {
                for job in batch.drain(..) {
                    let _ = job.found.send(Err(error.clone()));
                }
            }
        }
    }
}
