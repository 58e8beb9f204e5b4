-- Queue tokens carry their concert: the concert id's 32 hex digits, then 40 random ones (72 in
-- all, where they were 40 random ones before). The columns are `text` already; rows of tokens
-- issued before stay readable: prefixed with their concert they have the new shape, and a
-- token and its reservations stay equal. No client holds the prefixed form, so those tokens
-- only serve as history.
UPDATE queue_tokens SET token = replace(concert_id::text, '-', '') || token WHERE length(token) = 40;
UPDATE reservations SET token = replace(concert_id::text, '-', '') || token WHERE length(token) = 40;
