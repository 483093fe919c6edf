# Recipes for people who have `just`; the scripts they call work without it.

# Bring the stack up, show it, tear it down.
demo *ARGS:
    ./scripts/demo {{ARGS}}

# The whole test suite, with its own set-up (what CI runs).
test *ARGS:
    ./scripts/test {{ARGS}}

# Build (or find cached) the offline image set.
images:
    cargo run -q -p voyager-sim -- images build --images offline

# Time up/down and the image build.
bench *ARGS:
    cargo run -q --release -p voyager-bench -- {{ARGS}}

up *ARGS:
    cargo run -q -p voyager-sim -- up {{ARGS}}

down *ARGS:
    cargo run -q -p voyager-sim -- down {{ARGS}}
