/* wal_record: being written */
