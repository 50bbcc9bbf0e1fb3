"""PostgreSQL for cluster mode: the only package that imports psycopg.

psycopg is the ``cluster`` extra (``pip install 'cronplus[cluster]'``), not a dependency of
every installation: ``cronplus.config.dsn.driver_missing()`` lets ``validate`` say so before
anything imports it.
"""
