-- The index a buyer's own view (`GET /api/v1/me/reservations`: every reservation of the user,
-- newest first) reads; InnoDB builds it without blocking writes.
CREATE INDEX reservations_by_user ON reservations (user_id, held_at, id);
