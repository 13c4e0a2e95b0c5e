-- Schema version 4: households that leave this phone (reassignment, ADR 0008).

-- Documents deleted here because the server sent them as Removed (or that were not here
-- when it did), until the server has been told (SyncRequest.dropped). Until then the
-- server keeps sending Removed, and keeps taking this phone's changes to them.
CREATE TABLE dropped_documents (
    doc_id        BLOB PRIMARY KEY NOT NULL,  -- 16-byte UUID
    dropped_at_ms INTEGER NOT NULL
) STRICT;

-- A blob of a deleted household that was not uploaded yet is kept until it is, then
-- deleted.
ALTER TABLE blobs ADD COLUMN discard INTEGER NOT NULL DEFAULT 0;
