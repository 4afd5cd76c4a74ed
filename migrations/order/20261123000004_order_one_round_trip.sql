-- A create's commit in one round trip, and idempotency keys claimed before the deduct.
--
-- Why a function: the commit must take pg_advisory_xact_lock(order_sn) and only then look
-- for the checker's fence (a fence committed while we waited must be seen). In READ
-- COMMITTED a statement's snapshot is taken when the statement starts, so the lock and the
-- check cannot share one plain statement; inside a PL/pgSQL function every statement takes
-- a fresh snapshot. One call replaces BEGIN, lock, fence check, order, items, read-back,
-- outbox and COMMIT: nine round trips, each a wake-up of a backend, become one.

-- The contract's time format (RFC 3339, UTC, milliseconds, `Z`), as
-- shop_contracts::time::format writes it: both truncate to the millisecond.
CREATE FUNCTION shop_time(at TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$ SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

-- Commits a created order unless its order_sn is fenced. Writes the order, its items and
-- the `created` event into the outbox; the event is the order as the worker serialised it,
-- completed here with the two times only the database clock may decide. Returns one row
-- (created_at, pay_deadline), or no row when the checker fenced the order_sn first.
CREATE FUNCTION commit_created_order(
    p_order_sn       BIGINT,
    p_user_id        BIGINT,
    p_total_cents    BIGINT,
    p_address        TEXT,
    p_receiver_name  TEXT,
    p_receiver_phone TEXT,
    p_note           TEXT,
    p_pay_timeout_ms BIGINT,
    p_goods_ids      BIGINT[],
    p_titles         TEXT[],
    p_prices_cents   BIGINT[],
    p_quantities     INTEGER[],
    p_event_subject  TEXT,
    p_event_msg_id   TEXT,
    p_event          JSONB
) RETURNS TABLE (created_at TIMESTAMPTZ, pay_deadline TIMESTAMPTZ)
LANGUAGE plpgsql AS $$
DECLARE
    v_created  TIMESTAMPTZ := now();
    v_deadline TIMESTAMPTZ := now() + make_interval(secs => p_pay_timeout_ms / 1000.0);
BEGIN
    PERFORM pg_advisory_xact_lock(p_order_sn);
    IF EXISTS (SELECT 1 FROM aborted_orders a WHERE a.order_sn = p_order_sn) THEN
        RETURN;
    END IF;
    INSERT INTO orders (order_sn, user_id, status, total_cents, address, receiver_name,
                        receiver_phone, note, created_at, pay_deadline)
    VALUES (p_order_sn, p_user_id, 'unpaid', p_total_cents, p_address, p_receiver_name,
            p_receiver_phone, p_note, v_created, v_deadline);
    INSERT INTO order_items (order_sn, goods_id, title, price_cents, quantity)
    SELECT p_order_sn, g, t, p, q
    FROM unnest(p_goods_ids, p_titles, p_prices_cents, p_quantities) AS u(g, t, p, q);
    INSERT INTO outbox (subject, msg_id, payload)
    VALUES (p_event_subject, p_event_msg_id,
            convert_to((p_event || jsonb_build_object(
                'created_at', shop_time(v_created),
                'pay_deadline', shop_time(v_deadline)))::text, 'UTF8'));
    RETURN QUERY SELECT v_created, v_deadline;
END
$$;

-- An idempotency key is now claimed right after the half message, before the deduct, so a
-- concurrent repeat deducts nothing: its order may not exist yet (or ever, if the create
-- fails; the fence of that order_sn deletes the claim), so the key no longer references it.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_order_sn_fkey;
CREATE INDEX idempotency_keys_order_sn_idx ON idempotency_keys (order_sn);
