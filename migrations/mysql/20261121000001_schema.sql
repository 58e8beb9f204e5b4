-- The whole schema of a MySQL 8 / MariaDB 10.11 deployment, in the SQL both accept. Ids are
-- BINARY(16) UUIDs, times DATETIME(3) in UTC written by the service's clock (never NOW()),
-- money BIGINT points.

CREATE TABLE concerts (
    id                 BINARY(16) NOT NULL PRIMARY KEY,
    created            BIGINT NOT NULL AUTO_INCREMENT UNIQUE,
    title              VARCHAR(400) NOT NULL,
    max_active         INT NOT NULL CHECK (max_active > 0),
    admit_batch        INT NOT NULL CHECK (admit_batch > 0),
    admit_interval_ms  BIGINT NOT NULL CHECK (admit_interval_ms > 0),
    waiting_idle_secs  BIGINT NOT NULL CHECK (waiting_idle_secs > 0),
    active_ttl_secs    BIGINT NOT NULL CHECK (active_ttl_secs > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE schedules (
    id          BINARY(16) NOT NULL PRIMARY KEY,
    concert_id  BINARY(16) NOT NULL,
    starts_at   DATETIME(3) NOT NULL,
    KEY schedules_by_concert (concert_id, starts_at),
    FOREIGN KEY (concert_id) REFERENCES concerts (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per seat: the only seat row a hold or a payment of that seat touches.
CREATE TABLE seats (
    id               BINARY(16) NOT NULL PRIMARY KEY,
    schedule_id      BINARY(16) NOT NULL,
    concert_id       BINARY(16) NOT NULL,
    number           INT NOT NULL CHECK (number > 0),
    price            BIGINT NOT NULL CHECK (price > 0),
    state            VARCHAR(16) NOT NULL DEFAULT 'AVAILABLE' CHECK (state IN ('AVAILABLE', 'HELD', 'BOOKED')),
    reservation_id   BINARY(16) NULL,
    holder           VARCHAR(64) NULL,
    hold_expires_at  DATETIME(3) NULL,
    -- Raised by every change of the seat; every write compares it.
    fence            BIGINT NOT NULL DEFAULT 0,
    -- The highest Redis lock fence that wrote this seat (the Redis-lock claim strategy).
    lock_fence       BIGINT NOT NULL DEFAULT 0,
    UNIQUE KEY seats_by_number (schedule_id, number),
    KEY seats_held_by_deadline (state, hold_expires_at),
    FOREIGN KEY (schedule_id) REFERENCES schedules (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE reservations (
    id           BINARY(16) NOT NULL PRIMARY KEY,
    user_id      VARCHAR(64) NOT NULL,
    token        VARCHAR(40) NOT NULL,
    seat_id      BINARY(16) NOT NULL,
    schedule_id  BINARY(16) NOT NULL,
    concert_id   BINARY(16) NOT NULL,
    price        BIGINT NOT NULL CHECK (price > 0),
    fence        BIGINT NOT NULL,
    status       VARCHAR(16) NOT NULL CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'RELEASED')),
    held_at      DATETIME(3) NOT NULL,
    expires_at   DATETIME(3) NOT NULL,
    -- A seat's fence is granted to one hold only.
    UNIQUE KEY reservations_by_fence (seat_id, fence),
    KEY reservations_by_token (token, status),
    KEY reservations_held_by_deadline (status, expires_at),
    FOREIGN KEY (seat_id) REFERENCES seats (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per token that ever held, locked to serialise that token's holds (a per-buyer row,
-- not one every buyer shares).
CREATE TABLE token_holds (
    token  VARCHAR(40) NOT NULL PRIMARY KEY
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE wallets (
    user_id  VARCHAR(64) NOT NULL PRIMARY KEY,
    balance  BIGINT NOT NULL CHECK (balance >= 0),
    version  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE ledger (
    id             BINARY(16) NOT NULL PRIMARY KEY,
    seq            BIGINT NOT NULL AUTO_INCREMENT UNIQUE,
    user_id        VARCHAR(64) NOT NULL,
    kind           VARCHAR(16) NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT')),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    balance_after  BIGINT NOT NULL CHECK (balance_after >= 0),
    at             DATETIME(3) NOT NULL,
    payment_id     BINARY(16) NULL,
    KEY ledger_by_user (user_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One seat, one sale: a second payment for a seat or a reservation violates a key.
CREATE TABLE payments (
    id              BINARY(16) NOT NULL PRIMARY KEY,
    reservation_id  BINARY(16) NOT NULL UNIQUE,
    seat_id         BINARY(16) NOT NULL UNIQUE,
    user_id         VARCHAR(64) NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    at              DATETIME(3) NOT NULL,
    FOREIGN KEY (reservation_id) REFERENCES reservations (id),
    FOREIGN KEY (seat_id) REFERENCES seats (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE idempotency_keys (
    user_id      VARCHAR(64) NOT NULL,
    `key`        VARCHAR(128) NOT NULL,
    fingerprint  VARCHAR(200) NOT NULL,
    outcome      TEXT NOT NULL,
    created_at   DATETIME(3) NOT NULL,
    expires_at   DATETIME(3) NOT NULL,
    PRIMARY KEY (user_id, `key`),
    KEY idempotency_keys_by_expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The queue, for deployments that keep it in MySQL. `seq` orders the line.
CREATE TABLE queue_tokens (
    token           VARCHAR(40) NOT NULL PRIMARY KEY,
    seq             BIGINT NOT NULL AUTO_INCREMENT UNIQUE,
    user_id         VARCHAR(64) NOT NULL,
    concert_id      BINARY(16) NOT NULL,
    issued_at       DATETIME(3) NOT NULL,
    version         BIGINT NOT NULL,
    status          VARCHAR(16) NOT NULL CHECK (status IN ('WAITING', 'ACTIVE', 'EXPIRED')),
    admitted_at     DATETIME(3) NULL,
    expires_at      DATETIME(3) NOT NULL,
    expired_reason  VARCHAR(16) NULL CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID')),
    -- One token per user per concert.
    UNIQUE KEY queue_user (concert_id, user_id),
    KEY queue_line (concert_id, status, seq),
    KEY queue_expiry (status, expires_at),
    KEY queue_active (concert_id, status, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- The admission state of each concert's line; only admission ticks write it.
CREATE TABLE admission_state (
    concert_id          BINARY(16) NOT NULL PRIMARY KEY,
    version             BIGINT NOT NULL,
    window_started_at   DATETIME(3) NULL,
    admitted_in_window  INT NOT NULL,
    rate_per_sec        DOUBLE NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
