/*
 * cli_sql — `arbor sql BRANCH ['SQL']` (prefix cli_sql_): SQL on a branch's
 * running endpoint through its HTTP SQL API (compute/sqh_http.h).
 *
 * The endpoint: --endpoint NAME, else the branch's primary, else a replica,
 * else a static one (cli_endpoint_for_timeline). None running: an error
 * that says how to start one.
 *
 * Statements are split the way the sqlite3 shell does it: at a ';' that
 * sqlite3_complete() says ends a statement (so ';' inside strings, quoted
 * names, comments and CREATE TRIGGER ... END bodies does not split). One
 * statement goes to POST /v1/sql; several given together go to POST
 * /v1/batch, which runs them in ONE transaction (all or nothing). So
 * BEGIN/COMMIT cannot be used over HTTP (each request is its own
 * connection); use psql for interactive transactions.
 *
 * Without SQL: a shell that reads stdin line by line and sends a statement
 * (or the statements of one input) once it is complete; on a terminal it
 * shows the prompt "BRANCH=> " ("BRANCH-> " inside a statement). \q,
 * .quit or EOF end it.
 *
 * Output: a table like psql's (NULL as an empty cell, a BLOB as \x<hex>,
 * "(N rows)"), or the command and the rows it changed ("INSERT 0 3"); with
 * --json the endpoint's JSON answer as is. Exit code 1 when a statement
 * failed (the shell goes on with the next one).
 */
#ifndef ARBOR_CLI_SQL_H
#define ARBOR_CLI_SQL_H

#include "cli_cmd.h"

int cli_cmd_sql(cli_ctx *ctx);

#endif
