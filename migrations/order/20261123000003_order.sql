-- Orders, their items, the fence for aborted order_sns, idempotency keys and the outbox of
-- ORDER_EVENTS. Owned by the order worker only.

CREATE TABLE orders (
    order_sn       BIGINT      PRIMARY KEY CHECK (order_sn > 0),
    user_id        BIGINT      NOT NULL CHECK (user_id > 0),
    status         TEXT        NOT NULL CHECK (status IN ('unpaid', 'paid', 'closed', 'cancelled')),
    total_cents    BIGINT      NOT NULL CHECK (total_cents >= 0),
    address        TEXT        NOT NULL,
    receiver_name  TEXT        NOT NULL,
    receiver_phone TEXT        NOT NULL,
    note           TEXT        NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    pay_deadline   TIMESTAMPTZ NOT NULL,
    paid_at        TIMESTAMPTZ,
    closed_at      TIMESTAMPTZ,
    payment_ref    TEXT
);

-- order.list: a user's orders, newest (largest snowflake) first.
CREATE INDEX orders_user_id_idx ON orders (user_id, order_sn DESC);

-- The lines of an order as deducted: one per goods, ascending goods_id.
CREATE TABLE order_items (
    order_sn    BIGINT NOT NULL REFERENCES orders (order_sn) ON DELETE CASCADE,
    goods_id    BIGINT NOT NULL CHECK (goods_id > 0),
    title       TEXT   NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_sn, goods_id)
);

-- The checker's verdict "this order_sn never committed": once a row is here, an order with
-- this order_sn can never be inserted (both take pg_advisory_xact_lock(order_sn) first).
CREATE TABLE aborted_orders (
    order_sn   BIGINT      PRIMARY KEY,
    aborted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- idempotency_key per user: the order it created and a fingerprint of the request body.
CREATE TABLE idempotency_keys (
    user_id     BIGINT      NOT NULL,
    key         TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    order_sn    BIGINT      NOT NULL REFERENCES orders (order_sn),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- Transactional outbox for ORDER_EVENTS: written in the transaction that changes the order,
-- published (with Nats-Msg-Id) and deleted by the relay.
CREATE TABLE outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject    TEXT        NOT NULL,
    msg_id     TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
