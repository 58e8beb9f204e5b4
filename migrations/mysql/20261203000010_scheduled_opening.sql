-- A scheduled opening with a pre-queue: a concert's sale may open at `sales_open_at`; buyers who
-- join before wait in a pre-queue, ordered at the opening by `pre_queue` ('random': drawn with the
-- opening's seed; 'fifo': as they came). The opening is recorded once, by the admission ticker,
-- as an operator's change (with its audit entry), and only when this database's clock has
-- reached `sales_open_at`: nodes whose clocks run ahead cannot open the sale early.
ALTER TABLE concerts
    ADD COLUMN sales_open_at DATETIME(3) NULL,
    ADD COLUMN pre_queue VARCHAR(8) NOT NULL DEFAULT 'random' CHECK (pre_queue IN ('random', 'fifo')),
    ADD COLUMN opened_at DATETIME(3) NULL,
    ADD COLUMN opening_seed BIGINT NULL CHECK (opening_seed >= 0);

-- Whether the queue store opened the concert's line (drew its pre-queue): until then a concert
-- with a scheduled opening admits nobody.
ALTER TABLE admission_state ADD COLUMN opened BOOLEAN NOT NULL DEFAULT FALSE;

-- The draw deals a pre-queue's places out again in one statement, and a token that left the line
-- meanwhile keeps its old place, which a drawn token may be given: places need not be unique
-- (positions count waiting tokens only). The counter keeps an index of its own.
ALTER TABLE queue_tokens DROP INDEX seq, ADD KEY queue_seq (seq);

DROP PROCEDURE ticketing_update_concert;

-- A change of a concert's sale settings (and its opening) with its audit entry, if the stored
-- version is still the one the change was decided from and, for the change that opens the sale,
-- this database's clock has reached the opening (otherwise TKCNF 'concert'). The same arguments
-- in the same order as PostgreSQL's function.
CREATE PROCEDURE ticketing_update_concert(
    IN p_concert BINARY(16), IN p_expected_version BIGINT, IN p_max_active INT, IN p_admit_batch INT,
    IN p_admit_interval_ms BIGINT, IN p_waiting_idle_secs BIGINT, IN p_active_ttl_secs BIGINT,
    IN p_paused BOOLEAN, IN p_version BIGINT, IN p_opened_at DATETIME(3), IN p_opening_seed BIGINT,
    IN p_operator VARCHAR(64) CHARACTER SET utf8mb4,
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
                        active_ttl_secs = p_active_ttl_secs, paused = p_paused, version = p_version,
                        opened_at = p_opened_at, opening_seed = p_opening_seed
     WHERE id = p_concert AND version = p_expected_version
       AND (p_opened_at IS NULL OR opened_at IS NOT NULL OR sales_open_at <= UTC_TIMESTAMP(3));
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE 'TKCNF' SET MESSAGE_TEXT = 'concert';
    END IF;
    INSERT INTO sale_actions (concert_id, operator, action, at, before_state, after_state)
    VALUES (p_concert, p_operator, p_action, p_at, p_before, p_after);
    COMMIT;
END;
