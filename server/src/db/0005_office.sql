-- Server schema version 5: the office's work (issue 6). Reviews, follow-up calls and
-- rectifications are projected from the household documents; follow-up rounds are the
-- server's own records; directives are documents of their own, projected too.

-- Keyed by household as well: the keys inside a document are chosen by phones, and one
-- household's must never replace another's row.
CREATE TABLE reviews (
    visit_id  TEXT NOT NULL,
    doc_id    BLOB NOT NULL,
    state     TEXT NOT NULL,                    -- received | approved | has_issues
    reason    TEXT NOT NULL,
    by_user   TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,                 -- server clock, UTC ms
    PRIMARY KEY (doc_id, visit_id)
) STRICT;
CREATE INDEX reviews_visit ON reviews (visit_id);

CREATE TABLE follow_up_calls (
    call_id      TEXT NOT NULL,
    doc_id       BLOB NOT NULL,
    visit_id     TEXT NOT NULL,
    by_user      TEXT NOT NULL,
    called_at_ms INTEGER NOT NULL,              -- the caller's clock, UTC ms
    reached      INTEGER NOT NULL,
    confirmed    INTEGER,                       -- NULL when not reached
    understood   INTEGER,                       -- NULL when not reached
    remarks      TEXT NOT NULL,
    PRIMARY KEY (doc_id, call_id)
) STRICT;
CREATE INDEX follow_up_calls_visit ON follow_up_calls (visit_id);

CREATE TABLE rectifications (
    rect_id        TEXT NOT NULL,
    doc_id         BLOB NOT NULL,
    visit_id       TEXT NOT NULL,
    source         TEXT NOT NULL,               -- review | follow_up
    reason         TEXT NOT NULL,
    opened_by      TEXT NOT NULL,
    opened_at_ms   INTEGER NOT NULL,
    assignee       TEXT NOT NULL,
    fixed_visit_id TEXT,
    fixed_by       TEXT,
    fixed_at_ms    INTEGER,                     -- the phone's clock, UTC ms
    note           TEXT,
    closed_by      TEXT,
    closed_at_ms   INTEGER,
    PRIMARY KEY (doc_id, rect_id)
) STRICT;
CREATE INDEX rectifications_fixed ON rectifications (fixed_visit_id);

CREATE TABLE follow_up_rounds (
    id          INTEGER PRIMARY KEY,
    village     TEXT NOT NULL,
    grid        TEXT,                           -- NULL: the whole village
    method      TEXT NOT NULL CHECK (method IN ('percent', 'count')),
    amount      INTEGER NOT NULL,
    seed        TEXT NOT NULL,                  -- decimal u64
    candidates  INTEGER NOT NULL,
    drawn_by    TEXT NOT NULL,
    drawn_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE follow_up_samples (
    round_id  INTEGER NOT NULL REFERENCES follow_up_rounds (id),
    doc_id    BLOB NOT NULL,
    position  INTEGER NOT NULL,                 -- order drawn, from 1
    visit_id  TEXT NOT NULL,
    PRIMARY KEY (round_id, doc_id)
) STRICT;

-- Every candidate of a round, so that anyone can draw it again from its seed.
CREATE TABLE follow_up_candidates (
    round_id  INTEGER NOT NULL REFERENCES follow_up_rounds (id),
    doc_id    BLOB NOT NULL,
    visit_id  TEXT NOT NULL,
    PRIMARY KEY (round_id, doc_id)
) STRICT;

CREATE TABLE directives (
    doc_id          BLOB PRIMARY KEY NOT NULL,
    category        TEXT NOT NULL,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    published_by    TEXT NOT NULL,
    published_at_ms INTEGER NOT NULL,
    ack_due_ms      INTEGER NOT NULL,
    push_due_ms     INTEGER NOT NULL
) STRICT;

CREATE TABLE directive_places (
    doc_id             BLOB NOT NULL,
    place              TEXT NOT NULL,
    acknowledged_by    TEXT,
    acknowledged_at_ms INTEGER,
    pushed_by          TEXT,
    pushed_at_ms       INTEGER,
    PRIMARY KEY (doc_id, place)
) STRICT;
CREATE INDEX directive_places_place ON directive_places (place);

-- Households get their rectification maps (schema 4) and new projections.
INSERT INTO meta (key, value) VALUES ('upgrade_households', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
INSERT INTO meta (key, value) VALUES ('reproject_households', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
