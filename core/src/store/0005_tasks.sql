-- Schema version 5: the rectification tasks (整改) of the households on this phone,
-- listed without reading every document. Rebuilt from the documents when they change.
CREATE TABLE rectification_index (
    rect_id       TEXT PRIMARY KEY NOT NULL,
    doc_id        BLOB NOT NULL,
    visit_id      TEXT NOT NULL,
    source        TEXT NOT NULL,               -- review | follow_up
    reason        TEXT NOT NULL,
    opened_at_ms  INTEGER NOT NULL,            -- server clock, UTC ms
    assignee      TEXT NOT NULL,
    state         TEXT NOT NULL,               -- open | fixed | closed
    fix_visit_id  TEXT
) STRICT;
CREATE INDEX rectification_index_doc ON rectification_index (doc_id);

-- Households stored before version 5 are indexed when the store next opens.
INSERT INTO meta (key, value) VALUES ('reindex', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
