-- One embedding cap for the whole fleet (src/llm/limiter.rs explains the design).
--
-- `embed_rate_buckets` holds one GCRA state per provider account: the
-- theoretical arrival times of the request and token buckets, the pause and
-- slowdown a 429 put on every task. Times are seconds since the epoch by the
-- database's clock, the one clock every task shares.
CREATE TABLE embed_rate_buckets (
    key             text PRIMARY KEY,
    request_tat     double precision NOT NULL DEFAULT 0,
    token_tat       double precision NOT NULL DEFAULT 0,
    paused_until    double precision NOT NULL DEFAULT 0,
    slowdown        integer NOT NULL DEFAULT 1,
    throttled_at    double precision NOT NULL DEFAULT 0,
    throttled_total bigint NOT NULL DEFAULT 0
);

-- Tasks that leased embedding budget recently: the in-flight cap is shared
-- among them. A task that dies simply stops being seen.
CREATE TABLE fleet_members (
    id        uuid PRIMARY KEY,
    last_seen double precision NOT NULL
);

-- Reserves `p_requests` requests and `p_tokens` tokens for one moment, the
-- earliest at which sending them keeps both buckets within their bursts, and
-- returns how long from now that is. A reservation is a promise to send at that
-- moment (or not at all): GCRA then guarantees that no window holds more than
-- burst + rate x window, whichever task sends. One statement, so the row lock
-- is never held across a network round trip.
CREATE FUNCTION embed_lease(
    p_key text, p_member uuid, p_requests integer, p_tokens integer,
    p_request_interval double precision, p_request_burst double precision,
    p_token_interval double precision, p_token_burst double precision,
    p_recovery double precision, p_member_ttl double precision
) RETURNS TABLE (ready_in double precision, slowdown integer, members integer, member_rank integer)
LANGUAGE plpgsql AS $$
DECLARE
    now_s double precision := extract(epoch FROM clock_timestamp());
    b embed_rate_buckets;
    ri double precision;
    ti double precision;
    ready double precision;
BEGIN
    INSERT INTO embed_rate_buckets (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    SELECT * INTO b FROM embed_rate_buckets WHERE key = p_key FOR UPDATE;
    -- Each quiet recovery period halves the slowdown a 429 set.
    WHILE b.slowdown > 1 AND now_s - b.throttled_at >= p_recovery LOOP
        b.slowdown := b.slowdown / 2;
        b.throttled_at := b.throttled_at + p_recovery;
    END LOOP;
    ri := p_request_interval * b.slowdown;
    ti := p_token_interval * b.slowdown;
    ready := greatest(now_s, b.paused_until,
                      b.request_tat + (p_requests - p_request_burst) * ri,
                      b.token_tat + (p_tokens - p_token_burst) * ti);
    UPDATE embed_rate_buckets
       SET request_tat = greatest(b.request_tat, ready) + p_requests * ri,
           token_tat = greatest(b.token_tat, ready) + p_tokens * ti,
           slowdown = b.slowdown,
           throttled_at = b.throttled_at
     WHERE key = p_key;
    INSERT INTO fleet_members (id, last_seen) VALUES (p_member, now_s)
        ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen;
    DELETE FROM fleet_members WHERE last_seen < now_s - 3600;
    RETURN QUERY
        SELECT ready - now_s, b.slowdown,
               count(*)::integer,
               (count(*) FILTER (WHERE m.id < p_member))::integer
          FROM fleet_members m WHERE m.last_seen > now_s - p_member_ttl;
END
$$;

-- A 429 pauses every task until `p_pause` from now and doubles the slowdown,
-- once per burst of 429s: several tasks throttled by the same moment of
-- overload slow the fleet once, not once each.
CREATE FUNCTION embed_throttled(p_key text, p_pause double precision, p_max_slowdown integer)
RETURNS TABLE (slowdown integer, paused_for double precision)
LANGUAGE plpgsql AS $$
DECLARE
    now_s double precision := extract(epoch FROM clock_timestamp());
BEGIN
    INSERT INTO embed_rate_buckets (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    RETURN QUERY
    UPDATE embed_rate_buckets b
       SET paused_until = greatest(b.paused_until, now_s + p_pause),
           slowdown = CASE WHEN now_s < b.paused_until THEN b.slowdown
                           ELSE least(b.slowdown * 2, p_max_slowdown) END,
           throttled_at = now_s,
           throttled_total = b.throttled_total + 1
     WHERE b.key = p_key
    RETURNING b.slowdown, b.paused_until - now_s;
END
$$;
