-- Group commit of created orders: the order worker's committer hands every create waiting
-- for its commit to one call, so one transaction (one WAL flush, one round trip) commits
-- many orders. Replaces the one-order function of migration 4; a single create is a batch
-- of one.

DROP FUNCTION commit_created_order(BIGINT, BIGINT, BIGINT, TEXT, TEXT, TEXT, TEXT, BIGINT,
                                   BIGINT[], TEXT[], BIGINT[], INTEGER[], TEXT, TEXT, JSONB);

-- Commits each order of the batch whose order_sn the checker has not fenced: the order, its
-- items (flattened, each line naming its order_sn) and its `created` event in the outbox.
-- The event is the order as the worker serialised it, completed here with the two times
-- only the database clock may decide. Returns one row per committed order; a fenced
-- order_sn has no row, and nothing of it is written.
CREATE FUNCTION commit_created_orders(
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
BEGIN
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
