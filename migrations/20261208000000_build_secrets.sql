-- Build secrets (issue 17): environment variables also handed to image
-- builds as secrets (`RUN --mount=type=secret,id=KEY`), never as build
-- arguments or in a layer.
ALTER TABLE app_environment_variables
  ADD COLUMN build_secret BOOLEAN NOT NULL DEFAULT FALSE AFTER kind;

-- Which of a deployment's snapshotted variables its build receives.
ALTER TABLE deployments ADD COLUMN build_secrets JSON NULL AFTER build_args;
