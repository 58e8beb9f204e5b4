-- no-transaction
-- The index a buyer's own view (`GET /api/v1/me/reservations`: every reservation of the user,
-- newest first) reads, built without blocking holds and payments on a live table.
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_by_user ON reservations (user_id, held_at, id);
