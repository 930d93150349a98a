-- The first schema of the store on PostgreSQL: the same tables as the
-- SQLite schema, plus `events`, the change feed shared by every process
-- connected to the database. Record tables keep the record itself as JSON
-- text in `record` (serde of the lattice-models type, including its
-- modification tag), next to the columns that queries filter and sort on
-- and the tag columns the compare-and-swap matches on.
--
-- Keys sort with the "C" collation, byte by byte as in SQLite, so lists come
-- out in the same order whatever locale the cluster was initialised with.
-- TTLs are TIMESTAMPTZ compared with the database's `now()`, so every
-- machine of the cluster agrees on what has expired.
-- Never edit a released migration: add the next one.

CREATE TABLE tasks (
    task_guid  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    domain     TEXT COLLATE "C" NOT NULL,
    state      TEXT             NOT NULL,
    -- Empty while the task is PENDING.
    cell_id    TEXT COLLATE "C" NOT NULL,
    -- Nanoseconds since the Unix epoch; the list order.
    created_at BIGINT           NOT NULL,
    mod_epoch  TEXT             NOT NULL,
    mod_index  BIGINT           NOT NULL,
    record     TEXT             NOT NULL
);
CREATE INDEX tasks_by_created_at ON tasks (created_at, task_guid);
CREATE INDEX tasks_by_domain ON tasks (domain);
CREATE INDEX tasks_by_state ON tasks (state);
CREATE INDEX tasks_by_cell_id ON tasks (cell_id);

CREATE TABLE desired_lrps (
    process_guid TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    domain       TEXT COLLATE "C" NOT NULL,
    mod_epoch    TEXT             NOT NULL,
    mod_index    BIGINT           NOT NULL,
    record       TEXT             NOT NULL
);
CREATE INDEX desired_lrps_by_domain ON desired_lrps (domain);

CREATE TABLE actual_lrps (
    process_guid   TEXT COLLATE "C" NOT NULL,
    instance_index BIGINT           NOT NULL,
    domain         TEXT COLLATE "C" NOT NULL,
    -- Empty while the instance is UNCLAIMED.
    cell_id        TEXT COLLATE "C" NOT NULL,
    state          TEXT             NOT NULL,
    mod_epoch      TEXT             NOT NULL,
    mod_index      BIGINT           NOT NULL,
    record         TEXT             NOT NULL,
    PRIMARY KEY (process_guid, instance_index)
);
CREATE INDEX actual_lrps_by_domain ON actual_lrps (domain);
CREATE INDEX actual_lrps_by_cell_id ON actual_lrps (cell_id);

-- Presence of a cell, renewed by its rep; an expired row is ignored and
-- replaced by the next renewal.
CREATE TABLE cells (
    cell_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    expires_at TIMESTAMPTZ      NOT NULL,
    record     TEXT             NOT NULL
);

-- `expires_at` NULL: the domain never expires.
CREATE TABLE domains (
    domain     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    expires_at TIMESTAMPTZ
);

-- Leases: held by `owner` until `expires_at`.
CREATE TABLE locks (
    name       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner      TEXT             NOT NULL,
    expires_at TIMESTAMPTZ      NOT NULL
);

-- The change feed. Every write of a task or LRP inserts its event (the JSON
-- of a lattice-models `Event`) in its own transaction while holding a
-- transaction-scoped advisory lock, so ids are handed out in commit order
-- and a reader that has seen id N has seen every committed event below it.
-- `created_at` is the clock when the id was taken (not the transaction's
-- start), so it grows with the id; old rows are pruned by age.
CREATE TABLE events (
    id         BIGSERIAL   NOT NULL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    event      TEXT        NOT NULL
);
CREATE INDEX events_by_created_at ON events (created_at);
