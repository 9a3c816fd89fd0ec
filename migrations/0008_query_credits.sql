-- Query credits (src/llm/limiter.rs): a task may hold one query embedding's
-- budget reserved ahead and send it later than its moment, so a search does not
-- wait for a round trip to this row. A late send falls outside the window its
-- reservation was counted in, so every reservation keeps room in both bursts for
-- the credits the fleet may hold: `p_*_held` per task (a fleet-wide constant),
-- times the tasks seen in the last `p_member_ttl`. A credit lapses within the
-- member TTL of the reservation that made it, so every holder is counted.
--
-- Otherwise the same as the ten-argument `embed_lease` of 0005, which now calls
-- this one (keeping no room) for tasks of the previous release during a rolling
-- deploy: they hold no credits, and one body decides every reservation.
CREATE FUNCTION embed_lease(
    p_key text, p_member uuid, p_requests integer, p_tokens integer,
    p_request_interval double precision, p_request_burst double precision,
    p_token_interval double precision, p_token_burst double precision,
    p_recovery double precision, p_member_ttl double precision,
    p_request_held double precision, p_token_held double precision
) RETURNS TABLE (ready_in double precision, slowdown integer, members integer, member_rank integer)
LANGUAGE plpgsql AS $$
DECLARE
    now_s double precision := extract(epoch FROM clock_timestamp());
    b embed_rate_buckets;
    n integer;
    my_rank integer;
    ri double precision;
    ti double precision;
    request_burst double precision;
    token_burst double precision;
    ready double precision;
BEGIN
    -- Counted before the bucket's lock (the room depends on it); the rows are
    -- written in 0005's order, bucket then members.
    SELECT count(*) FILTER (WHERE m.id <> p_member)::integer + 1,
           (count(*) FILTER (WHERE m.id < p_member))::integer
      INTO n, my_rank
      FROM fleet_members m WHERE m.last_seen > now_s - p_member_ttl;
    -- Room for the credits; never below half the burst (the limiter stops
    -- taking credits before a fleet is large enough to reach that floor).
    request_burst := greatest(p_request_burst - n * p_request_held, p_request_burst / 2);
    token_burst := greatest(p_token_burst - n * p_token_held, p_token_burst / 2);

    INSERT INTO embed_rate_buckets (key) VALUES (p_key) ON CONFLICT DO NOTHING;
    SELECT * INTO b FROM embed_rate_buckets WHERE key = p_key FOR UPDATE;
    WHILE b.slowdown > 1 AND now_s - b.throttled_at >= p_recovery LOOP
        b.slowdown := b.slowdown / 2;
        b.throttled_at := b.throttled_at + p_recovery;
    END LOOP;
    ri := p_request_interval * b.slowdown;
    ti := p_token_interval * b.slowdown;
    ready := greatest(now_s, b.paused_until,
                      b.request_tat + (p_requests - request_burst) * ri,
                      b.token_tat + (p_tokens - token_burst) * ti);
    UPDATE embed_rate_buckets
       SET request_tat = greatest(b.request_tat, ready) + p_requests * ri,
           token_tat = greatest(b.token_tat, ready) + p_tokens * ti,
           slowdown = b.slowdown,
           throttled_at = b.throttled_at
     WHERE key = p_key;
    INSERT INTO fleet_members (id, last_seen) VALUES (p_member, now_s)
        ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen;
    DELETE FROM fleet_members WHERE last_seen < now_s - 3600;
    RETURN QUERY SELECT ready - now_s, b.slowdown, n, my_rank;
END
$$;

CREATE OR REPLACE FUNCTION embed_lease(
    p_key text, p_member uuid, p_requests integer, p_tokens integer,
    p_request_interval double precision, p_request_burst double precision,
    p_token_interval double precision, p_token_burst double precision,
    p_recovery double precision, p_member_ttl double precision
) RETURNS TABLE (ready_in double precision, slowdown integer, members integer, member_rank integer)
LANGUAGE sql AS $$
    SELECT * FROM embed_lease(p_key, p_member, p_requests, p_tokens, p_request_interval, p_request_burst,
                              p_token_interval, p_token_burst, p_recovery, p_member_ttl, 0::float8, 0::float8)
$$;
