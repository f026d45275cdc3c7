-- the timed writes of store_layouts.sql (included twice: cold, then warm)
\echo '1. store: close, then write the new row versions'
BEGIN;
UPDATE st SET v_to = 2 WHERE id = ANY(ARRAY(SELECT id FROM ids)) AND v_to = 2147483647 AND v_from < 2;
INSERT INTO st SELECT * FROM newrows;
ROLLBACK;
\echo '2. store without its three GiST indexes: write the new row versions'
BEGIN;
DROP INDEX st_pre_bbox, st_ctr_bbox, st_post_bbox;
INSERT INTO st SELECT * FROM newrows;
ROLLBACK;
\echo '3. narrow roots store: close, then write'
BEGIN;
UPDATE rt SET v_to = 2 WHERE id = ANY(ARRAY(SELECT id FROM ids)) AND v_to = 2147483647 AND v_from < 2;
INSERT INTO rt SELECT id, pre_sv, pre_root, post_sv, post_root, v_from FROM newrows;
ROLLBACK;
