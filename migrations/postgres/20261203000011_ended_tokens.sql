-- Tokens ended for good, kept where the money is: revoked by an operator (REVOKED), or left by
-- their holder (LEFT). A queue store that loses such a token (a Redis restart without
-- persistence) gives it back expired, never waiting: the claim path reads this with the token's
-- history, and a lost line's open admissions leave revoked ones out. (A leave that lost its race
-- to an admission does not end the admission: the logged admission wins.) The token's own row
-- expires with the reason REVOKED (new here); the widened CHECK is added NOT VALID and validated
-- by the next migration (no scan under the exclusive lock). A revocation's audit entry names
-- whose token it was (`subject`).
CREATE TABLE ended_tokens (
    token       text PRIMARY KEY,
    concert_id  uuid NOT NULL REFERENCES concerts (id),
    user_id     text NOT NULL,
    at          timestamptz NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('REVOKED', 'LEFT'))
);

ALTER TABLE sale_actions ADD COLUMN subject text;

ALTER TABLE queue_tokens DROP CONSTRAINT queue_tokens_expired_reason_check;
ALTER TABLE queue_tokens ADD CONSTRAINT queue_tokens_expired_reason_check
    CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID', 'LEFT', 'REVOKED')) NOT VALID;

-- A revocation and its audit entry, once: revoking a token again writes nothing (revoking one that
-- left turns its record into the revocation). The same arguments in the same order as MySQL's
-- procedure.
CREATE FUNCTION ticketing_revoke_token(
    p_token text, p_concert uuid, p_user text, p_operator text, p_at timestamptz, p_before text,
    p_after text
)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ended_tokens (token, concert_id, user_id, at, reason)
    VALUES (p_token, p_concert, p_user, p_at, 'REVOKED')
    ON CONFLICT (token) DO UPDATE SET reason = 'REVOKED', at = EXCLUDED.at WHERE ended_tokens.reason <> 'REVOKED';
    IF FOUND THEN
        INSERT INTO sale_actions (concert_id, operator, action, at, before_state, after_state, subject)
        VALUES (p_concert, p_operator, 'revoke', p_at, p_before, p_after, p_user);
    END IF;
END $$;
