-- no-transaction
-- The seats of a concert changed since a transaction id: what a seat list and a schedule's
-- availability read on every request (`seats_stamp_change`, the migration before). Built
-- CONCURRENTLY (outside a transaction), so a deploy does not block holds and payments.
CREATE INDEX CONCURRENTLY seats_changes ON seats (concert_id, changed_xid);
