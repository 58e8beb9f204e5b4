-- Sale control: an operator may pause a concert's admission and change its waiting-room
-- settings while the sale runs. Every change names the version it was decided from and moves it
-- on by one (a compare-and-set, like every other write), and is written with its entry in the
-- audit trail of operator actions, in one step.
ALTER TABLE concerts
    ADD COLUMN paused boolean NOT NULL DEFAULT false,
    ADD COLUMN version bigint NOT NULL DEFAULT 0 CHECK (version >= 0);

-- Who did what to a concert's sale, when, and its state before and after (JSON, as the service
-- wrote it). Appended to only.
CREATE TABLE sale_actions (
    seq           bigserial PRIMARY KEY,
    concert_id    uuid NOT NULL REFERENCES concerts (id),
    operator      text NOT NULL,
    action        text NOT NULL,
    at            timestamptz NOT NULL,
    before_state  text NOT NULL,
    after_state   text NOT NULL
);
CREATE INDEX sale_actions_by_concert ON sale_actions (concert_id, seq);

-- A change of a concert's sale settings and its audit entry, if the stored version is still
-- the one the change was decided from (otherwise TKCNF 'concert'). The same arguments in the
-- same order as MySQL's procedure.
CREATE FUNCTION ticketing_update_concert(
    p_concert uuid, p_expected_version bigint, p_max_active integer, p_admit_batch integer,
    p_admit_interval_ms bigint, p_waiting_idle_secs bigint, p_active_ttl_secs bigint,
    p_paused boolean, p_version bigint, p_operator text, p_action text, p_at timestamptz,
    p_before text, p_after text
)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE concerts SET max_active = p_max_active, admit_batch = p_admit_batch,
                        admit_interval_ms = p_admit_interval_ms, waiting_idle_secs = p_waiting_idle_secs,
                        active_ttl_secs = p_active_ttl_secs, paused = p_paused, version = p_version
     WHERE id = p_concert AND version = p_expected_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'concert' USING ERRCODE = 'TKCNF';
    END IF;
    INSERT INTO sale_actions (concert_id, operator, action, at, before_state, after_state)
    VALUES (p_concert, p_operator, p_action, p_at, p_before, p_after);
END $$;
