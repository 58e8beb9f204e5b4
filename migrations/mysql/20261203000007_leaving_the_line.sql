-- A buyer may leave the line: a waiting token then expires with the reason LEFT.
--
-- MariaDB keeps a column's CHECK with the column, and MODIFY replaces it. MySQL 8 keeps it as a
-- table constraint named queue_tokens_chk_<n>, which MODIFY would leave in place (refusing
-- LEFT): it is found by its clause and dropped first. (MySQL 8's CHECK_CONSTRAINTS has no table
-- column, so the join is on schema and name; MariaDB names a column CHECK after its column,
-- `expired_reason`, which is left to MODIFY. Today no other CHECK of the schema mentions
-- TIMED_OUT.) MODIFY rebuilds the table: run it outside a sale.
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
    CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID', 'LEFT'));
