"""deepcomp: Deep Compression (Han, Mao & Dally, ICLR 2016) for PyTorch models.

The public surface is this file:

    deepcomp.save(model_or_state_dict, "out.dcz", prune=..., bits=...)
    deepcomp.decode("out.dcz")   -> dict[str, torch.Tensor]  (dense, bit-exact)
    deepcomp.load("out.dcz")     -> torch.nn.Module running the compressed form
    deepcomp.compress(...)       -> the full prune / retrain / share / fine-tune pipeline

In your own training loop (any optimizer, loss, data, device, DDP):

    pruning = deepcomp.prune_weights(model, keep=0.1, steps=3)   # pruning.step() per round
    sharing = deepcomp.share_weights(model, bits={"fc": 5})      # trainable codebooks
    sharing.finalize(); deepcomp.save(model, "out.dcz")

Everything else is an implementation module and may change.
"""
from __future__ import annotations

import os as _os

# libgomp spins for a while after each parallel region by default; on a 2-vCPU machine
# whose vCPUs share a core that stalls the other thread for milliseconds. Ask for passive
# waiting before the native module (and its OpenMP runtime) is loaded. A user's own
# setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from deepcomp.errors import (  # noqa: E402
    DataError,
    DczFormatError,
    DeepcompError,
    ModelError,
    UnsupportedOpError,
)

__version__ = "0.1.0"

__all__ = [
    "save", "decode", "load", "compress",
    "prune_weights", "share_weights", "Pruning", "Sharing",
    "DeepcompError", "DczFormatError", "DataError", "ModelError", "UnsupportedOpError",
    "__version__",
]


def save(model_or_state_dict, path, *, example_inputs=None, **options):
    """Compress a model (nn.Module) or a state_dict into a .dcz file at `path`.

    For a module, the file also stores its graph so that `deepcomp.load(path)` runs it
    alone. `example_inputs` is what the module is called with: a tensor, a tuple of
    tensors, or a dict of keyword tensors (a Hugging Face model's input_ids and
    attention_mask); the batch dim, and the sequence dim of integer token inputs, stay
    free. Without it an image or feature batch is guessed from the first layer.
    `graph=False` stores weights only; `graph=True` makes a failed capture an error.

    `bits="auto"` chooses the bits of each weight tensor (deepcomp.oneshot), without
    retraining: `max_rel_error=E` keeps each tensor's relative L2 error within E (with
    `prune="auto"` its kept fraction is chosen too); `calibration=[inputs, ...],
    min_cosine=C` makes the file as small as it can while the model's outputs on those
    inputs keep a per-sample cosine >= C. The plan is returned as "oneshot".

    `snap=E` (opt-in, lossy) stores every float value (biases, norm parameters, codebook
    centroids) on a power-of-two grid within E times its tensor's range, e.g. 1e-3:
    smaller files, the error bound NNCodec's near-lossless modes are judged by.
    """
    from deepcomp.codec import save as _save

    return _save(model_or_state_dict, path, example_inputs=example_inputs, **options)


def decode(path) -> dict:
    """Read a .dcz file back into a dense state_dict (bit-exact with what was saved)."""
    from deepcomp.codec import decode as _decode

    return _decode(path)


def load(path, model=None, policy="compact"):
    """Load a .dcz file as an nn.Module that runs on the compressed form.

    `model`: an instance of the architecture, for files saved without a graph.
    `policy`: 'compact' (default; only the file's form stays in memory), 'auto' (may keep
    int8/dense copies of layers where they measured faster), 'exact', or a fixed path.
    """
    from deepcomp.runtime import load as _load

    return _load(path, model=model, policy=policy)


def compress(model, out=None, **options):
    """Run the full Deep Compression pipeline (needs data: see deepcomp.pipeline)."""
    from deepcomp.pipeline import compress as _compress

    return _compress(model, out, **options)


_TRAINING = ("prune_weights", "share_weights", "Pruning", "Sharing")


def __getattr__(name):
    # The training API imports torch; loading it on first use keeps `import deepcomp`
    # (and commands such as `deepcomp info`) as light as they were.
    if name in _TRAINING:
        from deepcomp import training

        return getattr(training, name)
    raise AttributeError(f"module 'deepcomp' has no attribute {name!r}")
