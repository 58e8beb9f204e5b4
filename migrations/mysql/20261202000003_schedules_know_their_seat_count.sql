-- A schedule knows how many seats it has (fixed at creation), so the seats available on it are
-- that number less its occupied seats, instead of a count over every seat of the schedule.
ALTER TABLE schedules ADD COLUMN seat_count INT NULL;
UPDATE schedules SET seat_count = (SELECT count(*) FROM seats WHERE seats.schedule_id = schedules.id);
ALTER TABLE schedules MODIFY seat_count INT NOT NULL CHECK (seat_count >= 0);
