-- Validates the widened expiry-reason CHECK of the previous migration (a scan that blocks no
-- writes).
ALTER TABLE queue_tokens VALIDATE CONSTRAINT queue_tokens_expired_reason_check;
