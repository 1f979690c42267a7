# Convenience targets; the README's two commands are `bash scripts/run.sh` and `bash scripts/test.sh`.
PROFILE ?= offline

.PHONY: setup test all notebooks tiny bench clean-cache

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

all notebooks:
	bash scripts/run.sh --profile $(PROFILE)

tiny:
	bash scripts/run.sh --profile tiny

bench: setup
	.venv/bin/python bench/bench_convexity.py

clean-cache:
	rm -rf .cache
