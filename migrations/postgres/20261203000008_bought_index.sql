-- no-transaction
-- The index a payment's count of the buyer's confirmed reservations of a concert reads (the
-- per-buyer cap, two migrations before), built without blocking holds and payments on a live
-- table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_bought_by_user ON reservations (user_id, concert_id)
    WHERE status = 'CONFIRMED';
