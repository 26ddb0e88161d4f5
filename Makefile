# The two commands of the README: each installs into .venv first, on a fresh machine too.
.PHONY: demo test

demo:
	bash scripts/demo

test:
	bash scripts/test
