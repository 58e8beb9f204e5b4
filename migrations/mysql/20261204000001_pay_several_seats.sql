-- One payment pays several holds (issue 16): the wallet is debited once, and each seat gets its
-- payment and its PAYMENT ledger entry (one per seat, so a refund can answer it), all or none.
--
-- `ticketing_pay` takes over from `ticketing_commit_payment`, which stays for the nodes of the
-- previous release during a rolling upgrade (a later migration drops it). The seats come as one JSON array (the
-- same argument on PostgreSQL), in seat-id order, so two payments of overlapping holds lock their
-- seats in one order; every transaction still takes its row locks as seat, reservation, wallet.
-- Each write names what it was planned from (the seat's fence, the reservation HELD, the wallet's
-- version) and signals TKCNF naming what changed; the handler rolls the whole call back.
DROP PROCEDURE IF EXISTS ticketing_pay;
CREATE PROCEDURE ticketing_pay(
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_expected_version BIGINT, IN p_balance BIGINT,
    IN p_version BIGINT, IN p_at DATETIME(3), IN p_seats TEXT CHARACTER SET utf8mb4,
    IN p_key_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_key VARCHAR(128) CHARACTER SET utf8mb4, IN p_fingerprint VARCHAR(200) CHARACTER SET utf8mb4, IN p_outcome TEXT CHARACTER SET utf8mb4,
    IN p_key_created_at DATETIME(3), IN p_key_expires_at DATETIME(3)
)
SQL SECURITY INVOKER
BEGIN
    DECLARE v_count INT DEFAULT JSON_LENGTH(p_seats);
    DECLARE v_i INT DEFAULT 0;
    DECLARE v_item TEXT CHARACTER SET utf8mb4;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    WHILE v_i < v_count DO
        SET v_item = JSON_EXTRACT(p_seats, CONCAT('$[', v_i, ']'));
        UPDATE seats SET state = 'BOOKED', holder = NULL, hold_expires_at = NULL,
               fence = CAST(JSON_EXTRACT(v_item, '$.newFence') AS SIGNED)
         WHERE id = UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.seat')))
           AND fence = CAST(JSON_EXTRACT(v_item, '$.fence') AS SIGNED)
           AND reservation_id = UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.reservation')))
           AND state = 'HELD';
        IF ROW_COUNT() <> 1 THEN
            SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'seat';
        END IF;
        UPDATE reservations SET status = 'CONFIRMED'
         WHERE id = UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.reservation'))) AND status = 'HELD';
        IF ROW_COUNT() <> 1 THEN
            SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'reservation';
        END IF;
        SET v_i = v_i + 1;
    END WHILE;
    IF p_expected_version = 0 THEN
        INSERT INTO wallets (user_id, balance, version) VALUES (p_user, p_balance, p_version);
    ELSE
        UPDATE wallets SET balance = p_balance, version = p_version
         WHERE user_id = p_user AND version = p_expected_version;
        IF ROW_COUNT() <> 1 THEN
            SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'wallet';
        END IF;
    END IF;
    -- In the array's order, so the ledger's sequence follows the running balance.
    SET v_i = 0;
    WHILE v_i < v_count DO
        SET v_item = JSON_EXTRACT(p_seats, CONCAT('$[', v_i, ']'));
        INSERT INTO ledger (id, user_id, kind, amount, balance_after, at, payment_id)
        VALUES (UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.entry'))), p_user, 'PAYMENT',
                CAST(JSON_EXTRACT(v_item, '$.amount') AS SIGNED),
                CAST(JSON_EXTRACT(v_item, '$.balanceAfter') AS SIGNED), p_at,
                UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.payment'))));
        INSERT INTO payments (id, reservation_id, seat_id, user_id, amount, at)
        VALUES (UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.payment'))),
                UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.reservation'))),
                UNHEX(JSON_UNQUOTE(JSON_EXTRACT(v_item, '$.seat'))), p_user,
                CAST(JSON_EXTRACT(v_item, '$.amount') AS SIGNED), p_at);
        SET v_i = v_i + 1;
    END WHILE;
    CALL ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome, p_key_created_at, p_key_expires_at);
    COMMIT;
END;

-- A concert may let a token hold several seats (`holdsPerToken`; NULL: the deployment's setting).
ALTER TABLE concerts
    ADD COLUMN holds_per_token INT NULL CHECK (holds_per_token BETWEEN 1 AND 100);
