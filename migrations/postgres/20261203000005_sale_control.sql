-- Sale control: an operator may pause a concert's admission and change its waiting-room
-- settings while the sale runs. Every change names the version it was decided from and moves it
-- on by one (a compare-and-set, like every other write).
ALTER TABLE concerts
    ADD COLUMN paused boolean NOT NULL DEFAULT false,
    ADD COLUMN version bigint NOT NULL DEFAULT 0 CHECK (version >= 0);
