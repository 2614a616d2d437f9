-- Where an admin action came from: `api` (the admin API) or `console` (the admin console under
-- /ui, which calls the same handlers). Shipped with the action's audit record.
ALTER TABLE llmlite_admin_action ADD COLUMN via TEXT NOT NULL DEFAULT 'api'
    CHECK (via IN ('api', 'console'));
