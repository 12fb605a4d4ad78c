# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: demo test test-fast venv clean-demo

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	rm -f .venv/.installed-* && touch $(STAMP)

venv: $(STAMP)

# Prepare the offline demo competition, (re)make its folds, train all 5 folds (prints the OOF table),
# predict the test set with the fold ensemble + TTA, and print the public/private leaderboard score.
# --resume makes a second `make demo` (or one after Ctrl-C) continue instead of starting over.
demo: venv
	$(PY) prepare_demo.py
	$(PY) make_folds.py --data-dir data/mnist5k
	$(PY) train.py --config configs/demo.yaml --exp demo --fold all --resume
	$(PY) infer.py --exp demo

# The suite runs on every core (pytest-xdist, one core per worker); fixtures that train are built once.
test: venv
	$(PY) -m pytest -x -q -n auto

# Unit tests only (seconds): skips the end-to-end script runs.
test-fast: venv
	$(PY) -m pytest -x -q -n auto -m "not slow"

clean-demo:
	rm -rf data/mnist5k runs/demo
