"""The SQL side: the services table, its migrations and the queries on it."""
