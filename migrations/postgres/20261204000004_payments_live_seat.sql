-- no-transaction
-- A seat is paid by at most one live (not refunded) payment; a refunded seat may be sold again.
-- Built without blocking payments on a live table; the old UNIQUE on the seat goes next.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS payments_live_seat ON payments (seat_id) WHERE refunded_at IS NULL;
