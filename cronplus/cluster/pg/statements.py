"""The SQL a node runs for claims, leases and heartbeats (``claims.py`` runs it).

Constant strings, so psycopg prepares each once per connection. Every instant compared
with a lease is the database's ``clock_timestamp()``, never a node's clock.
"""

HEARTBEAT = """
    INSERT INTO nodes AS n (name, host, pid, tags, lease, definitions, running, capacity,
                            started_at, heartbeat_at, stopped_at, clock_offset, refusing,
                            incarnation)
    VALUES (%(node)s, %(host)s, %(pid)s, %(tags)s, %(lease)s, %(definitions)s, %(running)s,
            %(capacity)s, clock_timestamp(), clock_timestamp(), NULL, %(clock_offset)s,
            %(refusing)s, %(incarnation)s)
    ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid,
        tags = excluded.tags, lease = excluded.lease, definitions = excluded.definitions,
        running = excluded.running, capacity = excluded.capacity,
        heartbeat_at = excluded.heartbeat_at, stopped_at = NULL,
        clock_offset = excluded.clock_offset, refusing = excluded.refusing,
        incarnation = excluded.incarnation,
        started_at = CASE WHEN %(joining)s THEN excluded.started_at ELSE n.started_at END
    WHERE %(joining)s OR n.incarnation IS NOT DISTINCT FROM excluded.incarnation
    RETURNING clock_timestamp()
"""
"""No row back: another start of this node has joined since (it holds the node's lock,
which this one lost with its connection): this one must stop."""
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
        INSERT INTO claims (job, scheduled_at, node, token, status, claimed_at, lease_until,
                            incarnation)
        SELECT %(job)s, %(slot)s, %(node)s, %(token)s,
               CASE WHEN %(forbid)s AND EXISTS (SELECT 1 FROM busy) THEN 'skipped'
                    ELSE 'running' END,
               clock_timestamp(), clock_timestamp() + %(lease)s, %(incarnation)s
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
_DEAD = """
    c.status = 'running' AND (
        -- a newer incarnation of its node is live: this one is gone (its advisory lock
        -- with it), whatever the lease says
        EXISTS (SELECT 1 FROM nodes n WHERE n.name = c.node AND n.stopped_at IS NULL
                AND n.heartbeat_at + n.lease > clock_timestamp()
                AND n.incarnation IS DISTINCT FROM c.incarnation)
        -- or its lease ran out and no live incarnation holds it
        OR c.lease_until < clock_timestamp()
           AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = c.node
                           AND n.stopped_at IS NULL
                           AND n.heartbeat_at + n.lease > clock_timestamp()
                           AND n.incarnation IS NOT DISTINCT FROM c.incarnation))
"""
EXPIRED = f"""
    SELECT c.job, c.scheduled_at, c.node, c.attempt, c.started_at, c.lease_until, c.token
    FROM claims c WHERE {_DEAD}
    ORDER BY c.scheduled_at LIMIT 100
"""
"""RUNNING claims of a dead incarnation: its node restarted, or stopped heartbeating and
let the lease run out."""
TAKE_OVER = f"""
    UPDATE claims c SET node = %(node)s, token = %(token)s, incarnation = %(incarnation)s,
        takeovers = takeovers + 1, lease_until = clock_timestamp() + %(lease)s,
        attempt = 0, started_at = NULL, pid = NULL, stop_reason = NULL
    WHERE c.job = %(job)s AND c.scheduled_at = %(slot)s AND c.token = %(old)s AND {_DEAD}
    RETURNING status
"""
"""The claim as ``EXPIRED`` saw it (its token) and still dead: a node that was only late
and renewed since keeps it."""
START = """
    UPDATE claims SET lease_until = greatest(lease_until, clock_timestamp() + %(lease)s),
        attempt = %(attempt)s
    WHERE job = %(job)s AND scheduled_at = %(slot)s AND token = %(token)s
      AND status = 'running'
    RETURNING 1
"""
"""The fence before an attempt starts: the claim is still this node's (nobody took it over:
a takeover replaces the token), and its lease runs a whole lease from now."""
GIVE_UP = """
    UPDATE claims SET incarnation = NULL, lease_until = least(lease_until, clock_timestamp())
    WHERE job = %s AND scheduled_at = %s AND token = %s AND status = 'running'
"""
"""A claim its node gives up unstarted (a shutdown, a start it could not confirm): dead at
once, so a live node takes it over at its next heartbeat."""
SET_STATUS = """
    UPDATE claims SET status = %s, lease_until = least(lease_until, clock_timestamp())
    WHERE job = %s AND scheduled_at = %s AND token = %s
"""
CLAIM_ONCE = """
    INSERT INTO claims AS c (job, scheduled_at, node, token, status, claimed_at, lease_until)
    VALUES (%(job)s, %(slot)s, %(node)s, coalesce(%(token)s, gen_random_uuid()), %(status)s,
            clock_timestamp(), clock_timestamp())
    ON CONFLICT (job, scheduled_at) DO UPDATE SET status = excluded.status,
        lease_until = excluded.lease_until
    WHERE c.token = %(token)s AND c.status = 'running'
    RETURNING 1
"""
"""A slot recorded once (skipped, missed) by whichever node comes first; ``token``: a claim
of this node's whose answer never came (the on-time timeout) becomes the record."""
REWIND_LEDGER = (
    "INSERT INTO ledger (job, slot) VALUES (%(job)s, %(slot)s - interval '1 microsecond')"
    " ON CONFLICT (job) DO UPDATE SET slot = least(ledger.slot, excluded.slot)"
)
"""A slot that was waiting for its claim when its node stopped: the next start catches
it up by the job's ``catchup`` (the ledger counts it not handled)."""
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
