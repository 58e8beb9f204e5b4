-- A schedule knows how many seats it has (fixed at creation), so the seats available on it are
-- that number less its occupied seats, counted from the partial index `seats_occupied` instead
-- of over every seat of the schedule.
ALTER TABLE schedules ADD COLUMN seat_count integer;
UPDATE schedules SET seat_count = (SELECT count(*) FROM seats WHERE seats.schedule_id = schedules.id);
ALTER TABLE schedules ALTER COLUMN seat_count SET NOT NULL;
ALTER TABLE schedules ADD CHECK (seat_count >= 0);
