-- Results recorded by processing stages, by stage name (JSON object), for the file.processed join.
ALTER TABLE versions ADD COLUMN stages JSONB NOT NULL DEFAULT '{}';
