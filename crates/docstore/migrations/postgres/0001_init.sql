-- PostgreSQL metadata store. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE documents (
    document_id    TEXT PRIMARY KEY,
    patient_id     TEXT NOT NULL,
    exam_id        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    deleted_at     BIGINT,
    deleted_by     TEXT,
    legal_hold     BOOLEAN NOT NULL DEFAULT FALSE,
    retain_until   BIGINT
);
CREATE INDEX documents_by_patient ON documents (patient_id, created_at);
CREATE INDEX documents_by_exam ON documents (exam_id, created_at);

CREATE TABLE versions (
    document_id TEXT NOT NULL REFERENCES documents (document_id),
    version     BIGINT NOT NULL CHECK (version >= 1),
    version_id  TEXT NOT NULL UNIQUE,
    patient_id  TEXT NOT NULL,
    exam_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    blob_key    TEXT NOT NULL UNIQUE,
    key_block   BYTEA NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    renditions  JSONB NOT NULL DEFAULT '[]',
    PRIMARY KEY (document_id, version)
);

-- Transactional outbox: written in the same transaction as the version it announces.
CREATE TABLE outbox (
    seq        BIGSERIAL PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    key        TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
