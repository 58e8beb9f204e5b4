-- Queue tokens carry their concert: the concert id's 32 hex digits, then 40 random ones (72 in
-- all, where they were 40 random ones before).
ALTER TABLE queue_tokens MODIFY token VARCHAR(72) NOT NULL;
ALTER TABLE reservations MODIFY token VARCHAR(72) NOT NULL;
ALTER TABLE token_holds MODIFY token VARCHAR(72) NOT NULL;

-- Rows of tokens issued before stay readable: prefixed with their concert they have the new
-- shape, and a token and its reservations stay equal. No client holds the prefixed form, so
-- those tokens only serve as history. A token's lock row is created on demand: drop the old.
UPDATE queue_tokens SET token = CONCAT(LOWER(HEX(concert_id)), token) WHERE CHAR_LENGTH(token) = 40;
UPDATE reservations SET token = CONCAT(LOWER(HEX(concert_id)), token) WHERE CHAR_LENGTH(token) = 40;
DELETE FROM token_holds WHERE CHAR_LENGTH(token) = 40;
