-- Schema version 3: the device's signing keys, captured signatures, and documents of
-- more than one kind (the organisation document arrives beside the households).

-- ed25519 keys of this phone. The newest without retired_at_ms signs; older ones are
-- kept so that the records they signed can still be checked here.
CREATE TABLE device_keys (
    id            INTEGER PRIMARY KEY,
    seed          BLOB NOT NULL,               -- 32-byte ed25519 secret
    public_key    BLOB NOT NULL UNIQUE,        -- 32 bytes
    created_at_ms INTEGER NOT NULL,
    retired_at_ms INTEGER
) STRICT;

-- Signatures captured on screen: the strokes and the image are blobs; a record cites
-- them by hash. `rule` says which blank check they passed.
CREATE TABLE signatures (
    png_sha256     TEXT PRIMARY KEY NOT NULL,
    strokes_sha256 TEXT NOT NULL,
    rule           TEXT NOT NULL CHECK (rule IN ('signature', 'mark')),
    created_at_ms  INTEGER NOT NULL
) STRICT;

-- Household statuses now include in_progress; rebuild the list once.
INSERT INTO meta (key, value) VALUES ('reindex', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
