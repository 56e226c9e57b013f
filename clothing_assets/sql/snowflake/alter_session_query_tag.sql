-- Tag every query of this connection with the Dagster run that issued it (QUERY_HISTORY).
ALTER SESSION SET QUERY_TAG = %(tag)s;
