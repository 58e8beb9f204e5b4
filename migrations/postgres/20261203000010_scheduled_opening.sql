-- A scheduled opening with a pre-queue: a concert's sale may open at `sales_open_at`; buyers who
-- join before wait in a pre-queue, ordered at the opening by `pre_queue` ('random': drawn with the
-- opening's seed; 'fifo': as they came). The opening is recorded once, by the admission ticker,
-- as an operator's change (with its audit entry), and only when this database's clock has
-- reached `sales_open_at`: nodes whose clocks run ahead cannot open the sale early.
ALTER TABLE concerts
    ADD COLUMN sales_open_at timestamptz,
    ADD COLUMN pre_queue text NOT NULL DEFAULT 'random' CHECK (pre_queue IN ('random', 'fifo')),
    ADD COLUMN opened_at timestamptz,
    ADD COLUMN opening_seed bigint CHECK (opening_seed >= 0);

-- Whether the queue store opened the concert's line (drew its pre-queue): until then a concert
-- with a scheduled opening admits nobody.
ALTER TABLE admission_state ADD COLUMN opened boolean NOT NULL DEFAULT false;

DROP FUNCTION ticketing_update_concert(
    uuid, bigint, integer, integer, bigint, bigint, bigint, boolean, bigint, text, text, timestamptz, text, text
);

-- A change of a concert's sale settings (and its opening) with its audit entry, if the stored
-- version is still the one the change was decided from and, for the change that opens the sale,
-- this database's clock has reached the opening (otherwise TKCNF 'concert'). The same arguments
-- in the same order as MySQL's procedure.
CREATE FUNCTION ticketing_update_concert(
    p_concert uuid, p_expected_version bigint, p_max_active integer, p_admit_batch integer,
    p_admit_interval_ms bigint, p_waiting_idle_secs bigint, p_active_ttl_secs bigint,
    p_paused boolean, p_version bigint, p_opened_at timestamptz, p_opening_seed bigint,
    p_operator text, p_action text, p_at timestamptz, p_before text, p_after text
)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE concerts SET max_active = p_max_active, admit_batch = p_admit_batch,
                        admit_interval_ms = p_admit_interval_ms, waiting_idle_secs = p_waiting_idle_secs,
                        active_ttl_secs = p_active_ttl_secs, paused = p_paused, version = p_version,
                        opened_at = p_opened_at, opening_seed = p_opening_seed
     WHERE id = p_concert AND version = p_expected_version
       AND (p_opened_at IS NULL OR opened_at IS NOT NULL OR sales_open_at <= clock_timestamp());
    IF NOT FOUND THEN
        RAISE EXCEPTION 'concert' USING ERRCODE = 'TKCNF';
    END IF;
    INSERT INTO sale_actions (concert_id, operator, action, at, before_state, after_state)
    VALUES (p_concert, p_operator, p_action, p_at, p_before, p_after);
END $$;
