-- Steps took locks in ways that made concurrent requests deadlock where they need not, and
-- InnoDB then rolled one back (error 1213, a lost race the service tries again, up to its retry
-- limit, which twenty racing payers of one hold, and sixteen buyers holding different seats, each
-- once exhausted in CI).
--
-- 1. An idempotency record is stored without locking the gap where its key goes.
--
-- The first version deleted an expired record of the key before inserting the new one. Under
-- REPEATABLE READ, a DELETE that finds no row locks the gap where the row would be, and gap locks
-- do not exclude one another but do exclude inserts: two requests of one user under
-- neighbouring keys (a buyer's retries, the losers of racing payments storing their refusals)
-- each locked the gap and then each waited to insert into it, and InnoDB rolled one back as a
-- deadlock, again and again. Now a consistent read (a plain SELECT), which takes no lock, looks
-- for an expired record first, and only one that exists is deleted (a unique search that finds
-- its row locks only that row). A live record of the key still makes the INSERT fail (1062, a
-- lost race).
DROP PROCEDURE IF EXISTS ticketing_put_key;
CREATE PROCEDURE ticketing_put_key(
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_created_at DATETIME(3), IN p_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    DECLARE expired INT DEFAULT 0;
    IF p_key IS NOT NULL THEN
        -- A plain SELECT: in a procedure, a query in an IF condition is a locking read.
        SELECT COUNT(*) INTO expired FROM idempotency_keys
         WHERE user_id = p_user AND `key` = p_key AND expires_at <= p_created_at;
        IF expired > 0 THEN
            DELETE FROM idempotency_keys WHERE user_id = p_user AND `key` = p_key AND expires_at <= p_created_at;
        END IF;
        INSERT INTO idempotency_keys (user_id, `key`, fingerprint, outcome, created_at, expires_at)
        VALUES (p_user, p_key, p_fingerprint, p_outcome, p_created_at, p_expires_at);
    END IF;
END;

-- 2. A hold locks its token's row exclusively at once. It was `INSERT IGNORE` and then
-- `SELECT … FOR UPDATE`: on an existing row the first takes a shared lock, so two holds of one
-- token both held it shared and each waited for the other to upgrade. `INSERT … ON DUPLICATE
-- KEY UPDATE` takes the exclusive lock on the existing row in one go.
--
-- 3. A hold counts its token's open holds with a plain (consistent) read. The count was a
-- locking read (`LOCK IN SHARE MODE`), and InnoDB may answer it from the index of every HELD
-- reservation by deadline: it then locked, shared, every held reservation of every buyer and the
-- gaps between them, so every other buyer's hold, inserting its reservation into that index,
-- waited for it, and two such holds deadlocked. The token's row lock (2.) already serialises the
-- holds of one token, and the count's snapshot is taken after that lock is granted (it is the
-- transaction's first plain read), so it sees every earlier hold of the token; a release or a
-- payment committing meanwhile can only make it count one more, never fewer. Otherwise
-- unchanged.
DROP PROCEDURE IF EXISTS ticketing_claim_seat;
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
    -- Holds of one token are serialised on the token's own row (locked exclusively at once); the
    -- count is a plain read, whose snapshot is taken now, after that lock (see 3. above).
    INSERT INTO token_holds (token) VALUES (p_token) ON DUPLICATE KEY UPDATE token = token;
    SELECT COUNT(*) INTO open_holds FROM reservations
     WHERE token = p_token AND (status = 'CONFIRMED' OR (status = 'HELD' AND expires_at > p_now));
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
