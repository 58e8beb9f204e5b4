-- Cancellation and refunds (issue 16): a paid booking can be cancelled, its seat sold again, its
-- points given back with a REFUND ledger entry; the reservation keeps its history as CANCELLED
-- and its payment is marked refunded.
--
-- A seat is paid by at most one live payment: `live_seat_id` is the seat while the payment is not
-- refunded and NULL after (a UNIQUE index admits many NULLs), replacing the seat's UNIQUE (an
-- ordinary index keeps the seat's foreign key indexed).
ALTER TABLE payments
    ADD COLUMN refunded_at DATETIME(3) NULL,
    ADD COLUMN live_seat_id BINARY(16) AS (IF(refunded_at IS NULL, seat_id, NULL)) STORED,
    ADD UNIQUE KEY payments_live_seat (live_seat_id),
    ADD KEY payments_by_seat (seat_id);
ALTER TABLE payments DROP INDEX seat_id;

-- The status and kind CHECKs take CANCELLED and REFUND. As for the expiry reasons (migration
-- `…0007`): MariaDB keeps a column's CHECK with the column, and MODIFY replaces it; MySQL 8 keeps
-- it as a table constraint, found by its clause and dropped first. MODIFY rebuilds the table:
-- run it outside a sale.
DROP PROCEDURE IF EXISTS ticketing_drop_status_check;
CREATE PROCEDURE ticketing_drop_status_check()
SQL SECURITY INVOKER
BEGIN
    DECLARE v_name VARCHAR(64) DEFAULT NULL;
    SELECT tc.CONSTRAINT_NAME INTO v_name
      FROM information_schema.TABLE_CONSTRAINTS tc
      JOIN information_schema.CHECK_CONSTRAINTS cc
        ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
     WHERE tc.TABLE_SCHEMA = DATABASE() AND tc.TABLE_NAME = 'reservations'
       AND tc.CONSTRAINT_TYPE = 'CHECK' AND cc.CHECK_CLAUSE LIKE '%RELEASED%'
       AND tc.CONSTRAINT_NAME <> 'status'
     LIMIT 1;
    IF v_name IS NOT NULL THEN
        SET @ticketing_drop_check = CONCAT('ALTER TABLE reservations DROP CHECK `', v_name, '`');
        PREPARE drop_check FROM @ticketing_drop_check;
        EXECUTE drop_check;
        DEALLOCATE PREPARE drop_check;
    END IF;
END;
CALL ticketing_drop_status_check();
DROP PROCEDURE ticketing_drop_status_check;

ALTER TABLE reservations MODIFY status VARCHAR(16) NOT NULL
    CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'RELEASED', 'CANCELLED'));

DROP PROCEDURE IF EXISTS ticketing_drop_kind_check;
CREATE PROCEDURE ticketing_drop_kind_check()
SQL SECURITY INVOKER
BEGIN
    DECLARE v_name VARCHAR(64) DEFAULT NULL;
    SELECT tc.CONSTRAINT_NAME INTO v_name
      FROM information_schema.TABLE_CONSTRAINTS tc
      JOIN information_schema.CHECK_CONSTRAINTS cc
        ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
     WHERE tc.TABLE_SCHEMA = DATABASE() AND tc.TABLE_NAME = 'ledger'
       AND tc.CONSTRAINT_TYPE = 'CHECK' AND cc.CHECK_CLAUSE LIKE '%PAYMENT%'
       AND tc.CONSTRAINT_NAME <> 'kind'
     LIMIT 1;
    IF v_name IS NOT NULL THEN
        SET @ticketing_drop_check = CONCAT('ALTER TABLE ledger DROP CHECK `', v_name, '`');
        PREPARE drop_check FROM @ticketing_drop_check;
        EXECUTE drop_check;
        DEALLOCATE PREPARE drop_check;
    END IF;
END;
CALL ticketing_drop_kind_check();
DROP PROCEDURE ticketing_drop_kind_check;

ALTER TABLE ledger MODIFY kind VARCHAR(16) NOT NULL CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND'));

-- A cancellation: the seat available again (with the next fence), the reservation CANCELLED,
-- the payment refunded, the points back with their entry, the request's key; each write names
-- what it was planned from and signals TKCNF naming what changed.
DROP PROCEDURE IF EXISTS ticketing_cancel_booking;
CREATE PROCEDURE ticketing_cancel_booking(
    IN p_seat BINARY(16), IN p_expected_fence BIGINT, IN p_new_fence BIGINT, IN p_reservation BINARY(16),
    IN p_payment BINARY(16), IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_expected_version BIGINT,
    IN p_balance BIGINT, IN p_version BIGINT, IN p_entry BINARY(16), IN p_amount BIGINT,
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
    UPDATE seats SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL,
                     hold_expires_at = NULL, fence = p_new_fence
     WHERE id = p_seat AND fence = p_expected_fence AND reservation_id = p_reservation
       AND state = 'BOOKED';
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'seat';
    END IF;
    UPDATE reservations SET status = 'CANCELLED' WHERE id = p_reservation AND status = 'CONFIRMED';
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'reservation';
    END IF;
    UPDATE payments SET refunded_at = p_at WHERE id = p_payment AND refunded_at IS NULL;
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'payment';
    END IF;
    CALL ticketing_put_wallet(p_user, p_expected_version, p_balance, p_version, p_entry, p_user,
                              'REFUND', p_amount, p_balance_after, p_at, p_payment);
    CALL ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome, p_key_created_at, p_key_expires_at);
    COMMIT;
END;

-- Until how long before a performance a concert's buyers may cancel (NULL: they may not).
ALTER TABLE concerts ADD COLUMN cancel_until_secs_before_start BIGINT NULL
    CHECK (cancel_until_secs_before_start BETWEEN 0 AND 31622400);
