# One entry point for titlegen. The logic lives in deployments/local_stack.sh.
#
#   make run                 fresh machine -> venv, local Prefect server, pool, deployment, worker,
#                            and `prefect deployment run titlegen/full`, followed in the terminal (titlegen/watch.py)
#   make run PARAMS='--param dataset=../shared/data/zh-tw-news-2017 --param max_steps=20'
#   make up | status | down  start the stack only / show it / stop what `make up` started
#   make test                venv + test dependencies + the whole test suite (what CI runs)
#   make test PYTEST_ARGS='tests/titlegen -x'

PARAMS ?=
PYTEST_ARGS ?=
STACK := bash deployments/local_stack.sh

.PHONY: run up down status setup test

run:
	@$(STACK) run $(PARAMS)

up:
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

setup:
	@$(STACK) setup

test:
	@$(STACK) test $(PYTEST_ARGS)
