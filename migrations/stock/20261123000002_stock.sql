-- Stock counts, one sell record per order_sn, and the append-only ledger (CONTRACT section 3).

CREATE TABLE stock (
    goods_id   BIGINT PRIMARY KEY CHECK (goods_id > 0),
    -- The last line of defence against oversell: every strategy also checks before writing.
    available  BIGINT NOT NULL CHECK (available >= 0),
    sold       BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    -- Bumped by every change; the optimistic and kv_lock strategies fence their writes on it.
    version    BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order_sn: makes deduct and return idempotent, and a `returned` row written by a
-- null compensation refuses a late deduct (anti-hanging).
CREATE TABLE sell_records (
    order_sn   BIGINT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('deducted', 'returned')),
    -- [{goods_id, quantity}] summed and in ascending goods_id; [] for a null compensation.
    items      JSONB NOT NULL DEFAULT '[]',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Append-only: written in the same transaction as every change of `stock`.
CREATE TABLE stock_ledger (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('adjustment', 'deduct', 'return')),
    goods_id        BIGINT NOT NULL,
    delta_available BIGINT NOT NULL,
    delta_sold      BIGINT NOT NULL,
    order_sn        BIGINT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX stock_ledger_goods_id ON stock_ledger (goods_id);
CREATE INDEX stock_ledger_order_sn ON stock_ledger (order_sn) WHERE order_sn IS NOT NULL;
