-- The admission log: every token the admission tick admitted, kept with the booking data so that
-- a queue store that lost its data (Redis restarted without persistence, or failed over to an
-- empty replica) can be given its admitted tokens back. Written once per tick that admits; read
-- only when a token is missing from the queue store, or once per line generation. `generation` is
-- the line generation the token was admitted in (when the line's counter began, in microseconds).
CREATE TABLE queue_admissions (
    token        text PRIMARY KEY,
    user_id      text NOT NULL,
    concert_id   uuid NOT NULL,
    issued_at    timestamptz NOT NULL,
    admitted_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    generation   bigint NOT NULL,
    version      bigint NOT NULL
);
CREATE INDEX queue_admissions_by_concert ON queue_admissions (concert_id, expires_at);
