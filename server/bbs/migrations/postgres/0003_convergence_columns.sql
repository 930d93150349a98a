-- The columns a convergence pass reads, next to the record, so that it
-- reads small rows instead of decoding every record's JSON (a pass over
-- 1,000,000 instances; docs/performance.md). Filled from the records here;
-- every write keeps them in step with its record from now on.
ALTER TABLE desired_lrps ADD COLUMN instances BIGINT NOT NULL DEFAULT 0;
UPDATE desired_lrps SET instances = coalesce((record::jsonb ->> 'instances')::bigint, 0);

-- Nanoseconds since the Unix epoch of the last state change.
ALTER TABLE actual_lrps ADD COLUMN since BIGINT NOT NULL DEFAULT 0;
ALTER TABLE actual_lrps ADD COLUMN crash_count BIGINT NOT NULL DEFAULT 0;
-- The cell of the record's evacuating instance; empty when it has none.
ALTER TABLE actual_lrps ADD COLUMN evacuating_cell_id TEXT COLLATE "C" NOT NULL DEFAULT '';
UPDATE actual_lrps SET
    since = coalesce((record::jsonb ->> 'since')::bigint, 0),
    crash_count = coalesce((record::jsonb ->> 'crash_count')::bigint, 0),
    evacuating_cell_id = coalesce(record::jsonb -> 'evacuating_instance' ->> 'cell_id', '');
