-- The first schema of the store. One table per record kind. Record tables
-- keep the record itself as JSON in `record` (serde of the lattice-models
-- type, including its modification tag), next to the columns that queries
-- filter and sort on and the tag columns the compare-and-swap matches on.
-- Never edit a released migration: add the next one.

CREATE TABLE tasks (
    task_guid  TEXT    NOT NULL PRIMARY KEY,
    domain     TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    -- Empty while the task is PENDING.
    cell_id    TEXT    NOT NULL,
    -- Nanoseconds since the Unix epoch; the list order.
    created_at INTEGER NOT NULL,
    mod_epoch  TEXT    NOT NULL,
    mod_index  INTEGER NOT NULL,
    record     TEXT    NOT NULL
) STRICT;
CREATE INDEX tasks_by_created_at ON tasks (created_at, task_guid);
CREATE INDEX tasks_by_domain ON tasks (domain);
CREATE INDEX tasks_by_state ON tasks (state);
CREATE INDEX tasks_by_cell_id ON tasks (cell_id);

CREATE TABLE desired_lrps (
    process_guid TEXT    NOT NULL PRIMARY KEY,
    domain       TEXT    NOT NULL,
    mod_epoch    TEXT    NOT NULL,
    mod_index    INTEGER NOT NULL,
    record       TEXT    NOT NULL
) STRICT;
CREATE INDEX desired_lrps_by_domain ON desired_lrps (domain);

CREATE TABLE actual_lrps (
    process_guid   TEXT    NOT NULL,
    instance_index INTEGER NOT NULL,
    domain         TEXT    NOT NULL,
    -- Empty while the instance is UNCLAIMED.
    cell_id        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    mod_epoch      TEXT    NOT NULL,
    mod_index      INTEGER NOT NULL,
    record         TEXT    NOT NULL,
    PRIMARY KEY (process_guid, instance_index)
) STRICT;
CREATE INDEX actual_lrps_by_domain ON actual_lrps (domain);
CREATE INDEX actual_lrps_by_cell_id ON actual_lrps (cell_id);

-- Presence of a cell, renewed by its rep. `expires_at` is wall-clock unix
-- milliseconds; an expired row is ignored and replaced by the next renewal.
CREATE TABLE cells (
    cell_id    TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    record     TEXT    NOT NULL
) STRICT;

-- `expires_at` NULL: the domain never expires.
CREATE TABLE domains (
    domain     TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER
) STRICT;

-- Leases: held by `owner` until `expires_at` (unix milliseconds).
CREATE TABLE locks (
    name       TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
