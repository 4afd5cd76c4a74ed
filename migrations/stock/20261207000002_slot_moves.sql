-- Slot moves of stock (`shop partitions move stock`): a partition's database knows which of
-- the 256 slots it gave away (or is giving away), and never writes a goods of them again,
-- so a worker routing by an old map, or a request already on its way, is refused
-- (`unavailable`) instead of writing where nobody will read. A goods' slot is the FNV-1a
-- hash of its id (contracts' Slot::of_key), computed by the worker, not here.

-- The slots this partition gave away: 'leaving' from the moment their goods left `stock`
-- (they wait in `stock_leaving` while they are copied), 'gone' once the copy is in the
-- target and deleted here. A move back deletes the row.
CREATE TABLE stock_slots_away (
    slot     INTEGER     PRIMARY KEY CHECK (slot BETWEEN 0 AND 255),
    moved_to INTEGER     NOT NULL CHECK (moved_to >= 0),
    state    TEXT        NOT NULL CHECK (state IN ('leaving', 'gone')),
    moved_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The stock rows of leaving slots, out of `stock` so that no deduct, return or set finds
-- them, until the move has copied them.
CREATE TABLE stock_leaving (LIKE stock INCLUDING DEFAULTS);

-- The slots this partition received, and from whom: a move run again after a crash finds
-- here that its copy was already written, and does not write it twice.
CREATE TABLE stock_slots_arrived (
    slot           INTEGER     PRIMARY KEY CHECK (slot BETWEEN 0 AND 255),
    from_partition INTEGER     NOT NULL CHECK (from_partition >= 0),
    arrived_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Sell records whose share of some goods a move took to another partition: a return here
-- gives back what stayed, and tells its caller where the rest is.
CREATE TABLE sell_shares_moved (
    order_sn BIGINT  NOT NULL,
    moved_to INTEGER NOT NULL CHECK (moved_to >= 0),
    PRIMARY KEY (order_sn, moved_to)
);
