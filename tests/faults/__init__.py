"""The fault-injection suite (`make test-faults`): real `blobflow serve` processes under
injected faults, each case ending with the same checker (see `checker.py`)."""
