# steprunner tasks. `just` is optional: each recipe is a plain command.

default: test

# Build the release binary
build:
    cargo build --release

# Run every test (as root for the cgroup and limit tests; CI=true makes them mandatory)
test:
    cargo nextest run --no-fail-fast

# Formatting and lints, as CI checks them
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Run a real step end to end on the shipped venv flavor and example step
demo:
    cargo run --release -- launch manifests/venv.yaml --info examples/hello/step.yaml

# Benchmarks against baselines; results in bench/results.md
bench:
    bash bench/run.sh

# Fuzz one target (manifest, step_info, yaml) on the stable toolchain; see fuzz/README.md
fuzz target="manifest" secs="600":
    mkdir -p /tmp/steprunner-corpus/{{target}}
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo +stable fuzz run {{target}} /tmp/steprunner-corpus/{{target}} seeds/{{target}} -- -timeout=5 -max_total_time={{secs}} -rss_limit_mb=4096
