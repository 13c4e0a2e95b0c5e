-- Server schema version 4: what each phone holds, so that households moving between
-- grids, and accounts changing role or scope, reach the right phones (ADR 0008).

-- One row per document a device holds.
--   removing      1: the document left the device's reach; every pull sends it as
--                 Removed until the phone reports it dropped, which deletes the row.
--                 Until then, and for at most 72 hours after `removing_since_ms`,
--                 the device may still push changes to it.
--   snapshot_seq  the document's last change-log entry when it was last sent whole
--                 (0: not known); the pull skips its entries up to there. -1: uncertain,
--                 sent in an answer the phone never applied, so it may or may not be
--                 there: sent whole again while in reach, as Removed once out of reach.
--   delivery      the numbered answer that sent it whole, until the phone confirms it
--                 applied that answer (then NULL), or shows it did not (then the row
--                 becomes uncertain).
CREATE TABLE device_docs (
    device_id    TEXT NOT NULL,
    doc_id       BLOB NOT NULL,
    removing     INTEGER NOT NULL DEFAULT 0,
    removing_since_ms INTEGER,                -- when it was first sent as Removed
    snapshot_seq INTEGER NOT NULL DEFAULT 0,
    delivery     INTEGER,
    PRIMARY KEY (device_id, doc_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_docs_removing ON device_docs (device_id) WHERE removing = 1;
CREATE INDEX device_docs_unconfirmed ON device_docs (device_id, delivery)
    WHERE delivery IS NOT NULL;

-- Per device: what its holdings were last compared with (the placements count, whether
-- its role takes households, its scope; NULL: compare at the next pull), and the number
-- of its last numbered answer.
ALTER TABLE devices ADD COLUMN holdings_basis TEXT;
ALTER TABLE devices ADD COLUMN last_delivery INTEGER NOT NULL DEFAULT 0;

-- Every change of a document's village or grid counts here; the count is part of every
-- device's basis, so a move makes each device compare its holdings at its next pull.
INSERT INTO meta (key, value) VALUES ('placements', '0')
    ON CONFLICT (key) DO NOTHING;
CREATE TRIGGER documents_placed AFTER UPDATE OF village, grid ON documents
    WHEN OLD.village IS NOT NEW.village OR OLD.grid IS NOT NEW.grid
BEGIN
    UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)
     WHERE key = 'placements';
END;

-- The comparison reads documents by kind and place without touching their bytes.
CREATE INDEX documents_place ON documents (kind, village, grid, first_seq, doc_id);

-- Backfill for phones that synced before this version. The server kept no record of
-- what it sent, so a phone is taken to hold what its pulls could have sent it: the
-- organisation document and, when its role takes households (grid_worker, grid_leader,
-- police, supervisor: the SyncHouseholds row of access::PERMISSIONS as of this
-- version), the households in its account's scope, each of them created (its first
-- change received) no later than the phone's last recorded sync. A phone that never
-- synced gets no rows. A row too few costs one snapshot sent again (the phone merges
-- it); a household that entered the scope by a role change before this version, after
-- the phone's cursor had passed its creation, is taken as held though the phone lacks
-- it (a new sign-in on a fresh phone store repairs that). The phone's actual cursor is
-- not known to the server; last_sync_ms is recorded at most once a minute, so this
-- errs towards rows too few.
INSERT OR IGNORE INTO device_docs (device_id, doc_id)
SELECT dv.device_id, d.doc_id
  FROM devices dv
  JOIN users u ON u.id = dv.user_id
  JOIN documents d
  JOIN change_log c ON c.seq = d.first_seq
 WHERE dv.last_sync_ms IS NOT NULL
   AND c.received_at_ms <= dv.last_sync_ms
   AND (d.kind = 'organisation'
        OR (d.kind = 'household'
            AND u.role IN ('grid_worker', 'grid_leader', 'police', 'supervisor')
            AND (json_extract(u.scope, '$.town')
                 OR d.village IN (SELECT value FROM json_each(u.scope, '$.villages'))
                 OR (d.village, d.grid) IN
                    (SELECT json_extract(value, '$.village'), json_extract(value, '$.grid')
                       FROM json_each(u.scope, '$.grids')))));
