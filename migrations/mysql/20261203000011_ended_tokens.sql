-- Tokens ended for good, kept where the money is: revoked by an operator (REVOKED), or left by
-- their holder (LEFT). A queue store that loses such a token (a Redis restart without
-- persistence) gives it back expired, never waiting: the claim path reads this with the token's
-- history, and a lost line's open admissions leave revoked ones out. (A leave that lost its race
-- to an admission does not end the admission: the logged admission wins.) The token's own row
-- expires with the reason REVOKED (new here). A revocation's audit entry names whose token it was
-- (`subject`).
CREATE TABLE ended_tokens (
    token       VARCHAR(72) NOT NULL PRIMARY KEY,
    concert_id  BINARY(16) NOT NULL,
    user_id     VARCHAR(64) NOT NULL,
    at          DATETIME(3) NOT NULL,
    reason      VARCHAR(8) NOT NULL CHECK (reason IN ('REVOKED', 'LEFT')),
    FOREIGN KEY (concert_id) REFERENCES concerts (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

ALTER TABLE sale_actions ADD COLUMN subject VARCHAR(64) NULL;

-- As in 20261203000007: MySQL 8 keeps the column's CHECK as a table constraint, found by its
-- clause and dropped first; MariaDB's goes with MODIFY. MODIFY rebuilds the table: run it outside
-- a sale.
DROP PROCEDURE IF EXISTS ticketing_drop_expiry_reason_check;
CREATE PROCEDURE ticketing_drop_expiry_reason_check()
SQL SECURITY INVOKER
BEGIN
    DECLARE v_name VARCHAR(64) DEFAULT NULL;
    SELECT tc.CONSTRAINT_NAME INTO v_name
      FROM information_schema.TABLE_CONSTRAINTS tc
      JOIN information_schema.CHECK_CONSTRAINTS cc
        ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME
     WHERE tc.TABLE_SCHEMA = DATABASE() AND tc.TABLE_NAME = 'queue_tokens'
       AND tc.CONSTRAINT_TYPE = 'CHECK' AND cc.CHECK_CLAUSE LIKE '%TIMED_OUT%'
       AND tc.CONSTRAINT_NAME <> 'expired_reason'
     LIMIT 1;
    IF v_name IS NOT NULL THEN
        SET @ticketing_drop_check = CONCAT('ALTER TABLE queue_tokens DROP CHECK `', v_name, '`');
        PREPARE drop_check FROM @ticketing_drop_check;
        EXECUTE drop_check;
        DEALLOCATE PREPARE drop_check;
    END IF;
END;
CALL ticketing_drop_expiry_reason_check();
DROP PROCEDURE ticketing_drop_expiry_reason_check;

ALTER TABLE queue_tokens MODIFY expired_reason VARCHAR(16) NULL
    CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID', 'LEFT', 'REVOKED'));

-- A revocation and its audit entry, once: revoking a token again writes nothing (revoking one that
-- left turns its record into the revocation). The same arguments in the same order as
-- PostgreSQL's function.
CREATE PROCEDURE ticketing_revoke_token(
    IN p_token VARCHAR(72) CHARACTER SET utf8mb4, IN p_concert BINARY(16),
    IN p_user VARCHAR(64) CHARACTER SET utf8mb4, IN p_operator VARCHAR(64) CHARACTER SET utf8mb4,
    IN p_at DATETIME(3), IN p_before TEXT CHARACTER SET utf8mb4, IN p_after TEXT CHARACTER SET utf8mb4
)
SQL SECURITY INVOKER
BEGIN
    DECLARE v_again BOOLEAN DEFAULT FALSE;
    -- A second revocation of the token (a duplicate key, error 1062) writes nothing; every other
    -- error rolls back and is raised.
    DECLARE CONTINUE HANDLER FOR 1062 SET v_again = TRUE;
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    INSERT INTO ended_tokens (token, concert_id, user_id, at, reason)
    VALUES (p_token, p_concert, p_user, p_at, 'REVOKED');
    IF v_again THEN
        -- Counted by its WHERE (the connection reports found rows): a left token becomes revoked.
        UPDATE ended_tokens SET reason = 'REVOKED', at = p_at WHERE token = p_token AND reason <> 'REVOKED';
        SET v_again = ROW_COUNT() = 0;
    END IF;
    IF NOT v_again THEN
        INSERT INTO sale_actions (concert_id, operator, action, at, before_state, after_state, subject)
        VALUES (p_concert, p_operator, 'revoke', p_at, p_before, p_after, p_user);
    END IF;
    COMMIT;
END;
