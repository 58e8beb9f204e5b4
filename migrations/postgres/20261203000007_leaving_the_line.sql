-- A buyer may leave the line: a waiting token then expires with the reason LEFT. The widened
-- CHECK is added NOT VALID (no scan of the table under its exclusive lock, brief on a live sale)
-- and validated by the next-but-one migration, which blocks no writes.
ALTER TABLE queue_tokens DROP CONSTRAINT queue_tokens_expired_reason_check;
ALTER TABLE queue_tokens ADD CONSTRAINT queue_tokens_expired_reason_check
    CHECK (expired_reason IN ('IDLE', 'TIMED_OUT', 'PAID', 'LEFT')) NOT VALID;
