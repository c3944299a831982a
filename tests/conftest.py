import pytest
import torch
from torch import nn

import visprune

# Tiny models gain nothing from threads, and on a shared 2-core machine spinning worker threads
# slow everything down; results do not depend on the thread count.
torch.set_num_threads(1)


def _models(value, depth=0):
    if isinstance(value, nn.Module):
        yield value
    elif depth < 3 and isinstance(value, (tuple, list)):
        for v in value:
            yield from _models(v, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            yield from _models(v, depth + 1)


@pytest.fixture(autouse=True)
def _unprune_shared_models(request):
    """Teardown: a test that failed before its own ``unprune_`` leaves no pruned model behind for the
    next test sharing a module-scoped fixture, so one failure shows as one failure, not a cascade."""
    yield
    for name in request.fixturenames:
        if name == "request" or name == "_unprune_shared_models":
            continue
        try:
            value = request.getfixturevalue(name)
        except Exception:  # noqa: BLE001 - a fixture that failed to build has nothing to restore
            continue
        for model in _models(value):
            if visprune.is_pruned(model):
                visprune.unprune_(model)
