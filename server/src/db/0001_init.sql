-- Server schema version 1.
-- Marks the file as a Doorstep server database ("DSSV").
PRAGMA application_id = 1146311510;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,               -- argon2id PHC string
    scope_kind    TEXT NOT NULL CHECK (scope_kind IN ('grids', 'village', 'town')),
    scope         TEXT NOT NULL,               -- JSON array of grid or village names
    created_at_ms INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE devices (
    device_id     TEXT PRIMARY KEY NOT NULL,   -- UUID, also the Automerge actor
    user_id       INTEGER NOT NULL REFERENCES users (id),
    token_hash    BLOB NOT NULL UNIQUE,        -- SHA-256 of the bearer token
    created_at_ms INTEGER NOT NULL,
    last_sync_ms  INTEGER,
    revoked_at_ms INTEGER
) STRICT;

-- Every document, compacted; first_seq and last_seq bound its changes in change_log.
CREATE TABLE documents (
    doc_id        BLOB PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    village       TEXT NOT NULL,
    grid          TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    first_seq     INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;

-- The truth: every accepted change, append-only, numbered by the server.
CREATE TABLE change_log (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id         BLOB NOT NULL,
    hash           BLOB NOT NULL UNIQUE,
    actor          BLOB NOT NULL,
    bytes          BLOB NOT NULL,
    device_id      TEXT,                       -- NULL for the server's own changes
    received_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX change_log_doc ON change_log (doc_id, seq);

-- Projections, rebuilt from a household document whenever it changes.
CREATE TABLE households (
    doc_id        BLOB PRIMARY KEY NOT NULL,
    village       TEXT NOT NULL,
    grid          TEXT NOT NULL,
    door_number   TEXT NOT NULL,
    head_name     TEXT NOT NULL,
    phone         TEXT NOT NULL,
    residents     INTEGER NOT NULL,
    visits        INTEGER NOT NULL,
    conflicts     INTEGER NOT NULL
) STRICT;
CREATE INDEX households_place ON households (village, grid);

CREATE TABLE residents (
    resident_id   TEXT PRIMARY KEY NOT NULL,
    doc_id        BLOB NOT NULL,
    name          TEXT NOT NULL,
    relation      TEXT NOT NULL,
    sex           TEXT NOT NULL,
    birth_date    TEXT,
    id_number     TEXT,
    phone         TEXT,
    target_groups TEXT NOT NULL                -- JSON array
) STRICT;
CREATE INDEX residents_doc ON residents (doc_id);

CREATE TABLE visits (
    visit_id       TEXT PRIMARY KEY NOT NULL,
    doc_id         BLOB NOT NULL,
    visitor        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    photos         INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL            -- server clock, first seen
) STRICT;
CREATE INDEX visits_doc ON visits (doc_id);

CREATE TABLE visit_photos (
    visit_id      TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    thumb_sha256  TEXT NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    PRIMARY KEY (visit_id, sha256)
) STRICT;

-- Blobs held in the blob folder, verified on arrival.
CREATE TABLE blobs (
    sha256         TEXT PRIMARY KEY NOT NULL,
    size           INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL
) STRICT;
