# Recipes mirror `cargo xtask` (which works without `just`).

default:
    @just --list

# Start the local stack and deploy the demo app, until Ctrl-C (state and logs in .dev/).
dev:
    cargo xtask dev

# Install what is missing, then run every test with cargo-nextest.
test *ARGS:
    cargo xtask test {{ARGS}}

# Control-plane overhead of a deploy next to a bare Restate handler.
bench *ARGS:
    cargo bench -p ctrl-worker --bench deploy_overhead -- {{ARGS}}

# Provision-to-healthy and rolling-deploy times of the Docker backend on podman.
bench-docker *ARGS:
    cargo bench -p ctrl-provider --bench docker_rollout -- {{ARGS}}

# Latency of small RPCs over gRPC, Connect and gRPC-Web (with and without TCP_NODELAY).
bench-rpc *ARGS:
    cargo bench -p ctrl-api --bench rpc_latency -- {{ARGS}}

# The local stack under random SIGKILLs, its invariants checked each round.
chaos ROUNDS="10" *ARGS:
    cargo xtask chaos {{ROUNDS}} {{ARGS}}

# Change propagation to 1/10/50 agents and a 10,000-deployment snapshot.
bench-sync *ARGS:
    cargo bench -p krane --bench sync_propagation -- {{ARGS}}

# The ctrl CLI against the running local stack, e.g. `just ctrl deployments list --app demo/hello`.
ctrl *ARGS:
    cargo run -q -p ctrl-cli -- {{ARGS}}

# The services' container images (release binaries, deploy/Dockerfile) into the Docker engine at DOCKER_HOST.
images *ARGS:
    cargo xtask images {{ARGS}}

# Install or verify the real dependencies.
deps:
    cargo xtask deps

fmt:
    cargo fmt --all

check-fmt:
    cargo fmt --all -- --check

clippy:
    cargo clippy --workspace --all-targets -- -D warnings

lint: check-fmt clippy

# What CI runs.
ci:
    bash .ci/run
