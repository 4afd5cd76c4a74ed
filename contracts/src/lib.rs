//! The public interface of shop, as types: subjects, request and reply bodies, error codes,
//! and the JetStream messages that cross worker boundaries. [`Endpoint`] ties each request
//! subject to its request and reply types.
//!
//! This crate owns the *shape* of everything on the wire and the validation rules that can
//! be checked without I/O (id ranges, quantities, list lengths). Decoding a request into
//! these types is the whole of input validation; a value that decodes is a valid request.
//!
//! It must not do I/O: no tokio, no sqlx, no async-nats. `../shared/CONTRACT.md` is the
//! prose version; where they differ, the contract is right and this crate has a bug.

pub mod endpoint;
pub mod error;
pub mod goods;
pub mod ids;
pub mod list;
pub mod order;
pub mod partition;
pub mod stock;
pub mod subjects;
pub mod time;
pub mod txn;

pub use endpoint::Endpoint;
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use ids::{CategoryId, Cents, GoodsId, OrderSn, Quantity, RoomId, UserId};
pub use list::{ItemList, LongText, PageLimit, ShortText};

/// Largest request body a worker accepts (CONTRACT section 1: at most 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most items in one order, deduct or batch request.
pub const MAX_ITEMS: usize = 100;
