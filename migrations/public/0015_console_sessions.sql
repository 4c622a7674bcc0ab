-- The operators' console (src/http/console, docs/operations.md "The console"): its sign-in
-- sessions. The browser holds a random session id in an HttpOnly cookie; only its SHA-256
-- is kept here, so a copy of this table opens no session. A session ends when it is
-- revoked (sign-out) or has been idle longer than the console's idle timeout; ended rows
-- are deleted by the next sign-in.

CREATE TABLE public.console_sessions (
    id_hash       bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    -- Who signed in: `admin-token` for the admin-token sign-in.
    operator      text NOT NULL CHECK (length(operator) BETWEEN 1 AND 255),
    ip_address    inet,
    user_agent    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX console_sessions_last_seen ON public.console_sessions (last_seen_at);

REVOKE ALL ON public.console_sessions FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.console_sessions TO capliquify_service;
