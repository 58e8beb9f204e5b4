-- Per-buyer caps: a concert may limit how many of its seats one user buys, across tokens and
-- retries. The payment step counts the buyer's confirmed reservations of the concert in the same
-- statement that reads the wallet whose version the payment's write names.
ALTER TABLE concerts
    ADD COLUMN max_seats_per_buyer INT NULL CHECK (max_seats_per_buyer > 0);

CREATE INDEX reservations_bought_by_user ON reservations (user_id, concert_id, status);
