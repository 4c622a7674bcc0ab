-- Data import (docs/import.md): the history of a tenant's imports, and what re-imports
-- match on.

-- One row per committed import (dry runs and refused files leave none): its counts, the
-- mapping it used, the first 1,000 problems of the rows it skipped, and the file's SHA-256.
CREATE TABLE imports (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    table_name            varchar(40) NOT NULL,
    format                varchar(10) NOT NULL,
    file_sha256           varchar(64) NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    file_bytes            bigint NOT NULL CHECK (file_bytes >= 0),
    rows_read             bigint NOT NULL CHECK (rows_read >= 0),
    inserted              bigint NOT NULL CHECK (inserted >= 0),
    updated               bigint NOT NULL CHECK (updated >= 0),
    unchanged             bigint NOT NULL CHECK (unchanged >= 0),
    rejected              bigint NOT NULL CHECK (rejected >= 0),
    skip_invalid          boolean NOT NULL,
    summary               text NOT NULL,
    columns               jsonb NOT NULL,
    ignored_columns       jsonb NOT NULL,
    rejections            jsonb NOT NULL,
    rejections_not_shown  bigint NOT NULL DEFAULT 0,
    created_by_user_id    varchar(255),
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_imports_created ON imports (created_at, id);

-- A sale's line within its order: with the date, product, channel and customer it is the
-- natural key of sales that have no external id (an import numbers repeated rows 1, 2, …).
ALTER TABLE sales ADD COLUMN order_line integer CHECK (order_line >= 1);

-- Re-imports find sales by external id.
CREATE INDEX idx_sales_external_id ON sales (external_id) WHERE external_id IS NOT NULL;
