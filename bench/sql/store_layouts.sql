-- Where a 1% version build's time goes, and what other store layouts would cost
-- (docs/versions.md, "Why a build costs ~25%, not 5%"). Run on a scratch database:
--   createdb layouts && psql -d layouts -f bench/sql/store_layouts.sql
-- It builds a 1M-row store like matengine's (synapse columns, v_from/v_to, the same seven
-- indexes), then times, each in a transaction rolled back:
--   1. closing 20k row versions (the HOT update of v_to) and writing their new versions;
--   2. the same writes with the three GiST indexes dropped (their share of the cost);
--   3. the same writes into a narrow roots-only store (id, supervoxels, roots, range);
--   4. a one-root query (200 rows) on the store vs on the narrow store joined to the
--      annotation columns by id (what the narrow layout costs every reader).
\timing off
\set QUIET on
DROP TABLE IF EXISTS st, ann, rt, seg, ids;
CREATE TABLE st (id bigint NOT NULL, created timestamptz NOT NULL,
  pre_x float8, pre_y float8, pre_z float8, ctr_x float8, ctr_y float8, ctr_z float8,
  post_x float8, post_y float8, post_z float8, size float8,
  pre_sv bigint, pre_root bigint, post_sv bigint, post_root bigint,
  v_from int NOT NULL, v_to int NOT NULL DEFAULT 2147483647) WITH (fillfactor = 90);
INSERT INTO st SELECT g, now(), random()*1e5, random()*1e5, random()*1e3, random()*1e5,
  random()*1e5, random()*1e3, random()*1e5, random()*1e5, random()*1e3, random(),
  g*7, 864691135000000000 + (g*7919) % 5000, g*11, 864691135000000000 + (g*104729) % 5000, 1
  FROM generate_series(1::bigint, 1000000::bigint) g;
CREATE INDEX st_pre_bbox ON st USING gist (point(pre_x, pre_y));
CREATE INDEX st_ctr_bbox ON st USING gist (point(ctr_x, ctr_y));
CREATE INDEX st_post_bbox ON st USING gist (point(post_x, post_y));
CREATE INDEX ON st (pre_root, v_from);
CREATE INDEX ON st (post_root, v_from);
CREATE UNIQUE INDEX ON st (id, v_from);
CREATE INDEX ON st (v_from);
CREATE TABLE ann (LIKE st) WITH (fillfactor = 90);
ALTER TABLE ann DROP COLUMN pre_sv, DROP COLUMN pre_root, DROP COLUMN post_sv, DROP COLUMN post_root;
INSERT INTO ann SELECT id, created, pre_x, pre_y, pre_z, ctr_x, ctr_y, ctr_z, post_x, post_y,
  post_z, size, v_from, v_to FROM st;
CREATE UNIQUE INDEX ON ann (id, v_from);
CREATE TABLE rt (id bigint NOT NULL, pre_sv bigint, pre_root bigint, post_sv bigint,
  post_root bigint, v_from int NOT NULL, v_to int NOT NULL DEFAULT 2147483647) WITH (fillfactor = 90);
INSERT INTO rt SELECT id, pre_sv, pre_root, post_sv, post_root, v_from, v_to FROM st;
CREATE INDEX ON rt (pre_root, v_from);
CREATE INDEX ON rt (post_root, v_from);
CREATE UNIQUE INDEX ON rt (id, v_from);
CREATE INDEX ON rt (v_from);
-- the segmentation at the new T: 1% of roots (those = 7 mod 100) changed
CREATE TABLE seg AS SELECT id, pre_sv, pre_root + 1 AS pre_root, post_sv, post_root FROM st;
ALTER TABLE seg ADD PRIMARY KEY (id);
CREATE TABLE ids AS SELECT id FROM st WHERE pre_root % 100 = 7 OR post_root % 100 = 7;
VACUUM ANALYZE;
SELECT count(*) AS rows_rewritten FROM ids;
CREATE TEMP TABLE newrows AS SELECT s.id, s.created, s.pre_x, s.pre_y, s.pre_z, s.ctr_x, s.ctr_y,
  s.ctr_z, s.post_x, s.post_y, s.post_z, s.size, g.pre_sv, g.pre_root, g.post_sv, g.post_root,
  2 AS v_from FROM st s JOIN seg g USING (id) WHERE s.id IN (SELECT id FROM ids);
SELECT count(*) FROM st WHERE pre_root = 864691135000000077;  -- warm
\timing on
\echo 'cold:'
\ir store_layouts_writes.sql
\echo 'warm:'
\ir store_layouts_writes.sql
\echo '4. one root (200 rows): store, then narrow store joined to the annotation columns'
SELECT count(*), sum(size) FROM st WHERE pre_root = 864691135000000077 AND v_from <= 1 AND v_to > 1;
SELECT count(*), sum(size) FROM st WHERE pre_root = 864691135000000077 AND v_from <= 1 AND v_to > 1;
SELECT count(*), sum(a.size) FROM rt r JOIN ann a ON a.id = r.id AND a.v_from <= 1 AND a.v_to > 1
  WHERE r.pre_root = 864691135000000077 AND r.v_from <= 1 AND r.v_to > 1;
SELECT count(*), sum(a.size) FROM rt r JOIN ann a ON a.id = r.id AND a.v_from <= 1 AND a.v_to > 1
  WHERE r.pre_root = 864691135000000077 AND r.v_from <= 1 AND r.v_to > 1;
\timing off
DROP TABLE st, ann, rt, seg, ids;
