/* lsn: being written */
