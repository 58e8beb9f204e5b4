-- One payment pays several holds (issue 16): the wallet is debited once, and each seat gets its
-- payment and its PAYMENT ledger entry (one per seat, so a refund can answer it), all or none.
--
-- `ticketing_pay` takes over from `ticketing_commit_payment`, which stays for the nodes of the
-- previous release during a rolling upgrade (a later migration drops it). The seats come as one JSON array (the
-- same argument on MySQL), in seat-id order, so two payments of overlapping holds lock their seats
-- in one order; every transaction still takes its row locks as seat, reservation, wallet. Each
-- write names what it was planned from (the seat's fence, the reservation HELD, the wallet's
-- version) and raises TKCNF naming what changed; an exception undoes the whole call.
CREATE FUNCTION ticketing_pay(
    p_user text, p_expected_version bigint, p_balance bigint, p_version bigint, p_at timestamptz,
    p_seats text,
    p_key_user text, p_key text, p_fingerprint text, p_outcome text, p_key_created_at timestamptz,
    p_key_expires_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT (e->>'seat')::uuid AS seat, (e->>'fence')::bigint AS fence,
               (e->>'reservation')::uuid AS reservation, (e->>'newFence')::bigint AS new_fence,
               (e->>'entry')::uuid AS entry, (e->>'amount')::bigint AS amount,
               (e->>'balanceAfter')::bigint AS balance_after, (e->>'payment')::uuid AS payment
          FROM jsonb_array_elements(p_seats::jsonb) WITH ORDINALITY AS a(e, n)
         ORDER BY n
    LOOP
        UPDATE seats SET state = 'BOOKED', holder = NULL, hold_expires_at = NULL, fence = item.new_fence
         WHERE id = item.seat AND fence = item.fence AND reservation_id = item.reservation
           AND state = 'HELD';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'seat' USING ERRCODE = 'TKCNF';
        END IF;
        UPDATE reservations SET status = 'CONFIRMED' WHERE id = item.reservation AND status = 'HELD';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'reservation' USING ERRCODE = 'TKCNF';
        END IF;
    END LOOP;
    IF p_expected_version = 0 THEN
        INSERT INTO wallets (user_id, balance, version) VALUES (p_user, p_balance, p_version)
        ON CONFLICT (user_id) DO NOTHING;
    ELSE
        UPDATE wallets SET balance = p_balance, version = p_version
         WHERE user_id = p_user AND version = p_expected_version;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'wallet' USING ERRCODE = 'TKCNF';
    END IF;
    -- In the array's order, so the ledger's sequence follows the running balance.
    FOR item IN
        SELECT (e->>'seat')::uuid AS seat, (e->>'fence')::bigint AS fence,
               (e->>'reservation')::uuid AS reservation, (e->>'newFence')::bigint AS new_fence,
               (e->>'entry')::uuid AS entry, (e->>'amount')::bigint AS amount,
               (e->>'balanceAfter')::bigint AS balance_after, (e->>'payment')::uuid AS payment
          FROM jsonb_array_elements(p_seats::jsonb) WITH ORDINALITY AS a(e, n)
         ORDER BY n
    LOOP
        INSERT INTO ledger (id, user_id, kind, amount, balance_after, at, payment_id)
        VALUES (item.entry, p_user, 'PAYMENT', item.amount, item.balance_after, p_at, item.payment);
        INSERT INTO payments (id, reservation_id, seat_id, user_id, amount, at)
        VALUES (item.payment, item.reservation, item.seat, p_user, item.amount, p_at);
    END LOOP;
    PERFORM ticketing_put_key(p_key_user, p_key, p_fingerprint, p_outcome,
                              p_key_created_at, p_key_expires_at);
END $$;

-- A concert may let a token hold several seats (`holdsPerToken`; NULL: the deployment's setting).
ALTER TABLE concerts
    ADD COLUMN holds_per_token integer CHECK (holds_per_token BETWEEN 1 AND 100);
