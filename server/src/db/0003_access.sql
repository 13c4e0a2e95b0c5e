-- Server schema version 3: roles and scopes, web sessions, enrolment codes, the audit
-- log, keyed ID lookups (issue 4).

-- Accounts gain a role and a scope of grids, villages, units or the town (JSON, see
-- access::Scope). Accounts from before roles were all phone accounts: grid workers.
CREATE TABLE users_v3 (
    id                     INTEGER PRIMARY KEY,
    username               TEXT NOT NULL UNIQUE,
    password_hash          TEXT NOT NULL,            -- argon2id PHC string
    role                   TEXT NOT NULL CHECK (role IN ('grid_worker', 'grid_leader',
                               'police', 'supervisor', 'liaison', 'office', 'admin')),
    scope                  TEXT NOT NULL,            -- JSON {town, villages, grids, units}
    created_at_ms          INTEGER NOT NULL,
    disabled_at_ms         INTEGER,
    password_changed_at_ms INTEGER NOT NULL
) STRICT;
INSERT INTO users_v3 (id, username, password_hash, role, scope, created_at_ms,
                      disabled_at_ms, password_changed_at_ms)
SELECT id, username, password_hash, 'grid_worker',
       CASE scope_kind
           WHEN 'town' THEN '{"town":true,"villages":[],"grids":[],"units":[]}'
           WHEN 'village' THEN json_object('town', json('false'), 'villages', json(scope),
                                           'grids', json('[]'), 'units', json('[]'))
           ELSE json_object('town', json('false'), 'villages', json('[]'),
                            'grids', json(scope), 'units', json('[]'))
       END,
       created_at_ms, CASE WHEN disabled THEN created_at_ms END, created_at_ms
  FROM users;
DROP TABLE users;
ALTER TABLE users_v3 RENAME TO users;

-- Phones: how they were enrolled, who revoked them, and what they said they still held
-- unsynced at their last contact (so the office sees it after a revocation).
ALTER TABLE devices ADD COLUMN enrolled_via TEXT NOT NULL DEFAULT 'password';
ALTER TABLE devices ADD COLUMN revoked_by TEXT;
ALTER TABLE devices ADD COLUMN outbox TEXT;            -- JSON OutboxSummary, last reported
ALTER TABLE devices ADD COLUMN outbox_at_ms INTEGER;
-- Pushes a revoked phone tried to make: kept, not applied, for the office to see.
CREATE TABLE revoked_pushes (
    id            INTEGER PRIMARY KEY,
    device_id     TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    households    INTEGER NOT NULL,
    changes       INTEGER NOT NULL,
    body          BLOB NOT NULL                      -- the CBOR sync request, as sent
) STRICT;
CREATE INDEX revoked_pushes_device ON revoked_pushes (device_id);

-- Web sessions: bearer or cookie tokens, stored as SHA-256.
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    token_hash    BLOB NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id);

-- One-time enrolment codes, stored as HMAC-SHA256 under the server's lookup key.
CREATE TABLE enrolment_codes (
    id             INTEGER PRIMARY KEY,
    code_hash      BLOB NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL REFERENCES users (id),
    issued_by      TEXT NOT NULL,
    issued_at_ms   INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    redeemed_at_ms INTEGER,
    device_id      TEXT
) STRICT;

-- The audit log: append-only, hash-chained (audit.rs). Holds no names, phone or ID
-- numbers: households by ID, accounts by name, reasons as typed.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,                  -- from 1, without gaps
    at_ms      INTEGER NOT NULL,
    actor      TEXT NOT NULL,                        -- account name, or "(server)"
    device_id  TEXT,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,                        -- JSON object
    prev_hash  BLOB NOT NULL,
    entry_hash BLOB NOT NULL,
    server_key BLOB NOT NULL,                        -- 32 bytes, the evidence key
    signature  BLOB NOT NULL                         -- ed25519 over the entry hash
) STRICT;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- ID numbers are found through a keyed hash, never a plain index; the projection keeps
-- no plain copy (the household document has it, for an audited reveal).
ALTER TABLE residents ADD COLUMN id_hmac BLOB;
CREATE INDEX residents_id_hmac ON residents (id_hmac);
UPDATE residents SET id_number = NULL;
INSERT INTO meta (key, value) VALUES ('reproject_households', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
-- Households gain their `reviews` and `follow_up_calls` maps (schema 3) at next open.
INSERT INTO meta (key, value) VALUES ('upgrade_households', '1')
    ON CONFLICT (key) DO UPDATE SET value = '1';
