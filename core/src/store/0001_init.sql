-- Schema version 1: documents, outbox, sync state, blobs.
-- Marks the file as a Doorstep phone store ("DSTP"), so no other SQLite file is taken for one.
PRAGMA application_id = 1146311760;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- One row per Automerge document, its compacted bytes.
CREATE TABLE documents (
    doc_id        BLOB PRIMARY KEY NOT NULL,  -- 16-byte UUID
    kind          TEXT NOT NULL,
    bytes         BLOB NOT NULL,              -- Automerge::save()
    updated_at_ms INTEGER NOT NULL
) STRICT;

-- Changes made on this phone that the server has not acknowledged, in the order made.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id        BLOB NOT NULL,
    hash          BLOB NOT NULL UNIQUE,       -- 32-byte change hash
    bytes         BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

-- Photos and thumbnails, addressed by SHA-256, with their upload state.
CREATE TABLE blobs (
    sha256        TEXT PRIMARY KEY NOT NULL,
    media_type    TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    uploaded      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX blobs_pending ON blobs (uploaded) WHERE uploaded = 0;
