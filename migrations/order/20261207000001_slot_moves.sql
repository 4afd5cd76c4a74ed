-- Slot moves (`shop partitions move --kind order`): a partition's database knows which of
-- the 256 slots it has given away, and refuses to write an order of those slots, so a
-- worker that still routes by an old map can never write where nobody will read.
--
-- Every row of an order carries its order_sn, and the order_sn carries its user's slot
-- (bits 14..21: contracts' OrderSn::SLOT_SHIFT), so a slot's rows are found from the
-- order_sn alone.

CREATE FUNCTION order_slot(sn BIGINT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ((sn >> 14) & 255)::INTEGER $$;

-- The first key of the slot locks, pg_advisory_xact_lock(class, slot) ("slot" in ASCII):
-- writers that insert rows of a slot hold it shared, a move holds it exclusively. The two-key lock space is
-- apart from the order_sn locks' one-key space.
CREATE FUNCTION order_slot_lock_class() RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 1936486260 $$;

-- The slots this partition gave away, and to whom. A move writes the row in the same
-- transaction that deletes the slot's rows here; a move back deletes it.
CREATE TABLE slots_away (
    slot     INTEGER     PRIMARY KEY CHECK (slot BETWEEN 0 AND 255),
    moved_to INTEGER     NOT NULL CHECK (moved_to >= 0),
    moved_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A move finds its slots' rows by these, without reading the whole table.
CREATE INDEX orders_slot_idx ON orders (order_slot(order_sn));
CREATE INDEX aborted_orders_slot_idx ON aborted_orders (order_slot(order_sn));

-- The group commit, as in migration 5, but each slot's lock is taken and an order of a slot
-- given away is not written (it has no row, as a fenced one).
CREATE OR REPLACE FUNCTION commit_created_orders(
    p_order_sns       BIGINT[],
    p_user_ids        BIGINT[],
    p_totals_cents    BIGINT[],
    p_addresses       TEXT[],
    p_receiver_names  TEXT[],
    p_receiver_phones TEXT[],
    p_notes           TEXT[],
    p_pay_timeouts_ms BIGINT[],
    p_line_order_sns  BIGINT[],
    p_line_goods_ids  BIGINT[],
    p_line_titles     TEXT[],
    p_line_prices     BIGINT[],
    p_line_quantities INTEGER[],
    p_event_subjects  TEXT[],
    p_event_msg_ids   TEXT[],
    p_events          JSONB[]
) RETURNS TABLE (order_sn BIGINT, created_at TIMESTAMPTZ, pay_deadline TIMESTAMPTZ)
LANGUAGE plpgsql AS $$
DECLARE
    v_created TIMESTAMPTZ := now();
    v_sn      BIGINT;
    v_slot    INTEGER;
BEGIN
    -- Each slot's lock, shared, before any order_sn's: a move of the slot holds it
    -- exclusively while it copies the slot's rows away (see order_slot_lock).
    FOREACH v_slot IN ARRAY (SELECT array_agg(DISTINCT order_slot(s) ORDER BY order_slot(s))
                             FROM unnest(p_order_sns) AS s) LOOP
        PERFORM pg_advisory_xact_lock_shared(order_slot_lock_class(), v_slot);
    END LOOP;
    -- The lock a fence takes too; in ascending order, though nothing else ever holds more
    -- than one of them (the checker and a refused create lock one order_sn each).
    FOREACH v_sn IN ARRAY (SELECT array_agg(s ORDER BY s) FROM unnest(p_order_sns) AS s) LOOP
        PERFORM pg_advisory_xact_lock(v_sn);
    END LOOP;
    -- A new statement, so a new snapshot: fences committed while we waited are seen.
    RETURN QUERY
    WITH batch AS (
        SELECT b.*, v_created + make_interval(secs => b.pay_timeout_ms / 1000.0) AS deadline
        FROM unnest(p_order_sns, p_user_ids, p_totals_cents, p_addresses, p_receiver_names,
                    p_receiver_phones, p_notes, p_pay_timeouts_ms, p_event_subjects,
                    p_event_msg_ids, p_events)
             AS b(sn, user_id, total_cents, address, receiver_name, receiver_phone, note,
                  pay_timeout_ms, event_subject, event_msg_id, event)
        WHERE NOT EXISTS (SELECT 1 FROM aborted_orders a WHERE a.order_sn = b.sn)
          AND NOT EXISTS (SELECT 1 FROM slots_away w WHERE w.slot = order_slot(b.sn))
    ), stored_orders AS (
        INSERT INTO orders (order_sn, user_id, status, total_cents, address, receiver_name,
                            receiver_phone, note, created_at, pay_deadline)
        SELECT sn, user_id, 'unpaid', total_cents, address, receiver_name, receiver_phone,
               note, v_created, deadline
        FROM batch
    ), stored_lines AS (
        INSERT INTO order_items (order_sn, goods_id, title, price_cents, quantity)
        SELECT l.sn, l.goods_id, l.title, l.price_cents, l.quantity
        FROM unnest(p_line_order_sns, p_line_goods_ids, p_line_titles, p_line_prices,
                    p_line_quantities) AS l(sn, goods_id, title, price_cents, quantity)
        WHERE l.sn IN (SELECT sn FROM batch)
    ), stored_events AS (
        INSERT INTO outbox (subject, msg_id, payload)
        SELECT event_subject, event_msg_id,
               convert_to((event || jsonb_build_object(
                   'created_at', shop_time(v_created),
                   'pay_deadline', shop_time(deadline)))::text, 'UTF8')
        FROM batch
        ORDER BY sn
    )
    SELECT sn, v_created, deadline FROM batch;
END
$$;
