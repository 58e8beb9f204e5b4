-- The whole schema of a PostgreSQL deployment: catalog, seats, reservations, wallets and ledger,
-- payments, idempotency keys, and the queue. Times are timestamptz written by the service's
-- clock (never NOW()); money is bigint points.

CREATE TABLE concerts (
    id                 uuid PRIMARY KEY,
    created            bigserial NOT NULL UNIQUE,
    title              text NOT NULL,
    max_active         integer NOT NULL CHECK (max_active > 0),
    admit_batch        integer NOT NULL CHECK (admit_batch > 0),
    admit_interval_ms  bigint NOT NULL CHECK (admit_interval_ms > 0),
    waiting_idle_secs  bigint NOT NULL CHECK (waiting_idle_secs > 0),
    active_ttl_secs    bigint NOT NULL CHECK (active_ttl_secs > 0)
);

CREATE TABLE schedules (
    id          uuid PRIMARY KEY,
    concert_id  uuid NOT NULL REFERENCES concerts (id),
    starts_at   timestamptz NOT NULL
);
CREATE INDEX schedules_by_concert ON schedules (concert_id, starts_at);

-- One row per seat: the only row a hold or a payment of that seat touches.
CREATE TABLE seats (
    id               uuid PRIMARY KEY,
    schedule_id      uuid NOT NULL REFERENCES schedules (id),
    concert_id       uuid NOT NULL REFERENCES concerts (id),
    number           integer NOT NULL CHECK (number > 0),
    price            bigint NOT NULL CHECK (price > 0),
    state            text NOT NULL DEFAULT 'AVAILABLE' CHECK (state IN ('AVAILABLE', 'HELD', 'BOOKED')),
    reservation_id   uuid,
    holder           text,
    hold_expires_at  timestamptz,
    -- Raised by every change of the seat; every write compares it.
    fence            bigint NOT NULL DEFAULT 0,
    -- The highest Redis lock fence that wrote this seat (the Redis-lock claim strategy).
    lock_fence       bigint NOT NULL DEFAULT 0,
    UNIQUE (schedule_id, number),
    CHECK ((state = 'AVAILABLE') = (reservation_id IS NULL)),
    CHECK ((state = 'HELD') = (hold_expires_at IS NOT NULL))
);
CREATE INDEX seats_held_by_deadline ON seats (hold_expires_at) WHERE state = 'HELD';

CREATE TABLE reservations (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL,
    token        text NOT NULL,
    seat_id      uuid NOT NULL REFERENCES seats (id),
    schedule_id  uuid NOT NULL,
    concert_id   uuid NOT NULL,
    price        bigint NOT NULL CHECK (price > 0),
    fence        bigint NOT NULL,
    status       text NOT NULL CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'RELEASED')),
    held_at      timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    -- A seat's fence is granted to one hold only.
    UNIQUE (seat_id, fence)
);
CREATE INDEX reservations_by_token ON reservations (token);
CREATE INDEX reservations_held_by_deadline ON reservations (expires_at) WHERE status = 'HELD';

CREATE TABLE wallets (
    user_id  text PRIMARY KEY,
    balance  bigint NOT NULL CHECK (balance >= 0),
    version  bigint NOT NULL
);

CREATE TABLE ledger (
    id             uuid PRIMARY KEY,
    seq            bigserial NOT NULL,
    user_id        text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT')),
    amount         bigint NOT NULL CHECK (amount > 0),
    balance_after  bigint NOT NULL CHECK (balance_after >= 0),
    at             timestamptz NOT NULL,
    payment_id     uuid
);
CREATE INDEX ledger_by_user ON ledger (user_id, seq);

-- One seat, one sale: a second payment for a seat or a reservation violates a constraint.
CREATE TABLE payments (
    id              uuid PRIMARY KEY,
    reservation_id  uuid NOT NULL UNIQUE REFERENCES reservations (id),
    seat_id         uuid NOT NULL UNIQUE REFERENCES seats (id),
    user_id         text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    at              timestamptz NOT NULL
);

CREATE TABLE idempotency_keys (
    user_id      text NOT NULL,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    outcome      text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

-- The queue, for deployments that keep it in PostgreSQL.
CREATE TABLE queue_tokens (
    token           text PRIMARY KEY,
    user_id         text NOT NULL,
    concert_id      uuid NOT NULL,
    issued_at       timestamptz NOT NULL,
    version         bigint NOT NULL,
    status          text NOT NULL CHECK (status IN ('WAITING', 'ACTIVE', 'EXPIRED')),
    seq             bigint,
    admitted_at     timestamptz,
    expires_at      timestamptz NOT NULL,
    expired_reason  text CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID')),
    -- One token per user per concert.
    UNIQUE (concert_id, user_id)
);
CREATE INDEX queue_line ON queue_tokens (concert_id, seq) WHERE status = 'WAITING';
CREATE INDEX queue_idle ON queue_tokens (expires_at) WHERE status = 'WAITING';
CREATE INDEX queue_active ON queue_tokens (concert_id, expires_at) WHERE status = 'ACTIVE';
CREATE INDEX queue_expired ON queue_tokens (expires_at) WHERE status = 'EXPIRED';
CREATE SEQUENCE queue_seq;

-- The admission state of each concert's line; only admission ticks write it.
CREATE TABLE admission_state (
    concert_id          uuid PRIMARY KEY,
    version             bigint NOT NULL,
    window_started_at   timestamptz,
    admitted_in_window  integer NOT NULL,
    rate_per_sec        double precision NOT NULL
);
