-- Per-tenant spend limits, enforced before each model call (src/budget.rs).
--
-- A call first *reserves* what it may cost at most (its input tokens, and its
-- output at the call's max_tokens); the reservation is refused if spent plus
-- everything reserved plus it would pass a hard limit. When the call ends, the
-- usage writer adds what the provider reported to `budget_spend` and deletes the
-- reservation in the same transaction as the `model_calls` rows, so spend and
-- reservations never count a call twice or not at all, and `budget_spend`
-- equals the sum of `model_calls.cost_usd`. Every task of the fleet goes
-- through these rows, so the limits hold for the deployment; periods are UTC
-- days and months on the database's clock, so task clocks do not matter.

-- Limits set by the operator (`stolid budgets set`); NULL is no limit. A tenant
-- may set its own soft limit below the operator's (`PUT /v1/budget`).
CREATE TABLE budgets (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    usd_per_day      double precision CHECK (usd_per_day >= 0),
    usd_per_month    double precision CHECK (usd_per_month >= 0),
    tokens_per_day   bigint CHECK (tokens_per_day >= 0),
    soft_usd_per_day double precision CHECK (soft_usd_per_day >= 0),
    tenant_soft_usd_per_day double precision CHECK (tenant_soft_usd_per_day >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- What each tenant spent per UTC day (every tenant, budget or not, so a limit
-- set mid-day counts the morning). A month is the sum of its days.
-- `soft_crossed_at` marks the day's soft-limit crossing, logged once.
CREATE TABLE budget_spend (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day             date NOT NULL,
    spent_usd       double precision NOT NULL DEFAULT 0,
    spent_tokens    bigint NOT NULL DEFAULT 0,
    soft_crossed_at timestamptz,
    PRIMARY KEY (tenant_id, day)
);

-- Calls in flight. A task that dies mid-call leaves its reservation behind; it
-- stops counting at `expires_at` (and the sweeper deletes it).
CREATE TABLE budget_reservations (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    usd        double precision NOT NULL,
    tokens     bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX budget_reservations_tenant_idx ON budget_reservations (tenant_id, expires_at);

-- The first hard limit that `p_usd` and `p_tokens` more would pass, or no row.
-- Reservations and spend are read in one statement (one snapshot): a call
-- settling meanwhile is seen either as reserved or as spent, never as neither.
CREATE FUNCTION budget_refusal(p_tenant uuid, p_usd double precision, p_tokens bigint)
RETURNS TABLE (period text, unit text, limit_value double precision, used double precision,
               resets_at timestamptz)
LANGUAGE sql STABLE AS $$
    WITH clock AS (
        SELECT (now() AT TIME ZONE 'UTC')::date AS today,
               date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month_start
    ), held AS (
        SELECT coalesce(sum(r.usd), 0) AS usd, coalesce(sum(r.tokens), 0)::double precision AS tokens
          FROM budget_reservations r WHERE r.tenant_id = p_tenant AND r.expires_at > now()
    ), spent AS (
        SELECT coalesce(sum(s.spent_usd) FILTER (WHERE s.day = c.today), 0) AS day_usd,
               coalesce(sum(s.spent_tokens) FILTER (WHERE s.day = c.today), 0)::double precision AS day_tokens,
               coalesce(sum(s.spent_usd), 0) AS month_usd
          FROM clock c LEFT JOIN budget_spend s ON s.tenant_id = p_tenant AND s.day >= c.month_start
    ), checks AS (
        SELECT 1 AS rank, 'day' AS period, 'usd' AS unit, b.usd_per_day AS limit_value,
               sp.day_usd + h.usd AS used, p_usd AS more,
               ((c.today + 1)::timestamp AT TIME ZONE 'UTC') AS resets_at
          FROM budgets b, held h, spent sp, clock c WHERE b.tenant_id = p_tenant
        UNION ALL
        SELECT 2, 'month', 'usd', b.usd_per_month, sp.month_usd + h.usd, p_usd,
               ((c.month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC')
          FROM budgets b, held h, spent sp, clock c WHERE b.tenant_id = p_tenant
        UNION ALL
        SELECT 3, 'day', 'tokens', b.tokens_per_day::double precision, sp.day_tokens + h.tokens,
               p_tokens::double precision, ((c.today + 1)::timestamp AT TIME ZONE 'UTC')
          FROM budgets b, held h, spent sp, clock c WHERE b.tenant_id = p_tenant
    )
    SELECT period, unit, limit_value, used, resets_at FROM checks
     WHERE limit_value IS NOT NULL AND used + more > limit_value
     ORDER BY rank LIMIT 1
$$;

-- Reserves `p_usd` and `p_tokens` for a call unless a hard limit would be
-- passed; returns the refusal (see `budget_refusal`) or no row when reserved.
-- The tenant's `budgets` row is locked first, so a tenant's reservations are
-- decided one at a time across the fleet: concurrent calls cannot all fit in
-- the same remaining room.
CREATE FUNCTION budget_reserve(p_tenant uuid, p_id uuid, p_usd double precision, p_tokens bigint,
                               p_ttl_secs double precision)
RETURNS TABLE (period text, unit text, limit_value double precision, used double precision,
               resets_at timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM budgets b WHERE b.tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RETURN; -- no limits: nothing to hold
    END IF;
    RETURN QUERY SELECT * FROM budget_refusal(p_tenant, p_usd, p_tokens);
    IF NOT FOUND THEN
        INSERT INTO budget_reservations (id, tenant_id, usd, tokens, expires_at)
        VALUES (p_id, p_tenant, p_usd, p_tokens, now() + make_interval(secs => p_ttl_secs));
    END IF;
END
$$;

-- A document whose indexing waits for its tenant's budget: `queued`, with the
-- reason in `error`, until the limit resets or is raised (the sweeper resumes it).
ALTER TABLE documents ADD COLUMN paused_until timestamptz;
CREATE INDEX documents_paused_idx ON documents (tenant_id) WHERE paused_until IS NOT NULL;
