"""The SQL a node runs for claims, leases and heartbeats (``claims.py`` runs it).

Constant strings, so psycopg prepares each once per connection. Every instant compared
with a lease is the database's ``clock_timestamp()``, never a node's clock.
"""

HEARTBEAT = """
    INSERT INTO nodes AS n (name, host, pid, tags, lease, definitions, running, capacity,
                            started_at, heartbeat_at, stopped_at)
    VALUES (%(node)s, %(host)s, %(pid)s, %(tags)s, %(lease)s, %(definitions)s, %(running)s,
            %(capacity)s, clock_timestamp(), clock_timestamp(), NULL)
    ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
        tags = excluded.tags, lease = excluded.lease, definitions = excluded.definitions,
        running = excluded.running, capacity = excluded.capacity,
        heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,
        started_at = CASE WHEN %(joining)s THEN excluded.started_at ELSE n.started_at END
"""
CLAIM = """
    WITH busy AS (
        SELECT scheduled_at, node FROM claims
        WHERE job = %(job)s AND status = 'running' AND scheduled_at <> %(slot)s
          AND lease_until > clock_timestamp()
        ORDER BY scheduled_at DESC LIMIT 1),
    stop AS (
        UPDATE claims SET stop_reason = %(stop_reason)s
        WHERE %(replace)s AND job = %(job)s AND status = 'running' AND scheduled_at < %(slot)s
          AND lease_until > clock_timestamp()
          AND NOT EXISTS (SELECT 1 FROM claims WHERE job = %(job)s AND scheduled_at = %(slot)s)
        RETURNING 1),
    claimed AS (
        INSERT INTO claims (job, scheduled_at, node, token, status, claimed_at, lease_until)
        SELECT %(job)s, %(slot)s, %(node)s, %(token)s,
               CASE WHEN %(forbid)s AND EXISTS (SELECT 1 FROM busy) THEN 'skipped'
                    ELSE 'running' END,
               clock_timestamp(), clock_timestamp() + %(lease)s
        ON CONFLICT (job, scheduled_at) DO NOTHING
        RETURNING status)
    SELECT status, (SELECT scheduled_at FROM busy), (SELECT node FROM busy) FROM claimed
    UNION ALL  -- the row an earlier try of ours committed, if its answer was lost
    SELECT status, NULL, NULL FROM claims
    WHERE job = %(job)s AND scheduled_at = %(slot)s AND token = %(token)s
"""
MINE = "SELECT status FROM claims WHERE job = %s AND scheduled_at = %s AND token = %s"
RENEW = """
    UPDATE claims SET lease_until = clock_timestamp() + %(lease)s
    WHERE status = 'running' AND token = ANY(%(tokens)s)
    RETURNING token, stop_reason
"""
EXPIRED = """
    SELECT c.job, c.scheduled_at, c.node, c.attempt, c.started_at, c.lease_until FROM claims c
    WHERE c.status = 'running' AND c.lease_until < clock_timestamp()
      AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = c.node AND n.stopped_at IS NULL
                      AND n.heartbeat_at + n.lease > clock_timestamp())
    ORDER BY c.scheduled_at LIMIT 100
"""
TAKE_OVER = """
    UPDATE claims SET node = %(node)s, token = %(token)s, takeovers = takeovers + 1,
        lease_until = clock_timestamp() + %(lease)s, attempt = 0, started_at = NULL,
        pid = NULL, stop_reason = NULL
    WHERE job = %(job)s AND scheduled_at = %(slot)s AND status = 'running'
      AND lease_until < clock_timestamp()
    RETURNING status
"""
SET_STATUS = """
    UPDATE claims SET status = %s, lease_until = least(lease_until, clock_timestamp())
    WHERE job = %s AND scheduled_at = %s AND token = %s
"""
CLAIM_ONCE = """
    INSERT INTO claims (job, scheduled_at, node, token, status, claimed_at, lease_until)
    VALUES (%s, %s, %s, gen_random_uuid(), %s, clock_timestamp(), clock_timestamp())
    ON CONFLICT (job, scheduled_at) DO NOTHING RETURNING 1
"""
BEGIN = (
    "UPDATE claims SET attempt = %s, started_at = %s, pid = %s"
    " WHERE job = %s AND scheduled_at = %s AND token = %s"
)
PRUNE = """
    DELETE FROM claims WHERE (job, scheduled_at) IN (
        SELECT job, scheduled_at FROM claims
        WHERE scheduled_at < clock_timestamp() - %s AND status <> 'running' LIMIT 2000)
"""
PRUNE_BATCH, PRUNE_BATCHES = 2000, 10
"""At most 20,000 claims per prune, 2,000 per statement, so no statement holds many locks."""
