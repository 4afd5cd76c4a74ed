-- goods ids are JSON numbers (CONTRACT section 1: below 2^53). The identity stops at the
-- largest such id, so a create after an admin used an id near the top is refused with
-- `conflict` (SQLSTATE 2200H) instead of storing an id no reply can carry.
ALTER TABLE goods ALTER COLUMN goods_id SET MAXVALUE 9007199254740991;
