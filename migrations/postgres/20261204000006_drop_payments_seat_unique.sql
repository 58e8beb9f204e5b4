-- The seat's UNIQUE on payments gives way to `payments_live_seat` (a seat is paid by at most one
-- live payment; a refunded seat may be sold again). Only once that index exists and is valid: a
-- concurrent build that failed leaves an invalid index, which `IF NOT EXISTS` would then skip,
-- and dropping the UNIQUE would leave the seat with no guard at all.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relname = 'payments_live_seat' AND i.indisvalid
    ) THEN
        RAISE EXCEPTION 'payments_live_seat is missing or invalid: drop it and migrate again';
    END IF;
END $$;
ALTER TABLE payments DROP CONSTRAINT payments_seat_id_key;
