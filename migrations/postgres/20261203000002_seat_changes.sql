-- Every write of a seat stamps it with the id of the transaction that wrote it, so a process that
-- keeps a concert's seat states reads only the seats changed since its last read
-- (`CatalogStore::seat_changes`): a transaction older than the oldest one still running when a
-- read was taken (the snapshot's xmin) had committed or failed by then, so that read saw what it
-- wrote; the next read asks for the seats stamped at or after that xmin. A trigger rather than
-- each step's own UPDATE, so no writer of a seat (a hold, a release, a payment, the sweep, and
-- whatever comes later) can forget it. Rows written before this migration keep 0: their
-- writers finished long ago, and a first read asks for every seat.
ALTER TABLE seats ADD COLUMN changed_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE seats ALTER COLUMN changed_xid SET DEFAULT pg_current_xact_id();

CREATE FUNCTION ticketing_stamp_seat_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id();
    RETURN NEW;
END $$;

CREATE TRIGGER seats_stamp_change BEFORE UPDATE ON seats
    FOR EACH ROW EXECUTE FUNCTION ticketing_stamp_seat_change();
