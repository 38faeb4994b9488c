-- valueledger schema: the only DDL of the project. Idempotent: applying it twice changes nothing.
-- Applied by `valueledger migrate` and at start-up, as the owner (never as the application role).

-- Roles (cluster-wide). valueledger_app is what the service runs as: it may INSERT and SELECT the
-- ledger and nothing more. valueledger_auditor may only read. Login roles are granted membership.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'valueledger_app') THEN
        CREATE ROLE valueledger_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'valueledger_auditor') THEN
        CREATE ROLE valueledger_auditor NOLOGIN;
    END IF;
EXCEPTION WHEN unique_violation OR duplicate_object THEN
    NULL;  -- another database of the cluster created it at the same moment
END
$$;

-- Epochs lead every cursor: a logical restore resets transaction ids, and a new epoch keeps
-- the (epoch, tx_id, position) order monotonic across it. See docs/event-store.md.
CREATE TABLE IF NOT EXISTS store_epochs (
    epoch      integer PRIMARY KEY CHECK (epoch >= 1),
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason     text NOT NULL
);
INSERT INTO store_epochs (epoch, reason) VALUES (1, 'store created') ON CONFLICT DO NOTHING;

-- Public keys only: private keys never enter the database.
CREATE TABLE IF NOT EXISTS signing_keys (
    key_id     text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{64}$'),
    public_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at timestamptz,
    CHECK (retired_at IS NULL OR retired_at > created_at)
);
CREATE UNIQUE INDEX IF NOT EXISTS signing_keys_one_current ON signing_keys ((true))
    WHERE retired_at IS NULL;

-- The ledger. One hash chain per tenant (seq 1, 2, 3...), one version sequence per stream.
CREATE TABLE IF NOT EXISTS events (
    position    bigint GENERATED ALWAYS AS IDENTITY,
    epoch       integer NOT NULL,
    tx_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    tenant      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),
    stream_id   text NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    type        text NOT NULL,
    canonical   bytea NOT NULL,
    data        jsonb NOT NULL,
    meta        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL,
    prev_hash   text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text NOT NULL CHECK (hash = encode(sha256(canonical), 'hex')),
    signature   text NOT NULL,
    key_id      text NOT NULL,
    PRIMARY KEY (tenant, seq),
    UNIQUE (stream_id, version)
);
-- The commit-safe read order (read_all, subscribe, projections).
CREATE INDEX IF NOT EXISTS events_commit_order ON events (epoch, tx_id, position);
-- A tenant's streams by name (EventStore.stream_ids): one entry per stream, its first event.
CREATE INDEX IF NOT EXISTS events_tenant_streams ON events (tenant, stream_id) WHERE version = 1;

-- The head of each tenant's chain. Its row lock orders appends within a tenant and never
-- across tenants; its seq and hash let verification detect a truncated tail.
CREATE TABLE IF NOT EXISTS chain_heads (
    tenant      text PRIMARY KEY,
    seq         bigint NOT NULL,
    hash        text NOT NULL,
    recorded_at timestamptz,
    key_id      text
);

-- Idempotent appends: the same key and content returns the first append's events.
CREATE TABLE IF NOT EXISTS append_idempotency (
    tenant          text NOT NULL,
    idempotency_key text NOT NULL,
    content_hash    text NOT NULL,
    first_seq       bigint NOT NULL,
    event_count     integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, idempotency_key)
);

-- Where each named subscriber (projector, webhook dispatcher...) has read up to.
CREATE TABLE IF NOT EXISTS subscription_checkpoints (
    name       text PRIMARY KEY,
    epoch      integer NOT NULL,
    tx_id      xid8 NOT NULL,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Personal data is sealed in events with one AES-256-GCM key per person (crypto-shredding):
-- the ledger can never be rewritten, so forgetting a person deletes their keys here and every
-- sealed field of theirs reads as erased, while every chain still verifies. Outside the ledger on
-- purpose, and the only table the application may DELETE from. See docs/personal-data.md.
CREATE TABLE IF NOT EXISTS person_keys (
    key_id     uuid PRIMARY KEY,
    tenant     text NOT NULL,
    subject    text NOT NULL,
    secret     bytea NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant, subject)
);

-- Who was forgotten, when and why: the key is gone, the fact that it was erased is kept.
CREATE TABLE IF NOT EXISTS forgotten_people (
    tenant       text NOT NULL,
    subject      text NOT NULL,
    forgotten_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    keys_erased  integer NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (tenant, subject, forgotten_at)
);

-- Read models: tables the projectors build from the ledger and can always rebuild (docs/
-- read-models.md). They live in schema read_models; a rebuild creates the same tables in a
-- scratch schema with this function, fills them, and swaps them in, so this file stays the
-- only DDL. Every statement is idempotent.
CREATE SCHEMA IF NOT EXISTS read_models;

CREATE OR REPLACE FUNCTION vl_create_read_models(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.receipts (
            tenant      text NOT NULL,
            seq         bigint NOT NULL,
            type        text NOT NULL,
            stream_id   text NOT NULL,
            recorded_at timestamptz NOT NULL,
            PRIMARY KEY (tenant, seq)
        );
        CREATE INDEX IF NOT EXISTS receipts_by_type ON %1$I.receipts (tenant, type, seq);

        -- The customer dashboard (projections/dashboard.py): one row per customer, and child
        -- rows per setup step, definition, approved-or-not version, period, metric and alert.
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_customers (
            tenant                text PRIMARY KEY,
            name                  text,
            currency              text,
            registered_at         timestamptz,
            stage                 text NOT NULL,
            stage_changed_at      timestamptz,
            suspended_at          timestamptz,
            setup_steps_done      integer NOT NULL,
            setup_completed_at    timestamptz,
            setup_accuracy        numeric,
            setup_verified_at     timestamptz,
            measured_accuracy     numeric,
            measured_accuracy_at  timestamptz,
            accuracy_threshold    numeric NOT NULL,
            confirmations         integer NOT NULL,
            disputes              integer NOT NULL,
            definitions           integer NOT NULL,
            definitions_in_review integer NOT NULL,
            definitions_in_force  integer NOT NULL,
            went_live_at          timestamptz,
            billing_starts_at     timestamptz,
            billing_paused_at     timestamptz,
            last_seq              bigint NOT NULL
        );
        CREATE INDEX IF NOT EXISTS dashboard_customers_by_stage
            ON %1$I.dashboard_customers (stage);
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_setup_steps (
            tenant          text NOT NULL,
            step            text NOT NULL,
            position        integer NOT NULL,
            status          text NOT NULL,
            completed_at    timestamptz NOT NULL,
            completed_by    text NOT NULL,
            times_completed integer NOT NULL,
            invalidated_at  timestamptz,
            PRIMARY KEY (tenant, step)
        );
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_definitions (
            tenant           text NOT NULL,
            definition_id    text NOT NULL,
            name             text NOT NULL,
            latest_version   integer NOT NULL,
            status           text NOT NULL,
            stage            text,
            in_force_version integer,
            approved_at      timestamptz,
            changed_at       timestamptz NOT NULL,
            PRIMARY KEY (tenant, definition_id)
        );
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_approval_outcomes (
            tenant             text NOT NULL,
            definition_id      text NOT NULL,
            version            integer NOT NULL,
            outcome            text NOT NULL,
            rounds             integer NOT NULL,
            first_submitted_at timestamptz NOT NULL,
            decided_at         timestamptz,
            PRIMARY KEY (tenant, definition_id, version)
        );
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_calculations (
            tenant             text NOT NULL,
            definition_id      text NOT NULL,
            period_start       timestamptz NOT NULL,
            period_end         timestamptz NOT NULL,
            calculation_id     text NOT NULL,
            definition_version integer NOT NULL,
            result             numeric NOT NULL,
            billable           boolean NOT NULL,
            currency           text NOT NULL,
            amount_minor_units bigint,
            calculated_at      timestamptz NOT NULL,
            calculations       integer NOT NULL,
            verdict            text,
            PRIMARY KEY (tenant, definition_id, period_start)
        );
        CREATE INDEX IF NOT EXISTS dashboard_calculations_by_period
            ON %1$I.dashboard_calculations (tenant, period_start);
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_metric_values (
            tenant         text NOT NULL,
            metric         text NOT NULL,
            value          numeric NOT NULL,
            definition_id  text NOT NULL,
            period_start   timestamptz NOT NULL,
            period_end     timestamptz NOT NULL,
            calculation_id text NOT NULL,
            calculated_at  timestamptz NOT NULL,
            PRIMARY KEY (tenant, metric)
        );
        CREATE TABLE IF NOT EXISTS %1$I.dashboard_alerts (
            tenant   text NOT NULL,
            alert_id text NOT NULL,
            severity text NOT NULL,
            status   text NOT NULL,
            PRIMARY KEY (tenant, alert_id)
        );

        -- The approvals queue (projections/approvals.py): one row per value definition, with
        -- the approval of its latest version and whose turn it is.
        CREATE TABLE IF NOT EXISTS %1$I.approvals (
            tenant             text NOT NULL,
            definition_id      text NOT NULL,
            definition_name    text NOT NULL,
            latest_version     integer NOT NULL,
            content_hash       text NOT NULL,
            status             text NOT NULL,
            version_in_review  integer,
            stage              text,
            approver           text,
            finance_approver   text,
            technical_approver text,
            executive          text,
            submitted_at       timestamptz,
            submitted_by       text,
            waiting_since      timestamptz,
            in_force_version   integer,
            last_seq           bigint NOT NULL,
            PRIMARY KEY (tenant, definition_id)
        );
        CREATE INDEX IF NOT EXISTS approvals_waiting
            ON %1$I.approvals (approver, waiting_since, tenant, definition_id)
            WHERE approver IS NOT NULL;

        -- The alerts list (projections/alerts.py): every alert, and its evidence.
        CREATE TABLE IF NOT EXISTS %1$I.alerts (
            tenant           text NOT NULL,
            alert_id         text NOT NULL,
            kind             text NOT NULL,
            severity         text NOT NULL,
            status           text NOT NULL,
            summary          text NOT NULL,
            source_reference text,
            raised_at        timestamptz NOT NULL,
            raised_by        text NOT NULL,
            raised_by_role   text NOT NULL,
            acknowledged_at  timestamptz,
            acknowledged_by  text,
            resolved_at      timestamptz,
            resolved_by      text,
            last_seq         bigint NOT NULL,
            PRIMARY KEY (tenant, alert_id)
        );
        CREATE INDEX IF NOT EXISTS alerts_newest_first
            ON %1$I.alerts (tenant, raised_at DESC, alert_id DESC);
        CREATE INDEX IF NOT EXISTS alerts_unresolved
            ON %1$I.alerts (tenant, severity, raised_at DESC, alert_id DESC)
            WHERE status <> 'resolved';
        CREATE TABLE IF NOT EXISTS %1$I.alert_evidence (
            tenant   text NOT NULL,
            alert_id text NOT NULL,
            name     text NOT NULL,
            value    text NOT NULL,
            PRIMARY KEY (tenant, alert_id, name)
        );

        -- Support tickets (projections/tickets.py): one row per ticket, no sealed text.
        CREATE TABLE IF NOT EXISTS %1$I.tickets (
            tenant            text NOT NULL,
            ticket_id         text NOT NULL,
            priority          text NOT NULL,
            status            text NOT NULL,
            opened_side       text NOT NULL,
            opened_at         timestamptz NOT NULL,
            opened_by         text NOT NULL,
            assignee          text,
            assigned_at       timestamptz,
            messages          integer NOT NULL,
            last_message_at   timestamptz,
            first_response_at timestamptz,
            status_changed_at timestamptz NOT NULL,
            first_resolved_at timestamptz,
            resolved_at       timestamptz,
            closed_at         timestamptz,
            reopened          integer NOT NULL,
            last_seq          bigint NOT NULL,
            PRIMARY KEY (tenant, ticket_id)
        );
        CREATE INDEX IF NOT EXISTS tickets_newest_first
            ON %1$I.tickets (tenant, opened_at DESC, ticket_id DESC);
        CREATE INDEX IF NOT EXISTS tickets_by_assignee
            ON %1$I.tickets (assignee, opened_at, tenant, ticket_id)
            WHERE assignee IS NOT NULL;
    $ddl$, target);
    PERFORM vl_grant_read_models(target);
END
$$;

-- The projectors run as the application role: they may change read models, never the ledger.
CREATE OR REPLACE FUNCTION vl_grant_read_models(target text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO valueledger_app, valueledger_auditor', target);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I'
                   ' TO valueledger_app', target);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO valueledger_auditor', target);
END
$$;

SELECT vl_create_read_models('read_models');

-- Local credentials, outside the ledger on purpose: a password hash is a secret that must be
-- replaceable and erasable, which the ledger never is. Roles are not kept here: a customer
-- user's role is read from their customer's account at each login (api/session_routes.py).
-- vendor_staff lists the vendor's own people (ADMIN of every tenant); `valueledger serve`
-- makes the first one; a revoked member keeps their row (revoked_at), not their password.
-- login_credentials holds one scrypt hash per local user, `tenant` '*' for vendor staff;
-- created_at is when the password was set, and a credential older than the user's current
-- invitation is refused, so a re-invited user id never inherits an earlier password
-- (api/staff.py). The application may change both; the auditor sees neither.
CREATE TABLE IF NOT EXISTS vendor_staff (
    user_id    text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
CREATE TABLE IF NOT EXISTS login_credentials (
    tenant        text NOT NULL CHECK (tenant = '*' OR tenant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    user_id       text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    password_hash text NOT NULL CHECK (password_hash ~ '^(scrypt|argon2id)\$'),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, user_id)
);
REVOKE ALL ON vendor_staff, login_credentials FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON vendor_staff, login_credentials TO valueledger_app;

-- Outbound webhooks (workers/webhooks.py, docs/webhooks.md): one row per event and endpoint,
-- written in the same transaction that moves the endpoint's checkpoint ('webhooks:<id>' in
-- subscription_checkpoints), so every event is queued exactly once for every endpoint that
-- wants it. The row is the delivery's durable state; the arq job only runs it. `attempts`
-- counts attempts started; while one is running, next_attempt_at is its lease's end, so an
-- attempt lost with its worker is picked up again once the lease lapses. Not the ledger: rows
-- change as deliveries go, and the ledger's own events say nothing about them.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    endpoint_id     text NOT NULL CHECK (endpoint_id ~ '^[a-z0-9][a-z0-9-]{0,39}$'),
    tenant          text NOT NULL,
    seq             bigint NOT NULL CHECK (seq >= 1),
    event_type      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    PRIMARY KEY (endpoint_id, tenant, seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
REVOKE ALL ON webhook_deliveries FROM PUBLIC;
-- DELETE: finished deliveries are pruned after their retention (workers.webhooks.prune).
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_deliveries TO valueledger_app;

-- The ledger is append-only, whoever asks: these triggers refuse even the owner. The only way
-- around them is a superuser disabling triggers, which the verifier then catches.
CREATE OR REPLACE FUNCTION vl_refuse_ledger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE OR REPLACE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION vl_refuse_ledger_change();
CREATE OR REPLACE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION vl_refuse_ledger_change();

-- Detect a logical restore: rows of the current epoch carrying transaction ids from the future
-- mean the ids were reset, so a new epoch begins and cursors stay monotonic.
DO $$
DECLARE
    current_epoch integer;
BEGIN
    SELECT max(epoch) INTO current_epoch FROM store_epochs;
    IF EXISTS (SELECT 1 FROM events WHERE epoch = current_epoch
               AND tx_id >= pg_current_xact_id()) THEN
        INSERT INTO store_epochs (epoch, reason)
            VALUES (current_epoch + 1, 'transaction ids reset (logical restore)');
    END IF;
END
$$;

REVOKE ALL ON events, chain_heads, append_idempotency, signing_keys, store_epochs,
    subscription_checkpoints, person_keys, forgotten_people FROM PUBLIC;
GRANT SELECT, INSERT ON events TO valueledger_app;
GRANT SELECT, INSERT, UPDATE ON chain_heads TO valueledger_app;
GRANT SELECT, INSERT ON append_idempotency TO valueledger_app;
GRANT SELECT ON signing_keys, store_epochs TO valueledger_app;
GRANT SELECT, INSERT, UPDATE ON subscription_checkpoints TO valueledger_app;
GRANT SELECT, INSERT, DELETE ON person_keys TO valueledger_app;
GRANT SELECT, INSERT ON forgotten_people TO valueledger_app;
GRANT SELECT ON events, chain_heads, signing_keys, store_epochs TO valueledger_auditor;

-- Seeing which transaction holds readers back (EventStore.held_back) needs the other sessions'
-- xact_start. Only a superuser or a holder of the ADMIN option may grant this; elsewhere the
-- lag age reads 0 and an operator grants it by hand (docs/event-store.md).
DO $$
BEGIN
    GRANT pg_read_all_stats TO valueledger_app;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_read_all_stats not granted to valueledger_app: grant it as a superuser';
END
$$;
