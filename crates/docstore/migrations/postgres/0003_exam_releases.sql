-- Exams whose results were released to their patient: the first release is kept.
CREATE TABLE exam_releases (
    exam_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    released_at BIGINT NOT NULL,
    released_by TEXT NOT NULL
);
