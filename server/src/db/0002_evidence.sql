-- Server schema version 2: signed evidence (issue 3).

-- Evidence keys of devices. A key stays here for good: records it signed stay
-- verifiable after the device registers a newer one (superseded) or is re-enrolled.
CREATE TABLE device_keys (
    public_key       BLOB PRIMARY KEY NOT NULL,   -- 32 bytes, RFC 8032
    device_id        TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    superseded_at_ms INTEGER,                     -- a newer key was registered
    revoked_at_ms    INTEGER                      -- records signed with it are refused
) STRICT;
CREATE INDEX device_keys_device ON device_keys (device_id);

-- The hash-chained evidence log: one entry per accepted record, append-only. The
-- columns beside `record` copy what the record says, for queries; `verify` checks
-- that they agree with it.
CREATE TABLE evidence_log (
    seq              INTEGER PRIMARY KEY,         -- from 1, without gaps
    evidence_id      TEXT NOT NULL UNIQUE,
    doc_id           BLOB NOT NULL,
    visit_id         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    counter          INTEGER NOT NULL,
    public_key       BLOB NOT NULL,
    signed_at_ms     INTEGER NOT NULL,            -- device clock
    received_at_ms   INTEGER NOT NULL,            -- server clock
    record           BLOB NOT NULL,               -- canonical CBOR, as signed
    device_signature BLOB NOT NULL,
    prev_hash        BLOB NOT NULL,
    entry_hash       BLOB NOT NULL,
    server_key       BLOB NOT NULL,
    server_signature BLOB NOT NULL,
    UNIQUE (device_id, counter)
) STRICT;
CREATE INDEX evidence_log_doc ON evidence_log (doc_id);

-- Changes refused at push, with the reason the phone was given.
CREATE TABLE refused_changes (
    hash          BLOB PRIMARY KEY NOT NULL,
    doc_id        BLOB NOT NULL,
    device_id     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    bytes         BLOB NOT NULL,
    refused_at_ms INTEGER NOT NULL
) STRICT;

-- Visits are now started, then finished or voided.
ALTER TABLE visits ADD COLUMN outcome_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE visits ADD COLUMN voided_reason TEXT;
ALTER TABLE visits ADD COLUMN evidence INTEGER NOT NULL DEFAULT 0;

-- Household documents of schema 1 get their evidence maps when the server next opens.
INSERT INTO meta (key, value) VALUES ('upgrade_households', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
