-- The target table user_logins, unchanged (README, "How it works": the table is not altered).
-- Run by the postgres image from /docker-entrypoint-initdb.d on first start.
-- login-etl adds its ledger and indexes itself (`login-etl init-db`, or `run`).
CREATE TABLE IF NOT EXISTS user_logins(
  user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
  masked_device_id varchar(256), locale varchar(32), app_version integer,
  create_date date);
