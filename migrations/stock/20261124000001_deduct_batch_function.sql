-- One batch of deducts (the `batch` strategy) in one statement, so one round trip: the
-- writer sent BEGIN, three statements and COMMIT, five round trips to this server, each a
-- wake-up of the backend and of the worker; at low load they were most of a deduct's time.
-- The steps and their order are those of workers/stock/src/strategies/batch.rs, which calls
-- this and turns its rows into answers:
--
-- 1. claim every order's sell record, ascending order_sn (a duplicate in flight in another
--    process waits on the key);
-- 2. an order whose record existed gets it back, read FOR UPDATE (verdict 'repeated': the
--    worker compares items and status), so a concurrent return waits for this batch;
-- 3. lock the counts of every goods the new orders name, FOR UPDATE, ascending goods_id;
-- 4. decide each new order in arrival order against those counts: taken whole, or refused
--    alone with its first unknown ('not_found') or short ('insufficient') goods;
-- 5. delete the refused orders' claims, subtract the summed quantity per goods
--    (version + 1), one 'deduct' ledger row per goods per taken order.
--
-- The lines of all orders come flat: order i has line_count[i] lines, in ascending goods_id,
-- following those of order i - 1. Every order_sn occurs once (the worker checks).
CREATE FUNCTION stock_deduct_batch(
    sns        BIGINT[],
    items      TEXT[],
    line_count INT[],
    line_goods BIGINT[],
    line_qty   BIGINT[]
) RETURNS TABLE (
    r_sn        BIGINT,
    r_verdict   TEXT,
    r_goods     BIGINT,
    r_requested BIGINT,
    r_available BIGINT,
    r_status    TEXT,
    r_items     TEXT
)
LANGUAGE plpgsql AS $$
DECLARE
    claimed     BIGINT[];
    is_new      BOOLEAN[];
    wanted      BIGINT[] := '{}';
    goods       BIGINT[] := '{}';
    avail       BIGINT[] := '{}';
    refused     BIGINT[] := '{}';
    taken_sn    BIGINT[] := '{}';
    taken_goods BIGINT[] := '{}';
    taken_qty   BIGINT[] := '{}';
    g           BIGINT;
    a           BIGINT;
    k           INT;
    pos         INT := 1;
    ok          BOOLEAN;
    expected    BIGINT;
    updated     BIGINT;
BEGIN
    -- 1. Claims.
    WITH inserted AS (
        INSERT INTO sell_records (order_sn, status, items)
        SELECT t.sn, 'deducted', t.items::jsonb
        FROM unnest(sns, items) AS t(sn, items)
        ORDER BY t.sn
        ON CONFLICT (order_sn) DO NOTHING
        RETURNING sell_records.order_sn
    )
    SELECT coalesce(array_agg(inserted.order_sn), '{}') INTO claimed FROM inserted;
    SELECT coalesce(array_agg(t.sn = ANY (claimed) ORDER BY t.i), '{}')
    INTO is_new
    FROM unnest(sns) WITH ORDINALITY AS t(sn, i);

    -- 2. Earlier answers.
    RETURN QUERY
        SELECT s.order_sn, 'repeated'::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT,
               s.status, s.items::TEXT
        FROM sell_records s
        WHERE s.order_sn = ANY (sns) AND NOT s.order_sn = ANY (claimed)
        ORDER BY s.order_sn
        FOR UPDATE;

    IF cardinality(claimed) = 0 THEN
        RETURN;
    END IF;

    -- 3. Row locks on the new orders' goods.
    FOR i IN 1 .. cardinality(sns) LOOP
        IF is_new[i] THEN
            wanted := wanted || line_goods[pos : pos + line_count[i] - 1];
        END IF;
        pos := pos + line_count[i];
    END LOOP;
    pos := 1;
    FOR g, a IN
        SELECT s.goods_id, s.available FROM stock s
        WHERE s.goods_id = ANY (wanted)
        ORDER BY s.goods_id
        FOR UPDATE
    LOOP
        goods := goods || g;
        avail := avail || a;
    END LOOP;

    -- 4. Decisions, in arrival order.
    FOR i IN 1 .. cardinality(sns) LOOP
        IF is_new[i] THEN
            ok := TRUE;
            FOR j IN pos .. pos + line_count[i] - 1 LOOP
                k := array_position(goods, line_goods[j]);
                IF k IS NULL OR avail[k] < line_qty[j] THEN
                    r_sn := sns[i];
                    r_verdict := CASE WHEN k IS NULL THEN 'not_found' ELSE 'insufficient' END;
                    r_goods := line_goods[j];
                    r_requested := line_qty[j];
                    r_available := CASE WHEN k IS NULL THEN NULL ELSE avail[k] END;
                    r_status := NULL;
                    r_items := NULL;
                    RETURN NEXT;
                    ok := FALSE;
                    EXIT;
                END IF;
            END LOOP;
            IF ok THEN
                FOR j IN pos .. pos + line_count[i] - 1 LOOP
                    k := array_position(goods, line_goods[j]);
                    avail[k] := avail[k] - line_qty[j];
                    taken_sn := taken_sn || sns[i];
                    taken_goods := taken_goods || line_goods[j];
                    taken_qty := taken_qty || line_qty[j];
                END LOOP;
                r_sn := sns[i];
                r_verdict := 'deducted';
                r_goods := NULL;
                r_requested := NULL;
                r_available := NULL;
                r_status := NULL;
                r_items := NULL;
                RETURN NEXT;
            ELSE
                refused := refused || sns[i];
            END IF;
        END IF;
        pos := pos + line_count[i];
    END LOOP;

    -- 5. Writes.
    DELETE FROM sell_records s WHERE s.order_sn = ANY (refused);
    IF cardinality(taken_sn) > 0 THEN
        UPDATE stock s
        SET available = s.available - t.q, sold = s.sold + t.q,
            version = s.version + 1, updated_at = now()
        FROM (SELECT x.g, sum(x.q) AS q FROM unnest(taken_goods, taken_qty) AS x(g, q) GROUP BY x.g) t
        WHERE s.goods_id = t.g;
        GET DIAGNOSTICS updated = ROW_COUNT;
        SELECT count(DISTINCT x) INTO expected FROM unnest(taken_goods) AS x;
        -- The rows were locked above and stock rows are never deleted: a mismatch is a bug,
        -- and raising rolls the whole batch back rather than answer for an untaken goods.
        IF updated <> expected THEN
            RAISE EXCEPTION 'batch updated % of % locked stock rows', updated, expected;
        END IF;
        INSERT INTO stock_ledger (kind, goods_id, delta_available, delta_sold, order_sn)
        SELECT 'deduct', x.g, -x.q, x.q, x.sn
        FROM unnest(taken_sn, taken_goods, taken_qty) AS x(sn, g, q);
    END IF;
END;
$$;
