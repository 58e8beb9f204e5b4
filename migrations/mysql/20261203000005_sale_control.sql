-- Sale control: an operator may pause a concert's admission and change its waiting-room
-- settings while the sale runs. Every change names the version it was decided from and moves it
-- on by one (a compare-and-set, like every other write), and is written with its entry in the
-- audit trail of operator actions, in one step.
ALTER TABLE concerts
    ADD COLUMN paused BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN version BIGINT NOT NULL DEFAULT 0 CHECK (version >= 0);

-- Who did what to a concert's sale, when, and its state before and after (JSON, as the service
-- wrote it). Appended to only.
CREATE TABLE sale_actions (
    seq           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    concert_id    BINARY(16) NOT NULL,
    operator      VARCHAR(64) NOT NULL,
    action        VARCHAR(16) NOT NULL,
    at            DATETIME(3) NOT NULL,
    before_state  TEXT NOT NULL,
    after_state   TEXT NOT NULL,
    KEY sale_actions_by_concert (concert_id, seq),
    FOREIGN KEY (concert_id) REFERENCES concerts (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- A change of a concert's sale settings and its audit entry, if the stored version is still
-- the one the change was decided from (otherwise TKCNF 'concert'). The same arguments in the
-- same order as PostgreSQL's function.
CREATE PROCEDURE ticketing_update_concert(
    IN p_concert BINARY(16), IN p_expected_version BIGINT, IN p_max_active INT, IN p_admit_batch INT,
    IN p_admit_interval_ms BIGINT, IN p_waiting_idle_secs BIGINT, IN p_active_ttl_secs BIGINT,
    IN p_paused BOOLEAN, IN p_version BIGINT, IN p_operator VARCHAR(64) CHARACTER SET utf8mb4,
    IN p_action VARCHAR(16) CHARACTER SET utf8mb4, IN p_at DATETIME(3),
    IN p_before TEXT CHARACTER SET utf8mb4, IN p_after TEXT CHARACTER SET utf8mb4
)
SQL SECURITY INVOKER
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
    -- A transaction a stopped call left open on this connection is discarded, not committed.
    ROLLBACK;
    START TRANSACTION;
    UPDATE concerts SET max_active = p_max_active, admit_batch = p_admit_batch,
                        admit_interval_ms = p_admit_interval_ms, waiting_idle_secs = p_waiting_idle_secs,
                        active_ttl_secs = p_active_ttl_secs, paused = p_paused, version = p_version
     WHERE id = p_concert AND version = p_expected_version;
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'concert';
    END IF;
    INSERT INTO sale_actions (concert_id, operator, action, at, before_state, after_state)
    VALUES (p_concert, p_operator, p_action, p_at, p_before, p_after);
    COMMIT;
END;
