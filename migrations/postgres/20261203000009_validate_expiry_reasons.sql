-- Validates the widened expiry-reason CHECK added NOT VALID two migrations before (a scan that
-- takes no lock blocking reads or writes). Its own migration: in the one that added it, the
-- exclusive lock would be held until commit.
ALTER TABLE queue_tokens VALIDATE CONSTRAINT queue_tokens_expired_reason_check;
