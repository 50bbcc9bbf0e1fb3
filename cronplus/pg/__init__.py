"""PostgreSQL for cluster mode: the only package that imports psycopg."""
