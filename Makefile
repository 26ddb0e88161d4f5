# The two commands of the README: each installs into .venv first, on a fresh machine too.
.PHONY: demo test lock

demo:
	bash scripts/demo

test:
	bash scripts/test

# Maintainers: regenerate requirements/*.txt after changing pyproject.toml's dependencies.
lock:
	bash scripts/lock
