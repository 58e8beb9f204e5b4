-- The CHECKs widened for refunds two migrations before are validated: a scan that takes no lock
-- blocking reads or writes (SHARE UPDATE EXCLUSIVE). The seat's old UNIQUE on payments goes in
-- the next migration, on its own, so its brief exclusive lock is not held through these scans.
ALTER TABLE reservations VALIDATE CONSTRAINT reservations_status_check;
ALTER TABLE ledger VALIDATE CONSTRAINT ledger_kind_check;
