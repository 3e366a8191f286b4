-- Certificates and custom domains (issue 16).

-- Why the last order for a domain failed, in the CA's words (shown by the
-- API and CLI); NULL when it did not fail.
ALTER TABLE acme_challenges ADD COLUMN last_error VARCHAR(1024) NULL;

-- Domains the platform itself needs certificates for (its wildcard) live in
-- custom_domains too, pre-verified and owned by no user workspace; this
-- marks them so no user listing or deletion ever touches them.
ALTER TABLE custom_domains ADD COLUMN platform BOOLEAN NOT NULL DEFAULT FALSE;

-- Which environment's routes a verified domain follows is a lookup by
-- domain (the edge route) and by environment (listing).
CREATE INDEX custom_domains_environment ON custom_domains (environment_id, domain);
CREATE INDEX custom_domains_domain ON custom_domains (domain, verification_status);
