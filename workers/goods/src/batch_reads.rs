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
use shop_kit::queue::{Batches, Queue};
use shop_kit::Worker;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{repo, GoodsError};

/// Requests one read answers at most (each asks for at most 100 goods).
const MAX_REQUESTS: usize = 64;
/// Requests that may wait for a reader; beyond it they wait to enqueue.
const QUEUE: usize = 4 * MAX_REQUESTS;
/// Reads in flight at once: while one is at the database, the next batch can start.
const READERS: usize = 2;

type Found = Result<Vec<Goods>, GoodsError>;

/// The handle requests read through; cheap to clone.
#[derive(Clone)]
pub struct BatchReads {
    queue: Queue<Vec<GoodsId>, Found>,
}

impl BatchReads {
    /// Starts the reader tasks on `pool` as background tasks of `worker`.
    pub fn start(worker: &mut Worker, pool: PgPool) -> BatchReads {
        let (queue, batches) = Queue::new("goods_batch_reads", QUEUE, MAX_REQUESTS);
        let batches = Arc::new(Mutex::new(batches));
        for _ in 0..READERS {
            worker.background(
                "goods batch reader",
                read_until_drained(pool.clone(), batches.clone(), worker.draining()),
            );
        }
        BatchReads { queue }
    }

    /// The goods among `ids` that exist, in no particular order.
    pub async fn by_ids(&self, ids: &[GoodsId]) -> Found {
        self.queue
            .call(ids.to_vec())
            .await
            .map_err(|stopped| GoodsError::Bug(stopped.to_string()))?
    }
}

async fn read_until_drained(
    pool: PgPool,
    batches: Arc<Mutex<Batches<Vec<GoodsId>, Found>>>,
    draining: CancellationToken,
) -> Result<(), GoodsError> {
    let mut batch = Vec::with_capacity(MAX_REQUESTS);
    loop {
        if !batches.lock().await.next(&mut batch, &draining).await {
            return Ok(());
        }
        let mut ids: Vec<GoodsId> = batch
            .iter()
            .flat_map(|job| job.input.iter().copied())
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
                        .input
                        .iter()
                        .filter_map(|id| by_id.get(id).map(|g| (*g).clone()))
                        .collect();
                    // A requester that gave up is gone; nothing to undo for a read.
                    job.answer(Ok(mine));
                }
            }
            Err(error) => {
                for job in batch.drain(..) {
                    job.answer(Err(error.clone()));
                }
            }
        }
    }
}
