//! Tests of leadership against a real PostgreSQL.
