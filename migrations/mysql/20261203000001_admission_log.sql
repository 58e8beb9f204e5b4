-- The admission log: every token the admission tick admitted, kept with the booking data so that
-- a queue store that lost its data (Redis restarted without persistence, or failed over to an
-- empty replica) can be given its admitted tokens back. Written once per tick that admits; read
-- only when a token is missing from the queue store, or once per line generation. `generation` is
-- the line generation the token was admitted in (when the line's counter began, in microseconds).
CREATE TABLE queue_admissions (
    token        VARCHAR(72) NOT NULL PRIMARY KEY,
    user_id      VARCHAR(64) NOT NULL,
    concert_id   BINARY(16) NOT NULL,
    issued_at    DATETIME(3) NOT NULL,
    admitted_at  DATETIME(3) NOT NULL,
    expires_at   DATETIME(3) NOT NULL,
    generation   BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    KEY queue_admissions_by_concert (concert_id, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
