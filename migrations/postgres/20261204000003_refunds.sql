-- Cancellation and refunds (issue 16): a paid booking can be cancelled, its seat sold again, its
-- points given back with a REFUND ledger entry; the reservation keeps its history as CANCELLED
-- and its payment is marked refunded.
--
-- The widened CHECKs are added NOT VALID (no scan under the exclusive lock) and validated two
-- migrations later; the seat's old UNIQUE on payments is dropped three later, once the index that
-- keeps a seat from two live payments (`payments_live_seat`, built concurrently by the next
-- migration) exists and is valid.
ALTER TABLE payments ADD COLUMN refunded_at timestamptz;
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'RELEASED', 'CANCELLED')) NOT VALID;
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('CHARGE', 'PAYMENT', 'REFUND')) NOT VALID;

-- A cancellation: the seat available again (with the next fence), the reservation CANCELLED,
-- the payment refunded, the points back with their entry, the request's key; each write names
-- what it was planned from and raises TKCNF naming what changed.
CREATE FUNCTION ticketing_cancel_booking(
    p_seat uuid, p_expected_fence bigint, p_new_fence bigint, p_reservation uuid, p_payment uuid,
    p_user text, p_expected_version bigint, p_balance bigint, p_version bigint,
    p_entry uuid, p_amount bigint, p_balance_after bigint, p_at timestamptz,
    p_key_user text, p_key text, p_fingerprint text, p_outcome text, p_key_created_at timestamptz,
    p_key_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE seats SET state = 'AVAILABLE', reservation_id = NULL, holder = NULL,
                     hold_expires_at = NULL, fence = p_new_fence
     WHERE id = p_seat AND fence = p_expected_fence AND reservation_id = p_reservation
       AND state = 'BOOKED';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'seat' USING ERRCODE = 'TKCNF';
    END IF;
    UPDATE reservations SET status = 'CANCELLED' WHERE id = p_reservation AND status = 'CONFIRMED';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reservation' USING ERRCODE = 'TKCNF';
    END IF;
    UPDATE payments SET refunded_at = p_at WHERE id = p_payment AND refunded_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment' USING ERRCODE = 'TKCNF';
    END IF;
    PERFORM ticketing_put_wallet(p_user, p_expected_version, p_balance, p_version,
                                 p_entry, p_user, 'REFUND', p_amount, p_balance_after, p_at,
                                 p_payment);
    PERFORM ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome,
                              p_key_created_at, p_key_expires_at);
END $$;

-- Until how long before a performance a concert's buyers may cancel (NULL: they may not).
ALTER TABLE concerts ADD COLUMN cancel_until_secs_before_start bigint
    CHECK (cancel_until_secs_before_start BETWEEN 0 AND 31622400);
