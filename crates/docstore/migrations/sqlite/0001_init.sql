-- Embedded metadata store. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE documents (
    document_id    TEXT PRIMARY KEY NOT NULL,
    patient_id     TEXT NOT NULL,
    exam_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    latest_version INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    deleted_at     INTEGER,
    deleted_by     TEXT,
    legal_hold     INTEGER NOT NULL DEFAULT 0,
    retain_until   INTEGER
);
CREATE INDEX documents_by_patient ON documents (patient_id, created_at);
CREATE INDEX documents_by_exam ON documents (exam_id, created_at);

CREATE TABLE versions (
    document_id TEXT NOT NULL REFERENCES documents (document_id),
    version     INTEGER NOT NULL CHECK (version >= 1),
    version_id  TEXT NOT NULL UNIQUE,
    patient_id  TEXT NOT NULL,
    exam_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    blob_key    TEXT NOT NULL UNIQUE,
    key_block   BLOB NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    renditions  TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (document_id, version)
);

-- Transactional outbox: written in the same transaction as the version it announces.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    key        TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at    INTEGER
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
