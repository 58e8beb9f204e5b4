-- Each write step of the store as one stored procedure, so that a step is one `CALL` and one
-- network round trip where it was BEGIN, three to nine statements and COMMIT, each a round
-- trip. The same steps, with the same arguments in the same order, as PostgreSQL's functions
-- (migrations/postgres/20261202000001_one_round_trip_steps.sql).
--
-- The procedures decide nothing: the service's pure rules planned the write; a procedure writes
-- the plan only where what it was planned from is unchanged (a fence, a version, a status) and
-- signals otherwise, after rolling its transaction back:
--   SQLSTATE 'TKCNF' — a compare-and-set lost; the message names what (seat, reservation,
--                      wallet, idempotency key); the service reads again and re-decides.
--   SQLSTATE 'TKLIM' — the token already has as many open holds as the plan allows.
-- String parameters are utf8mb4 with that character set's default collation, as every table's
-- columns are, whatever the database's defaults. Procedures run with the caller's rights
-- (SQL SECURITY INVOKER), so they do not depend on the account that ran the migration.
-- Duplicate keys (1062), deadlocks (1213) and lock wait timeouts (1205) still report the races
-- InnoDB decides. Under REPEATABLE READ every write is a compare-and-set and every deciding read
-- is a locking read, as before. Every time comes from the caller (never NOW()); row locks are
-- taken in the order seat, reservation, wallet.

-- An idempotency record, unless a live one exists for the key (the primary key refuses it; a
-- record past its lifetime is replaced). A NULL key stores nothing. Runs inside its caller's
-- transaction.
CREATE PROCEDURE ticketing_put_key(
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_created_at DATETIME(3), IN p_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    IF p_key IS NOT NULL THEN
        DELETE FROM idempotency_keys WHERE user_id = p_user AND `key` = p_key AND expires_at <= p_created_at;
        INSERT INTO idempotency_keys (user_id, `key`, fingerprint, outcome, created_at, expires_at)
        VALUES (p_user, p_key, p_fingerprint, p_outcome, p_created_at, p_expires_at);
    END IF;
END;

-- The outcome of a refused request, in a transaction of its own.
CREATE PROCEDURE ticketing_save_outcome(
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_created_at DATETIME(3), IN p_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    CALL ticketing_put_key(p_user, p_key, p_fingerprint, p_outcome, p_created_at, p_expires_at);
    COMMIT;
END;

-- A wallet written if its version is still p_expected (a wallet never written has version 0 and
-- no row: the insert's primary key refuses a second first write), and its ledger entry. Runs
-- inside its caller's transaction.
CREATE PROCEDURE ticketing_put_wallet(
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_expected BIGINT, IN p_balance BIGINT, IN p_version BIGINT,
    IN p_entry BINARY(16), IN p_entry_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_kind VARCHAR(16) CHARACTER SET utf8mb4, IN p_amount BIGINT,
    IN p_balance_after BIGINT, IN p_at DATETIME(3), IN p_payment BINARY(16)
)
SQL SECURITY INVOKER
BEGIN
    IF p_expected = 0 THEN
        INSERT INTO wallets (user_id, balance, version) VALUES (p_user, p_balance, p_version);
    ELSE
        UPDATE wallets SET balance = p_balance, version = p_version
         WHERE user_id = p_user AND version = p_expected;
        IF ROW_COUNT() <> 1 THEN
            SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'wallet';
        END IF;
    END IF;
    INSERT INTO ledger (id, user_id, kind, amount, balance_after, at, payment_id)
    VALUES (p_entry, p_entry_user, p_kind, p_amount, p_balance_after, p_at, p_payment);
END;

-- A charge: the wallet, its entry and the request's key.
CREATE PROCEDURE ticketing_apply_charge(
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_expected BIGINT, IN p_balance BIGINT, IN p_version BIGINT,
    IN p_entry BINARY(16), IN p_entry_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_kind VARCHAR(16) CHARACTER SET utf8mb4, IN p_amount BIGINT,
    IN p_balance_after BIGINT, IN p_at DATETIME(3),
    IN p_key_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_key_created_at DATETIME(3), IN p_key_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    CALL ticketing_put_wallet(p_user, p_expected, p_balance, p_version, p_entry, p_entry_user, p_kind,
                              p_amount, p_balance_after, p_at, NULL);
    CALL ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome, p_key_created_at, p_key_expires_at);
    COMMIT;
END;

-- A hold. p_strategy 'for-update' locks the seat's row and compares its fence first (the
-- named-lock strategy takes its lock around the call). p_lock_fence is an external lock's fence
-- (0: none); the write then also requires it to be newer than every fence that wrote the seat.
CREATE PROCEDURE ticketing_claim_seat(
    IN p_strategy VARCHAR(16) CHARACTER SET utf8mb4, IN p_seat BINARY(16), IN p_expected_fence BIGINT, IN p_lock_fence BIGINT,
    IN p_reservation BINARY(16), IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_token VARCHAR(72) CHARACTER SET utf8mb4, IN p_schedule BINARY(16),
    IN p_concert BINARY(16), IN p_price BIGINT, IN p_fence BIGINT, IN p_held_at DATETIME(3),
    IN p_expires_at DATETIME(3), IN p_now DATETIME(3), IN p_holds_per_token INT, IN p_supersedes BINARY(16),
    IN p_key_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_key_created_at DATETIME(3), IN p_key_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    DECLARE current_fence BIGINT DEFAULT NULL;
    DECLARE locked_token VARCHAR(72) CHARACTER SET utf8mb4;
    DECLARE open_holds BIGINT;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    IF p_strategy = 'for-update' THEN
        SELECT fence INTO current_fence FROM seats WHERE id = p_seat FOR UPDATE;
        IF current_fence IS NULL OR current_fence <> p_expected_fence THEN
            SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'seat';
        END IF;
    END IF;
    UPDATE seats SET state = 'HELD', reservation_id = p_reservation, holder = p_user,
                     hold_expires_at = p_expires_at, fence = p_fence,
                     lock_fence = GREATEST(lock_fence, p_lock_fence)
     WHERE id = p_seat AND fence = p_expected_fence AND (p_lock_fence = 0 OR lock_fence < p_lock_fence);
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'seat';
    END IF;
    -- Holds of one token are serialised on the token's own row, and the count is a locking
    -- read: under REPEATABLE READ a plain SELECT could count from an old snapshot.
    INSERT IGNORE INTO token_holds (token) VALUES (p_token);
    SELECT token INTO locked_token FROM token_holds WHERE token = p_token FOR UPDATE;
    SELECT COUNT(*) INTO open_holds FROM reservations
     WHERE token = p_token AND (status = 'CONFIRMED' OR (status = 'HELD' AND expires_at > p_now))
     LOCK IN SHARE MODE;
    IF open_holds >= p_holds_per_token THEN
        SIGNAL SQLSTATE 'TKLIM' SET MESSAGE_TEXT = 'hold limit';
    END IF;
    IF p_supersedes IS NOT NULL THEN
        UPDATE reservations SET status = 'EXPIRED' WHERE id = p_supersedes AND status = 'HELD';
    END IF;
    INSERT INTO reservations (id, user_id, token, seat_id, schedule_id, concert_id, price, fence,
                              status, held_at, expires_at)
    VALUES (p_reservation, p_user, p_token, p_seat, p_schedule, p_concert, p_price, p_fence,
            'HELD', p_held_at, p_expires_at);
    CALL ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome, p_key_created_at, p_key_expires_at);
    COMMIT;
END;

-- Frees a held seat if its fence and reservation are unchanged.
CREATE PROCEDURE ticketing_release_seat(IN p_seat BINARY(16), IN p_expected_fence BIGINT, IN p_reservation BINARY(16))
SQL SECURITY INVOKER
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    UPDATE seats SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL,
                     hold_expires_at = NULL, fence = fence + 1
     WHERE id = p_seat AND fence = p_expected_fence AND reservation_id = p_reservation
       AND state = 'HELD';
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'seat';
    END IF;
    UPDATE reservations SET status = 'RELEASED' WHERE id = p_reservation AND status = 'HELD';
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'reservation';
    END IF;
    COMMIT;
END;

-- A payment: seat booked, reservation confirmed, wallet debited with its entry, the payment
-- and the request's key.
CREATE PROCEDURE ticketing_commit_payment(
    IN p_seat BINARY(16), IN p_expected_fence BIGINT, IN p_reservation BINARY(16), IN p_new_fence BIGINT,
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_expected_version BIGINT, IN p_balance BIGINT, IN p_version BIGINT,
    IN p_entry BINARY(16), IN p_entry_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_kind VARCHAR(16) CHARACTER SET utf8mb4, IN p_amount BIGINT,
    IN p_balance_after BIGINT, IN p_at DATETIME(3), IN p_payment BINARY(16),
    IN p_payment_reservation BINARY(16), IN p_payment_seat BINARY(16), IN p_payment_user VARCHAR(64) CHARACTER SET utf8mb4,
    IN p_payment_amount BIGINT, IN p_payment_at DATETIME(3),
    IN p_key_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_key_created_at DATETIME(3), IN p_key_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    UPDATE seats SET state = 'BOOKED', holder = NULL, hold_expires_at = NULL, fence = p_new_fence
     WHERE id = p_seat AND fence = p_expected_fence AND reservation_id = p_reservation
       AND state = 'HELD';
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'seat';
    END IF;
    UPDATE reservations SET status = 'CONFIRMED' WHERE id = p_reservation AND status = 'HELD';
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'reservation';
    END IF;
    CALL ticketing_put_wallet(p_user, p_expected_version, p_balance, p_version, p_entry, p_entry_user,
                              p_kind, p_amount, p_balance_after, p_at, p_payment);
    INSERT INTO payments (id, reservation_id, seat_id, user_id, amount, at)
    VALUES (p_payment, p_payment_reservation, p_payment_seat, p_payment_user, p_payment_amount, p_payment_at);
    CALL ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome, p_key_created_at, p_key_expires_at);
    COMMIT;
END;
