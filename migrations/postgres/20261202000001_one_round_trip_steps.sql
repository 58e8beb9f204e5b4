-- Each write step of the store as one function, so that a step is one statement and one network
-- round trip (the function runs in the statement's own transaction: all or nothing), where it
-- was a transaction of four to eight statements, each a round trip. The same steps, with the
-- same arguments in the same order, as MySQL's procedures; ticketing-core/src/store/sql_steps.rs
-- calls both.
--
-- The functions decide nothing: the service's pure rules planned the write; a function writes
-- the plan only where what it was planned from is unchanged (a fence, a version, a status) and
-- raises otherwise:
--   SQLSTATE 'TKCNF' — a compare-and-set lost; the message names what (seat, reservation,
--                      wallet, idempotency key); the service reads again and re-decides.
--   SQLSTATE 'TKLIM' — the token already has as many open holds as the plan allows.
-- Unique violations (23505) still report the races a constraint decides. Every time comes from
-- the caller (never NOW()); row locks are taken in the order seat, reservation, wallet.

-- An idempotency record, unless a live one exists for the key (a record past its lifetime is
-- replaced). A NULL key stores nothing.
CREATE FUNCTION ticketing_put_key(
    p_user text, p_key text, p_fingerprint text, p_outcome text,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO idempotency_keys (user_id, key, fingerprint, outcome, created_at, expires_at)
    VALUES (p_user, p_key, p_fingerprint, p_outcome, p_created_at, p_expires_at)
    ON CONFLICT (user_id, key) DO UPDATE
       SET fingerprint = EXCLUDED.fingerprint, outcome = EXCLUDED.outcome,
           created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
     WHERE idempotency_keys.expires_at <= EXCLUDED.created_at;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency key' USING ERRCODE = 'TKCNF';
    END IF;
END $$;

-- The outcome of a refused request (the step `save_outcome`).
CREATE FUNCTION ticketing_save_outcome(
    p_user text, p_key text, p_fingerprint text, p_outcome text,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ticketing_put_key(p_user, p_key, p_fingerprint, p_outcome, p_created_at, p_expires_at);
END $$;

-- A wallet written if its version is still p_expected (a wallet never written has version 0 and
-- no row), and its ledger entry.
CREATE FUNCTION ticketing_put_wallet(
    p_user text, p_expected bigint, p_balance bigint, p_version bigint,
    p_entry uuid, p_entry_user text, p_kind text, p_amount bigint, p_balance_after bigint,
    p_at timestamptz, p_payment uuid
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_expected = 0 THEN
        INSERT INTO wallets (user_id, balance, version) VALUES (p_user, p_balance, p_version)
        ON CONFLICT (user_id) DO NOTHING;
    ELSE
        UPDATE wallets SET balance = p_balance, version = p_version
         WHERE user_id = p_user AND version = p_expected;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet' USING ERRCODE = 'TKCNF';
    END IF;
    INSERT INTO ledger (id, user_id, kind, amount, balance_after, at, payment_id)
    VALUES (p_entry, p_entry_user, p_kind, p_amount, p_balance_after, p_at, p_payment);
END $$;

-- A charge: the wallet, its entry and the request's key.
CREATE FUNCTION ticketing_apply_charge(
    p_user text, p_expected bigint, p_balance bigint, p_version bigint,
    p_entry uuid, p_entry_user text, p_kind text, p_amount bigint, p_balance_after bigint,
    p_at timestamptz, p_key_user text, p_key text, p_fingerprint text, p_outcome text, p_key_created_at timestamptz,
    p_key_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ticketing_put_wallet(p_user, p_expected, p_balance, p_version,
                                 p_entry, p_entry_user, p_kind, p_amount, p_balance_after, p_at, NULL);
    PERFORM ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome,
                              p_key_created_at, p_key_expires_at);
END $$;

-- A hold. p_strategy chooses what runs in front of the seat's compare-and-set ('for-update':
-- lock the row and compare its fence; 'advisory': a transaction lock keyed by the seat;
-- anything else: nothing). p_lock_fence is an external lock's fence (0: none); the write then
-- also requires it to be newer than every fence that wrote the seat before.
CREATE FUNCTION ticketing_claim_seat(
    p_strategy text, p_seat uuid, p_expected_fence bigint, p_lock_fence bigint,
    p_reservation uuid, p_user text, p_token text, p_schedule uuid, p_concert uuid,
    p_price bigint, p_fence bigint, p_held_at timestamptz, p_expires_at timestamptz,
    p_now timestamptz, p_holds_per_token integer, p_supersedes uuid,
    p_key_user text, p_key text, p_fingerprint text, p_outcome text, p_key_created_at timestamptz,
    p_key_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    current_fence bigint;
    open_holds bigint;
BEGIN
    IF p_strategy = 'for-update' THEN
        SELECT fence INTO current_fence FROM seats WHERE id = p_seat FOR UPDATE;
        IF current_fence IS DISTINCT FROM p_expected_fence THEN
            RAISE EXCEPTION 'seat' USING ERRCODE = 'TKCNF';
        END IF;
    ELSIF p_strategy = 'advisory' THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_seat::text, 1));
    END IF;
    UPDATE seats SET state = 'HELD', reservation_id = p_reservation, holder = p_user,
                     hold_expires_at = p_expires_at, fence = p_fence,
                     lock_fence = GREATEST(lock_fence, p_lock_fence)
     WHERE id = p_seat AND fence = p_expected_fence AND (p_lock_fence = 0 OR lock_fence < p_lock_fence);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'seat' USING ERRCODE = 'TKCNF';
    END IF;
    -- Holds of one token are serialised by a lock keyed by the token (a per-buyer lock, not a
    -- row every buyer shares), so the count cannot be raced by the same token.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_token, 2));
    SELECT count(*) INTO open_holds FROM reservations
     WHERE token = p_token AND (status = 'CONFIRMED' OR (status = 'HELD' AND expires_at > p_now));
    IF open_holds >= p_holds_per_token THEN
        RAISE EXCEPTION 'hold limit' USING ERRCODE = 'TKLIM';
    END IF;
    IF p_supersedes IS NOT NULL THEN
        UPDATE reservations SET status = 'EXPIRED' WHERE id = p_supersedes AND status = 'HELD';
    END IF;
    INSERT INTO reservations (id, user_id, token, seat_id, schedule_id, concert_id, price, fence,
                              status, held_at, expires_at)
    VALUES (p_reservation, p_user, p_token, p_seat, p_schedule, p_concert, p_price, p_fence,
            'HELD', p_held_at, p_expires_at);
    PERFORM ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome,
                              p_key_created_at, p_key_expires_at);
END $$;

-- Frees a held seat if its fence and reservation are unchanged.
CREATE FUNCTION ticketing_release_seat(p_seat uuid, p_expected_fence bigint, p_reservation uuid)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE seats SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL,
                     hold_expires_at = NULL, fence = fence + 1
     WHERE id = p_seat AND fence = p_expected_fence AND reservation_id = p_reservation
       AND state = 'HELD';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'seat' USING ERRCODE = 'TKCNF';
    END IF;
    UPDATE reservations SET status = 'RELEASED' WHERE id = p_reservation AND status = 'HELD';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation' USING ERRCODE = 'TKCNF';
    END IF;
END $$;

-- A payment: seat booked, reservation confirmed, wallet debited with its entry, the payment
-- and the request's key.
CREATE FUNCTION ticketing_commit_payment(
    p_seat uuid, p_expected_fence bigint, p_reservation uuid, p_new_fence bigint,
    p_user text, p_expected_version bigint, p_balance bigint, p_version bigint,
    p_entry uuid, p_entry_user text, p_kind text, p_amount bigint, p_balance_after bigint,
    p_at timestamptz, p_payment uuid, p_payment_reservation uuid, p_payment_seat uuid,
    p_payment_user text, p_payment_amount bigint, p_payment_at timestamptz,
    p_key_user text, p_key text, p_fingerprint text, p_outcome text, p_key_created_at timestamptz,
    p_key_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE seats SET state = 'BOOKED', holder = NULL, hold_expires_at = NULL, fence = p_new_fence
     WHERE id = p_seat AND fence = p_expected_fence AND reservation_id = p_reservation
       AND state = 'HELD';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'seat' USING ERRCODE = 'TKCNF';
    END IF;
    UPDATE reservations SET status = 'CONFIRMED' WHERE id = p_reservation AND status = 'HELD';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation' USING ERRCODE = 'TKCNF';
    END IF;
    PERFORM ticketing_put_wallet(p_user, p_expected_version, p_balance, p_version,
                                 p_entry, p_entry_user, p_kind, p_amount, p_balance_after, p_at,
                                 p_payment);
    INSERT INTO payments (id, reservation_id, seat_id, user_id, amount, at)
    VALUES (p_payment, p_payment_reservation, p_payment_seat, p_payment_user, p_payment_amount,
            p_payment_at);
    PERFORM ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome,
                              p_key_created_at, p_key_expires_at);
END $$;
