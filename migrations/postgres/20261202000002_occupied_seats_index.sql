-- no-transaction
-- A seat list reads, on every request, only the seats that are held or booked (the seat map
-- itself never changes, so the service keeps it): this index holds exactly those, with what the
-- list reads of them, so the read touches no AVAILABLE seat. Built CONCURRENTLY (outside a
-- transaction), so a deploy does not block holds and payments while it builds.
CREATE INDEX CONCURRENTLY seats_occupied ON seats (schedule_id) INCLUDE (number, hold_expires_at)
    WHERE state <> 'AVAILABLE';
