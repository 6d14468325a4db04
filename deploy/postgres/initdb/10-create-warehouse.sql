-- Run once by the postgres image, when its data volume is first initialized (as the superuser
-- DAGSTER_PG_USER, after it has created DAGSTER_PG_DB for Dagster's own storage). The warehouse
-- gets a database of its own on the same server: CLOUDWASTE_DATABASE_URL in .env points at it.
CREATE DATABASE cloudwaste;
