// The baseline's tables, in PostgreSQL's best form for a work queue: AVAILABLE keys are rows
// that get claimed and moved out in one statement (DELETE ... FOR UPDATE SKIP LOCKED
// RETURNING feeding an INSERT), so the queue never carries dead "state" versions that every
// claim has to skip; autovacuum runs on a fixed row count, not a fraction of a big table.
export const DDL = `
CREATE TABLE IF NOT EXISTS batches (
  batch_id   text PRIMARY KEY,
  pool       text NOT NULL,
  batch_key  bytea NOT NULL,
  key_id     int NOT NULL,
  auth_key_id int NOT NULL,
  counter    int NOT NULL,
  flags      int NOT NULL,
  auth       bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
  batch_id text NOT NULL,
  chunk    int NOT NULL,
  PRIMARY KEY (batch_id, chunk)
);
CREATE TABLE IF NOT EXISTS avail (
  id        bigserial PRIMARY KEY,
  pool      text NOT NULL,
  record_id text NOT NULL,
  batch_id  text NOT NULL,
  ct        bytea NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0,
        autovacuum_analyze_threshold = 5000);
CREATE INDEX IF NOT EXISTS avail_pool_id ON avail (pool, id);
CREATE TABLE IF NOT EXISTS issued (
  package_id  text PRIMARY KEY,
  pool        text NOT NULL,
  uid         text NOT NULL,
  tester      text NOT NULL,
  station     text NOT NULL,
  batch_id    text NOT NULL,
  ct          bytea NOT NULL,
  state       text NOT NULL,
  m4          text,
  m5          text,
  reserved_at timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0, fillfactor = 80);
-- idempotency: one live package per ECU and pool; a burned one does not block a fresh key
CREATE UNIQUE INDEX IF NOT EXISTS issued_pool_uid ON issued (pool, uid) WHERE state <> 'BURNED';
CREATE TABLE IF NOT EXISTS testers (
  cn  text PRIMARY KEY,
  rec jsonb NOT NULL
);
`;
