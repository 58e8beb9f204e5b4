-- A buyer may leave the line: a waiting token then expires with the reason LEFT.
ALTER TABLE queue_tokens DROP CONSTRAINT queue_tokens_expired_reason_check;
ALTER TABLE queue_tokens ADD CONSTRAINT queue_tokens_expired_reason_check
    CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID', 'LEFT'));
