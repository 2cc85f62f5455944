"""Initial schema: monthly-partitioned observation, device_status, gateway_health and alert
tables; the per-device latest table; the writer and reader roles.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA IF NOT EXISTS cityedge;

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cityedge_writer') THEN
    CREATE ROLE cityedge_writer NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cityedge_reader') THEN
    CREATE ROLE cityedge_reader NOLOGIN;
  END IF;
END $$;

-- One row per reading, for ever keyed by (device_id, boot, seq). The partition key t (sample
-- time) is part of the primary key because PostgreSQL requires it; a redelivered observation
-- carries the same t, so the key still catches every repeat.
CREATE TABLE cityedge.observation (
  device_id       text        NOT NULL,
  boot            integer     NOT NULL,
  seq             bigint      NOT NULL,
  t               timestamptz NOT NULL,
  site_id         text        NOT NULL,
  gateway_id      text        NOT NULL,
  kind            text        NOT NULL,
  fw              text,
  clock_synced    boolean     NOT NULL,
  received_time   timestamptz NOT NULL,
  window_s        real,
  replay          boolean     NOT NULL,
  location        jsonb       NOT NULL,
  raw             jsonb       NOT NULL,
  calibrated      jsonb       NOT NULL,
  quality         jsonb       NOT NULL,
  quality_tests   jsonb,
  quality_settled boolean     NOT NULL DEFAULT false,
  derived         jsonb,
  ingested_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, boot, seq, t)
) PARTITION BY RANGE (t);
CREATE INDEX observation_device_t ON cityedge.observation (device_id, t);

-- The newest reading of each device by (boot, seq): redelivery can bring an older one later.
CREATE TABLE cityedge.device_latest (
  device_id   text PRIMARY KEY,
  boot        integer     NOT NULL,
  seq         bigint      NOT NULL,
  t           timestamptz NOT NULL,
  site_id     text        NOT NULL,
  kind        text        NOT NULL,
  observation jsonb       NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Final QC flags that arrived (in a later reading's "settles") before the reading they settle.
CREATE TABLE cityedge.pending_settle (
  device_id     text    NOT NULL,
  boot          integer NOT NULL,
  seq           bigint  NOT NULL,
  quality       jsonb   NOT NULL,
  quality_tests jsonb   NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, boot, seq)
);

CREATE TABLE cityedge.device_status (
  device_id   text        NOT NULL,
  last_seen   timestamptz NOT NULL,
  state       text        NOT NULL,
  site_id     text        NOT NULL,
  gateway_id  text        NOT NULL,
  kind        text,
  doc         jsonb       NOT NULL,
  ingested_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, last_seen, state)
) PARTITION BY RANGE (last_seen);

CREATE TABLE cityedge.gateway_health (
  gateway_id  text        NOT NULL,
  t           timestamptz NOT NULL,
  state       text        NOT NULL,
  site_id     text        NOT NULL,
  doc         jsonb       NOT NULL,
  ingested_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (gateway_id, t, state)
) PARTITION BY RANGE (t);

CREATE TABLE cityedge.alert (
  device_id   text        NOT NULL,
  alert       text        NOT NULL,
  state       text        NOT NULL,
  t           timestamptz NOT NULL,
  site_id     text        NOT NULL,
  gateway_id  text        NOT NULL,
  kind        text        NOT NULL,
  severity    text        NOT NULL,
  value       double precision,
  unit        text,
  doc         jsonb       NOT NULL,
  ingested_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, alert, state, t)
) PARTITION BY RANGE (t);

-- Messages the sink could not accept (not JSON, against the contract): kept to be looked at,
-- acknowledged so that the broker does not redeliver them for ever.
CREATE TABLE cityedge.rejected (
  id          bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL DEFAULT now(),
  topic       text        NOT NULL,
  payload     bytea       NOT NULL,
  reason      text        NOT NULL
);

-- Monthly partitions are made on demand by the sink, which is not the tables' owner: this
-- function runs with the owner's rights and only makes partitions of the four tables.
CREATE FUNCTION cityedge.ensure_month_partition(parent text, month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = cityedge, pg_temp AS $fn$
DECLARE
  start date := date_trunc('month', month)::date;
  part text := format('%s_%s', parent, to_char(start, 'YYYY_MM'));
BEGIN
  IF parent NOT IN ('observation', 'device_status', 'gateway_health', 'alert') THEN
    RAISE EXCEPTION 'not a partitioned CityEdge table: %', parent;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('cityedge.partition.' || part));
  IF to_regclass('cityedge.' || part) IS NULL THEN
    EXECUTE format(
      'CREATE TABLE cityedge.%I PARTITION OF cityedge.%I FOR VALUES FROM (%L) TO (%L)',
      part, parent,
      (start::timestamp AT TIME ZONE 'UTC'),
      ((start + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
  END IF;
  RETURN part;
END $fn$;

-- Retention: drop whole monthly partitions that end on or before `before` (no row-by-row
-- DELETE, no table bloat). Returns the partitions dropped.
CREATE FUNCTION cityedge.drop_partitions_before(parent text, before date) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = cityedge, pg_temp AS $fn$
DECLARE
  part record;
  month date;
BEGIN
  IF parent NOT IN ('observation', 'device_status', 'gateway_health', 'alert') THEN
    RAISE EXCEPTION 'not a partitioned CityEdge table: %', parent;
  END IF;
  FOR part IN
    SELECT c.relname FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = 'cityedge' AND p.relname = parent
  LOOP
    month := to_date(right(part.relname, 7), 'YYYY_MM');
    IF (month + interval '1 month')::date <= before THEN
      EXECUTE format('DROP TABLE cityedge.%I', part.relname);
      RETURN NEXT part.relname;
    END IF;
  END LOOP;
END $fn$;

REVOKE ALL ON FUNCTION cityedge.ensure_month_partition(text, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION cityedge.drop_partitions_before(text, date) FROM PUBLIC;
GRANT USAGE ON SCHEMA cityedge TO cityedge_writer, cityedge_reader;
GRANT SELECT ON public.alembic_version TO cityedge_writer, cityedge_reader;
GRANT SELECT, INSERT, UPDATE ON cityedge.observation, cityedge.device_latest,
  cityedge.device_status, cityedge.gateway_health, cityedge.alert TO cityedge_writer;
GRANT SELECT, INSERT, DELETE ON cityedge.pending_settle TO cityedge_writer;
GRANT INSERT ON cityedge.rejected TO cityedge_writer;
GRANT USAGE ON SEQUENCE cityedge.rejected_id_seq TO cityedge_writer;
GRANT EXECUTE ON FUNCTION cityedge.ensure_month_partition(text, date) TO cityedge_writer;
GRANT SELECT ON cityedge.observation, cityedge.device_latest, cityedge.device_status,
  cityedge.gateway_health, cityedge.alert TO cityedge_reader;
"""

DOWNGRADE = r"""
DROP SCHEMA cityedge CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
