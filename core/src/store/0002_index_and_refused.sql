-- Schema version 2: a searchable list of households, and changes the server refused.
CREATE TABLE household_index (
    doc_id        BLOB PRIMARY KEY NOT NULL,
    village       TEXT NOT NULL,
    grid          TEXT NOT NULL,
    door_number   TEXT NOT NULL,
    head_name     TEXT NOT NULL,
    names         TEXT NOT NULL,              -- every resident's name, space separated
    phones        TEXT NOT NULL,              -- every phone number, space separated
    status        TEXT,                       -- latest visit outcome, NULL when none
    visits        INTEGER NOT NULL
) STRICT;
CREATE INDEX household_index_grid ON household_index (grid, door_number);

-- A change the server refused: kept with its reason, never dropped.
CREATE TABLE refused_changes (
    hash          BLOB PRIMARY KEY NOT NULL,
    doc_id        BLOB NOT NULL,
    bytes         BLOB NOT NULL,
    reason        TEXT NOT NULL,
    refused_at_ms INTEGER NOT NULL
) STRICT;

-- Documents written before version 2 are indexed when the store next opens.
INSERT INTO meta (key, value) VALUES ('reindex', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
