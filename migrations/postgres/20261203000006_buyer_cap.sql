-- Per-buyer caps: a concert may limit how many of its seats one user buys, across tokens and
-- retries. The payment step counts the buyer's confirmed reservations of the concert in the same
-- statement that reads the wallet whose version the payment's write names (the index that count
-- reads is built by the next migration, outside a transaction).
ALTER TABLE concerts
    ADD COLUMN max_seats_per_buyer integer CHECK (max_seats_per_buyer > 0);
