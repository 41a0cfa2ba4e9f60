"""The Deep Compression pipeline with retraining: prune -> retrain -> share -> fine-tune.

    result = compress("deepcomp:lenet300", "out.dcz", data="fashion-mnist")
    print(result.table())

Stages
Every decision is made on a validation split held out of the training data (``val``
examples, seeded); the test split is evaluated twice, on the dense model and on the
final one, and only reported.

1. Baseline: top-1 accuracy of the dense model on validation and on test.
2. Iterative pruning: ``prune_steps`` rounds towards per-layer kept fractions (the
   paper's, by default, for the two LeNets); round i keeps ``final ** (i / steps)`` of
   each layer (or, with ``keep='std:S'``, cuts at ``S * i / steps`` standard
   deviations), then retrains ``epochs`` epochs with the masks held.
3. Weight sharing: per-layer k-means (``bits``, ``init``), then ``finetune_epochs`` of
   centroid fine-tuning (codebooks and biases train; pruned weights stay 0).
With ``max_drop`` (points of validation top-1) or ``target_size`` (file bytes) the kept
fractions and bits are chosen per layer by deepcomp.plan instead (sensitivity analysis,
allocation priced in the writer's bytes, pruning rounds raised until retraining cannot
recover, bits lowered while the budget holds); the plan is printed and stored in meta.
   A planned run then also rounds every float value (biases, centroids) to a grid within
   ``snap`` of its tensor's range when that makes the file smaller and validation holds
   (a fixed run only when ``snap`` is given).
4. Final evaluation; with ``out`` the model is written as a .dcz (deepcomp.codec.save)
   or, if this build has no codec, as a plain state_dict.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from deepcomp.codec import save as codec_save
from deepcomp.data import get_dataset, num_classes, source_indices, split_train_val, take_subset
from deepcomp.errors import DeepcompError, ModelError
from deepcomp.models import LeNet5, LeNet300, get_model, load_checkpoint, load_into, \
    load_state_dict_file
from deepcomp.prune import PruneSpecError, is_prunable, report
from deepcomp.share import bits_for, _check_bits, _check_init
from deepcomp.train import _device_of, evaluate, make_optimizer, train
from deepcomp import checkpoint as ckpt
from deepcomp.distributed import DEVICES, setup as dist_setup
from deepcomp.training import Pruning, Sharing, _bits_spec, plain_state_dict, share_weights
from torch.nn.parallel import DistributedDataParallel as DDP

# Per-layer kept fractions after pruning, after Han et al. (2016) Table 1 / 2 / 3, with
# the largest layer trimmed a little so that the whole net keeps at most 8 % of its
# weights (the paper's 8/9/26 % keep 8.2 % of LeNet-300-100, its LeNet-5 figures 8.4 %).
PAPER_KEEP = {
    "lenet300": {"fc1": 0.077, "fc2": 0.09, "fc3": 0.26},
    "lenet5": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.075, "fc2": 0.19},
}
DEFAULT_BITS = {"fc": 5, "conv": 8}
# A planned run's float rounding (deepcomp.codec.snap): each value within 1e-4 of its
# tensor's range. On the planned LeNet-5 files it saved 704-748 B of ~25 KB (the biases'
# low mantissa bits are noise the lossless coder pays ~11 bits a value for), and it may
# cost validation at most SNAP_TOLERANCE points (5 of 5,000 images).
PLANNED_SNAP = 1e-4
SNAP_TOLERANCE = 0.1
# Rounding must save more than this to be kept: the meta records it and the final stage
# row's name grows, so a --target-size file could otherwise grow by a few bytes.
SNAP_MIN_SAVING = 64


@dataclass
class Stage:
    name: str
    accuracy: float      # validation top-1: what decisions see
    kept: int            # nonzero prunable weights
    total: int           # prunable weights
    bits: str
    seconds: float
    test_accuracy: float | None = None  # only for the dense and the final model

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0


@dataclass
class CompressResult:
    model: nn.Module
    stages: list[Stage] = field(default_factory=list)
    out: Path | None = None
    codec_summary: dict | None = None
    prune_report: object | None = None
    rank: int = 0
    world_size: int = 1
    sync: list = field(default_factory=list)       # per stage: CRC32s all ranks agreed on
    checkpoint_seconds: float = 0.0
    plan: object | None = None          # deepcomp.plan.Plan when the run planned itself
    shrink: object | None = None        # deepcomp.shrink.ShrinkReport (dead-neuron removal)
    unshrunk_bytes: int | None = None   # dense tensor bytes before dead-neuron removal
    sensitivity: object | None = None   # deepcomp.plan.Sensitivity likewise
    val_size: int = 0
    hists: dict | None = None           # 'dense' / 'pruned' weight histograms (record_hist)
    train_index: object | None = None
    val_index: object | None = None
    # split -> (images, right only by the dense model, right only by the final one):
    # the final model against the dense one on the same images (see paired_drop).
    paired: dict = field(default_factory=dict)
    snap: float | None = None           # the float rounding the final model kept, if any

    def record_hist(self, key: str) -> None:
        """Histogram the prunable weights now (for `deepcomp info --plot`), if asked to."""
        if self.hists is None:
            return
        from deepcomp.codec.plot import weight_histograms

        ranges = {n: (h["lo"], h["hi"]) for n, h in self.hists.get("dense", {}).items()}
        self.hists[key] = weight_histograms(_layer_weights(self.model), ranges=ranges)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def table(self) -> str:
        rows = [f"{'stage':<26} {'val top-1':>9} {'test top-1':>10} {'weights kept':>22} "
                f"{'bits':>12} {'wall s':>8}"]
        for s in self.stages:
            kept = f"{s.kept}/{s.total} ({100 * s.density:.2f}%)"
            test = "-" if s.test_accuracy is None else f"{s.test_accuracy:.2f}%"
            rows.append(f"{s.name:<26} {s.accuracy:>8.2f}% {test:>10} {kept:>22} {s.bits:>12} "
                        f"{s.seconds:>8.1f}")
        if self.paired:
            rows.append(self.paired_line())
        return "\n".join(rows)

    def paired_drop(self, split: str) -> tuple[float, float]:
        """(points lost against the dense model, its standard error) on ``split``.

        Both models answered the same images, so only the images where they disagree
        carry information: the error of the difference is that of a paired test,
        smaller than either accuracy's own, but on 5,000 validation images still about
        a quarter of a point for a compressed LeNet (benchmarks/RESULTS.md).
        """
        n, lost, won = self.paired[split]
        drop = 100.0 * (lost - won) / n
        var = (lost + won) - (lost - won) ** 2 / n
        return drop, 100.0 * math.sqrt(max(0.0, var)) / n

    def paired_line(self) -> str:
        parts = []
        for split in ("val", "test"):
            if split in self.paired:
                n, lost, won = self.paired[split]
                drop, se = self.paired_drop(split)
                # + 0.0: a drop of 0 prints as +0.00, not -0.00
                parts.append(f"{split} {-drop + 0.0:+.2f} +- {se:.2f} points "
                             f"({lost} images lost, {won} gained of {n})")
        return "top-1 against dense, image by image (paired standard error): " + "; ".join(parts)


def resolve_model(model, arch: str | None = None) -> tuple[nn.Module, str | None]:
    """(module, family) from an nn.Module, a model name or a state_dict file + ``arch``."""
    if isinstance(model, nn.Module):
        # The pipeline prunes and re-parametrizes in place; the caller's module stays as is.
        model = copy.deepcopy(model)
        return model, _family(model)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"cannot use a {type(model).__name__} as a model")
    text = str(model)
    if text.startswith("deepcomp:") and arch is None:
        m = load_checkpoint(text)
        return m, _family(m)
    path = Path(text)
    if path.suffix in (".pt", ".pth") or path.is_file():
        if arch is None:
            raise ModelError(
                f"{path} is a state_dict file; say which architecture it belongs to with "
                f"--arch (e.g. --arch deepcomp:lenet300)")
        m = get_model(arch)
        load_into(m, load_state_dict_file(path), str(path))
        return m, _family(m)
    if arch is not None:
        raise ModelError(f"--arch only applies to a state_dict file; {text!r} is a model name")
    m = get_model(text)  # a torchvision name: untrained weights
    return m, _family(m)


def _family(m: nn.Module) -> str | None:
    if isinstance(m, LeNet300):
        return "lenet300"
    if isinstance(m, LeNet5):
        return "lenet5"
    return None


def parse_keep(text: str) -> dict[str, float] | float:
    """'fc1=0.08,fc2=0.09' -> dict; '0.1' -> 0.1 for every prunable layer."""
    text = text.strip()
    try:
        if "=" not in text:
            v = float(text)
            if not 0.0 < v <= 1.0:
                raise ValueError
            return v
        out = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            k, _, v = part.partition("=")
            f = float(v)
            if not 0.0 < f <= 1.0:
                raise ValueError
            out[k.strip()] = f
        return out
    except ValueError:
        raise PruneSpecError(
            f"bad --keep {text!r}: give kept fractions in (0, 1], either one for every layer "
            f"('0.1') or per layer ('fc1=0.08,fc2=0.09')") from None


def _std_quality(keep) -> float | None:
    """S from a 'std:S' keep spec (prune |w| <= S * std(W), raised in equal steps), else None."""
    if not (isinstance(keep, str) and keep.strip().startswith("std:")):
        return None
    try:
        s = float(keep.strip()[4:])
        if s < 0:
            raise ValueError
    except ValueError:
        raise PruneSpecError(f"bad --keep {keep!r}: 'std:S' takes a quality parameter S >= 0") from None
    return s


def _keep_targets(model: nn.Module, family: str | None, keep) -> dict[str, float]:
    names = [n for n, p in model.named_parameters() if is_prunable(n, p)]
    modules = {n.rsplit(".", 1)[0] for n in names}
    if keep is None:
        keep = PAPER_KEEP.get(family, 0.1)
    if isinstance(keep, str):
        keep = parse_keep(keep)
    if isinstance(keep, (int, float)):
        return {n: float(keep) for n in names}
    unknown = [k for k in keep if k not in names and k not in modules]
    if unknown:
        raise PruneSpecError(
            f"--keep names layers the model lacks: {', '.join(unknown)}; "
            f"prunable layers: {', '.join(sorted(modules))}")
    return dict(keep)


def _layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every prunable weight by its plain name, also while it is a shared parametrization."""
    out = {}
    for mname, module in model.named_modules():
        names = list(dict(module.named_parameters(recurse=False)))
        if hasattr(module, "parametrizations"):
            names += list(module.parametrizations.keys())
        for pname in names:
            full = f"{mname}.{pname}" if mname else pname
            t = getattr(module, pname)
            if is_prunable(full, t):
                out[full] = t.detach()
    return out


def _prunable_counts(model: nn.Module) -> tuple[int, int]:
    rep = report(_layer_weights(model))
    return rep.kept, rep.numel


def _bits_label(model: nn.Module, bits: dict | None) -> str:
    if not bits:
        return "32"
    used = {}
    for n, p in model.named_parameters():
        b = bits_for(n, p, bits)
        if b is not None:
            kind = "conv" if p.dim() == 4 else "fc"
            used.setdefault(kind, set()).add(b)
    return " ".join(f"{k}{'/'.join(map(str, sorted(v)))}" for k, v in sorted(used.items(),
                                                                       key=lambda kv: kv[0] != "conv")) or "32"


def share_and_finetune(net: nn.Module, train_set, *, bits: dict, init: str = "linear",
                       epochs: float = 1.0, lr: float = 1e-4, batch_size: int = 128,
                       seed: int = 0, progress: bool = True,
                       on_stage: Callable[[str, float, str], object] | None = None) -> nn.Module:
    """k-means weight sharing, then Adam on the codebooks (and unshared parameters).

    ``on_stage(name, t0, bits_label)`` is called after sharing and after fine-tuning (the
    pipeline evaluates there). Returns ``net`` with plain, shared weights (in place).
    """
    t0 = time.perf_counter()
    label = _bits_label(net, bits)
    sharing = share_weights(net, bits, init=init, seed=seed)
    if on_stage:
        on_stage(f"share ({init})", t0, label)
    t0 = time.perf_counter()
    if epochs > 0:
        opt = make_optimizer(sharing.parameters(), "adam", lr)
        train(net, train_set, epochs=epochs, optimizer=opt, batch_size=batch_size,
              seed=seed + 1000, progress=progress, desc="fine-tune centroids")
    sharing.finalize()
    net.eval()
    if on_stage:
        on_stage("share + fine-tune", t0, label)
    return net


def compress(model, out=None, *, arch: str | None = None, data: str = "fashion-mnist",
             data_dir=None, keep=None, prune_steps: int = 4, epochs: float = 2.0,
             finetune_epochs: float = 1.0, bits: dict | None = None,
             init: str = "linear", lr: float = 2e-3, finetune_lr: float = 1e-4,
             share: bool = True,
             batch_size: int = 128, subset: int | None = None, seed: int = 0,
             progress: bool = True, log: Callable[[str], None] | None = None,
             train_set=None, test_set=None, plan: dict | None = None,
             device=None, amp: bool = False, checkpoint_dir=None, resume: bool = False,
             dist_timeout: float = 1800.0, val: int = 5000, val_set=None,
             max_drop: float | None = None, target_size: int | None = None,
             sensitivity_plot=None, record_hist: bool = False,
             distill: float = 0.0, image_size: int | None = None,
             normalize: str = "imagenet", shrink: bool = True,
             schedule: str = "gradual", allocation: str | None = None,
             average: float | None = None, search: str = "bisect",
             coder: str = "auto", snap: float | str | None = "auto",
             label_smoothing: float | None = None,
             trial_dropout: float | None = None) -> CompressResult:
    """Run the pipeline (see the module docstring); returns a CompressResult.

    ``keep``: kept fraction per layer ({'fc1': 0.08, ...}, a 'fc1=0.08,...' string or one
    float for all); default the paper's targets for the LeNets, 10 % otherwise. Or
    'std:S': step i of n prunes |w| <= (S * i / n) * std(W) in every layer (the paper's
    quality parameter, raised in equal steps).
    ``bits``: {'fc': 5, 'conv': 8} by default; per-layer keys allowed. ``subset``: train
    on a seeded random subset of that many training examples. ``train_set`` /
    ``test_set`` replace the named data set (any Dataset of (image, label); the input
    size and the number of classes come from the data). ``data='imagefolder:PATH'``
    reads PATH/train and PATH/val (deepcomp.data.image_folder) with ``image_size`` and
    ``normalize`` ('imagenet' or 'none').
    ``share=False`` stops after pruning (the model keeps fp32 weights).
    ``plan``: {layer: {'keep': f, 'bits': b}} (the planner's output) instead of ``keep``
    and on top of ``bits``.
    ``device``: 'auto' (CUDA when present), 'cpu' or 'cuda'; ``amp``: CUDA mixed
    precision. Under torchrun each rank trains on its shard with DDP (see
    deepcomp.distributed); only rank 0 evaluates and writes. ``checkpoint_dir``: write a
    checkpoint after every stage; ``resume``: continue after the newest one there.
    ``val``: training examples held out (seeded by ``seed``) for every decision, or an
    explicit ``val_set``. ``max_drop`` / ``target_size``: plan per layer (deepcomp.plan);
    ``keep`` and ``bits`` then do not apply. ``sensitivity_plot``: PNG of the planning
    run's sensitivity curves. ``record_hist``: store weight histograms before and after
    pruning in the file's meta (for `deepcomp info --plot`; about 1 KB). ``distill``: in a
    planned run, the weight of the dense model's soft outputs in the retraining loss
    (0 = labels only, the default: on LeNet-300-100 it measured no better, see
    benchmarks/RESULTS.md). ``shrink``: remove hidden units left without inputs or
    outputs after pruning (deepcomp.shrink; outputs unchanged, shapes stored in meta).
    ``schedule``: how a planned run prunes: 'gradual' (default; ``prune_steps`` trials
    from the dense model bisecting the weight bytes, each cutting gradually over
    ``epochs`` and recovering over twice that, deepcomp.plan.gradual_search) or 'rounds'
    (one-shot cuts to rising tolerances, ``epochs`` of retraining each).
    ``allocation``: how a gradual trial splits its bytes over the layers: 'global' (one
    magnitude threshold over all layers) or 'sensitivity' (the greedy allocation on the
    one-shot sensitivity curves); default ``deepcomp.plan.ALLOCATION`` ('global').
    ``average``: gradual schedule: each trial keeps the mean of its weights over that
    fraction of the recovery's end instead of its best validation point (0 = the best
    point; default ``deepcomp.plan.AVERAGE``). ``search``: gradual schedule: the next
    trial's byte target at the log midpoint of the bracket ('bisect', default) or where the
    measured drops put the budget ('false-position'). ``coder``: 'auto' (default) writes
    the smallest file; 'huffman' only Huffman streams, larger but fast to decode
    (deepcomp.save's ``coder``); the planner prices its choices with the same coder, so
    ``target_size`` holds for the file written.
    ``snap``: round every float value of the final model to a power-of-two grid within
    this fraction of its tensor's range (deepcomp.codec.snap), kept only when the file
    gets smaller and validation top-1 falls by at most SNAP_TOLERANCE points (and stays
    within ``max_drop``); the file then stores the rounded values exactly, so the figures
    reported are the file's. 'auto' (default): PLANNED_SNAP for a planned run, none for
    the fixed recipe; None or 'off': never.
    ``label_smoothing``: gradual schedule: label smoothing of the trials' training loss
    (default ``deepcomp.plan.LABEL_SMOOTHING``; 0 = plain cross-entropy).
    ``trial_dropout``: gradual schedule: dropout on the inputs of every fully connected
    layer but the first while a trial trains (default ``deepcomp.plan.TRIAL_DROPOUT``).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    bits = dict(DEFAULT_BITS if bits is None else bits)
    if plan is not None:
        bits = _bits_spec(bits, plan)
    for v in bits.values():
        _check_bits(v)
    _check_init(init)
    if int(prune_steps) < 0:
        raise PruneSpecError(f"--prune-steps must be >= 0, got {prune_steps}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise DeepcompError(f"--lr must be a positive learning rate, got {lr!r}")
    if epochs < 0 or finetune_epochs < 0:
        raise DeepcompError("epochs must be >= 0")
    if subset is not None and subset < 1:
        raise DeepcompError(f"--subset must be a positive number of examples, got {subset}")
    if resume and checkpoint_dir is None:
        raise DeepcompError("--resume needs --checkpoint-dir (the folder of an earlier run)")
    auto = max_drop is not None or target_size is not None
    if max_drop is not None and target_size is not None:
        raise DeepcompError("give --max-drop or --target-size, not both")
    if max_drop is not None and not (isinstance(max_drop, (int, float)) and max_drop >= 0):
        raise DeepcompError(f"--max-drop must be >= 0 points of top-1, got {max_drop!r}")
    if target_size is not None and not (isinstance(target_size, int) and target_size > 0):
        raise DeepcompError(f"--target-size must be a positive number of bytes, got {target_size!r}")
    if allocation is None:
        from deepcomp.plan import ALLOCATION

        allocation = ALLOCATION
    if allocation not in ("global", "sensitivity"):
        raise DeepcompError(f"--allocation must be 'global' or 'sensitivity', got {allocation!r}")
    _check_fraction(average, "--average must be a fraction of the recovery in [0, 1]", True)
    _check_fraction(label_smoothing, "--label-smoothing must be in [0, 1)", False)
    _check_fraction(trial_dropout, "--trial-dropout must be in [0, 1)", False)
    if search not in ("bisect", "false-position"):
        raise DeepcompError(f"--search must be 'bisect' or 'false-position', got {search!r}")
    from deepcomp.codec.v2 import check_coder

    coder = check_coder(coder)  # before any training, not after it
    snap_rel = _snap_setting(snap, auto)
    if schedule not in ("gradual", "rounds"):
        raise DeepcompError(f"--schedule must be 'gradual' or 'rounds', got {schedule!r}")
    if auto and plan is not None:
        raise DeepcompError("give a plan or --max-drop / --target-size, not both")
    if auto and (checkpoint_dir is not None or os.environ.get("WORLD_SIZE", "1") not in ("", "1")):
        # The planner's rounds are not stages of the fixed loop below; checkpointing and
        # sharding them is not built yet.
        raise DeepcompError("--max-drop / --target-size run in one process without "
                            "--checkpoint-dir (planned runs cannot be checkpointed or run "
                            "under torchrun yet)")

    dctx = dist_setup(device, dist_timeout)
    if not dctx.is_main:
        progress = False
        log = lambda s: None  # noqa: E731  (rank 0 speaks for the run)
    net, family = resolve_model(model, arch)
    net.to(dctx.device)
    if isinstance(model, str) and model.startswith("torchvision:"):
        log(f"note: {model} is built with untrained weights (weights=None); pass a trained "
            f"state_dict file with --arch {model} to compress a trained model")
    std_s = _std_quality(keep) if plan is None else None
    targets = None if (std_s is not None or plan is not None) else _keep_targets(net, family, keep)
    if train_set is None:
        train_set = get_dataset(data, "train", data_dir, image_size=image_size, normalize=normalize)
    if test_set is None:
        test_set = get_dataset(data, "test", data_dir, image_size=image_size, normalize=normalize)
    if val_set is None:
        # The validation images come out of the training data before any subset is
        # drawn, so no run, however small, trains on them or decides on test images.
        train_set, val_set = split_train_val(train_set, int(val) if val else val, seed)
    if subset is not None:
        train_set = take_subset(train_set, subset, seed)
    shape, classes = _data_shape(train_set)
    result = CompressResult(model=net, val_size=len(val_set), hists={} if record_hist else None)
    # Positions in the training data of what trains and what decides (None for a
    # Dataset that does not say): the tests check that the two never meet.
    result.train_index = source_indices(train_set)
    result.val_index = source_indices(val_set)
    result.rank, result.world_size = dctx.rank, dctx.world_size
    if dctx.enabled:
        log(f"[ddp] {dctx.world_size} processes ({dctx.backend}), device {dctx.device}, "
            f"batch {batch_size} per process")

    steps = int(prune_steps)
    names = ["dense"] + [f"prune {i + 1}/{prune_steps}" for i in range(steps)]
    if share:
        names += [f"share ({init})", "share + fine-tune"]
    config = {"model": model if isinstance(model, str) else type(model).__name__,
              "arch": arch, "data": str(data), "keep": repr(keep),
              "plan": repr(plan), "prune_steps": steps, "epochs": float(epochs),
              "finetune_epochs": float(finetune_epochs), "bits": repr(sorted(bits.items())),
              "init": init, "lr": float(lr), "finetune_lr": float(finetune_lr),
              "share": bool(share), "batch_size": int(batch_size), "subset": subset,
              "seed": int(seed), "world_size": dctx.world_size, "val": len(val_set),
              "record_hist": bool(record_hist)}
    if isinstance(data, str) and data.startswith("imagefolder:"):
        config.update(image_size=image_size, normalize=normalize)  # they change the inputs
    pruning: Pruning | None = None
    if steps and not auto:  # a planned run prunes in deepcomp.plan
        pruning = Pruning(net, keep=f"std:{std_s:g}" if std_s is not None else targets,
                          steps=steps, plan=plan)
    sharing = None
    opt = None
    label = _bits_label(net, bits)
    first = 0

    if resume:
        path = ckpt.latest(checkpoint_dir)
        if path is None:
            log(f"[resume] no checkpoint in {checkpoint_dir}: starting from the beginning")
        else:
            state = ckpt.read(path)
            _check_resume_config(state["config"], config, path)
            first = int(state["stage"]) + 1
            if first > len(names):
                raise ckpt.CheckpointError(f"{path} is after stage {first}, but this run has "
                                           f"only {len(names)} stages")
            load_into(net, state["model"], str(path))
            if pruning is not None and state.get("pruning"):
                pruning.load_state_dict(state["pruning"])
            if first - 1 > steps:  # sharing has begun: the masks live in the codebooks
                if pruning is not None:
                    pruning.remove()
                if state.get("sharing"):  # shared, not yet fine-tuned and baked
                    sharing = Sharing.from_state_dict(net, state["sharing"])
            result.stages = [Stage(**s) for s in state["stages"]]
            ckpt.set_rng_state(state["rng"])
            log(f"[resume] {path}: stages 1..{first} done ({names[first - 1]}), "
                f"continuing with {names[first] if first < len(names) else 'the output'}")

    # Which images the dense model and the latest stage get right, to pair the final
    # model's answers with the dense model's (a run resumed past the dense stage has none).
    dense_right: dict = {}
    right: dict = {}

    def add(name: str, t0: float, bits_label: str = "32", test: bool = False) -> Stage:
        seconds = time.perf_counter() - t0  # the stage's own work, not the evaluation
        kept, total = _prunable_counts(net)
        if dctx.is_main:
            acc, right["val"] = evaluate(net, val_set, per_example=True)
            test_acc = None
            if test:
                test_acc, right["test"] = evaluate(net, test_set, per_example=True)
            if not result.stages:
                dense_right.update(right)
        else:
            acc, test_acc = float("nan"), None
        st = Stage(name, acc, kept, total, bits_label, seconds, test_acc)
        result.stages.append(st)
        log(f"[{name}] validation top-1 {acc:.2f}%"
            + (f", test {st.test_accuracy:.2f}%" if st.test_accuracy is not None else "")
            + f"  weights kept {100 * st.density:.2f}%  ({st.seconds:.1f} s)")
        return st

    def wrapped():
        if not dctx.enabled:
            return net
        # A new wrapper per stage: sharing changes the trainable parameters, and wrapping
        # broadcasts rank 0's parameters and buffers to the others.
        return DDP(net, device_ids=[dctx.device] if dctx.device.type == "cuda" else None)

    def finish_stage(k: int) -> None:
        if dctx.enabled:
            groups = {"weights": plain_state_dict(net)}
            if pruning is not None and pruning.masks:
                groups["masks"] = pruning.masks
            if sharing is not None:
                groups["codebooks"] = {n: c for n, c in sharing.codebooks.items()}
            crcs = dctx.check_identical(groups, f"after stage {names[k]!r}")
            result.sync.append({"stage": names[k], **crcs})
            log(f"[sync {names[k]}] identical on {dctx.world_size} ranks: " +
                ", ".join(f"{g} crc32 {c:08x}" for g, c in crcs.items()))
        if checkpoint_dir is not None and dctx.is_main:
            t = time.perf_counter()
            ckpt.write(checkpoint_dir, k, {
                "stage_name": names[k], "stages": [dict(s.__dict__) for s in result.stages],
                "config": config, "model": plain_state_dict(net),
                "pruning": pruning.state_dict() if pruning is not None else {},
                "sharing": sharing.state_dict() if sharing is not None else {},
                "optimizer": opt.state_dict() if opt is not None else {},
                "rng": ckpt.rng_state()})
            result.checkpoint_seconds += time.perf_counter() - t
        dctx.barrier(f"after stage {names[k]!r}")

    try:
        for k in range(first, len(names)):
            name = names[k]
            t0 = time.perf_counter()
            if k == 0:
                torch.manual_seed(seed)
                _check_model_fits(net, train_set, shape, classes, data)
                try:
                    add("dense", t0, test=True)
                except RuntimeError as e:
                    raise ModelError(
                        f"the model cannot run on {_describe_data(data, train_set)} batches "
                        f"(N x {' x '.join(map(str, shape)) if shape else '?'}"
                        f"{f', {classes} classes' if classes else ''}): "
                        f"{str(e).splitlines()[0]}") from None
                result.record_hist("dense")
                _note_val_test_gap(result.stages[0], len(val_set), log)
                if auto:
                    from deepcomp.plan import run_planned

                    run_planned(net, result, train_set=train_set, val_set=val_set, add=add,
                                log=log, max_drop=max_drop, target_size=target_size,
                                prune_steps=prune_steps, epochs=epochs,
                                finetune_epochs=finetune_epochs, lr=lr, finetune_lr=finetune_lr,
                                batch_size=batch_size, seed=seed, progress=progress,
                                sensitivity_plot=sensitivity_plot, out=out, init=init,
                                distill_alpha=distill, schedule=schedule,
                                allocation=allocation, average=average,
                                search=search, coder=coder,
                                label_smoothing=label_smoothing, dropout=trial_dropout)
                    break
            elif k <= steps:
                # Iterative pruning with retraining: each round's masks include the last's.
                i = k - 1
                pruning.step()
                opt = make_optimizer(net.parameters(), "adam", lr)
                if epochs > 0:
                    train(wrapped(), train_set, epochs=epochs, optimizer=opt,
                          batch_size=batch_size, seed=seed + 1 + i, progress=progress,
                          desc=f"prune {i + 1}/{prune_steps}", device=dctx.device, amp=amp,
                          shard=(dctx.rank, dctx.world_size))
                add(name, t0)
            elif k == steps + 1:
                if pruning is not None:
                    pruning.remove()
                sharing = share_weights(net, bits, init=init, seed=seed)
                opt = None
                add(name, t0, label)
            else:
                if finetune_epochs > 0:
                    opt = make_optimizer(net.parameters(), "adam", finetune_lr)
                    train(wrapped(), train_set, epochs=finetune_epochs, optimizer=opt,
                          batch_size=batch_size, seed=seed + 1000, progress=progress,
                          desc="fine-tune centroids", device=dctx.device, amp=amp,
                          shard=(dctx.rank, dctx.world_size))
                sharing.finalize()
                sharing = None
                net.eval()
                add(name, t0, label)
            if k == steps:
                result.record_hist("pruned")
            finish_stage(k)
        if pruning is not None:
            pruning.remove()
            if pruning.masks:
                result.prune_report = pruning.report()
        if checkpoint_dir is not None and dctx.is_main:
            log(f"[checkpoints] {len(names) - first} written to {checkpoint_dir} "
                f"({result.checkpoint_seconds:.2f} s)")

        if shrink and (steps or auto):
            _remove_dead_units(net, result, val_set, log, coder)
        if snap_rel is not None and dctx.is_main:
            t0 = time.perf_counter()
            if _snap_floats(net, result, val_set, snap_rel, max_drop, log, coder):
                result.snap = snap_rel
                add(f"snap {snap_rel:g}", t0, result.stages[-1].bits)
                if result.plan is not None:  # the centroids moved: the sections' bytes too
                    from deepcomp.plan import tensor_bytes_of

                    result.plan.bytes = tensor_bytes_of(net, coder)

        # The final model's test top-1: reported only, never decided on.
        last = result.stages[-1]
        if dctx.is_main:
            last.test_accuracy, right["test"] = evaluate(net, test_set, per_example=True)
            for split, dense_hits in dense_right.items():
                hits = right[split]
                result.paired[split] = (int(hits.numel()), int((dense_hits & ~hits).sum()),
                                        int((~dense_hits & hits).sum()))
            log(f"[{last.name}] test top-1 {last.test_accuracy:.2f}% (reported only)")
            if result.paired:
                log(result.paired_line())
                if max_drop is not None and "val" in result.paired:
                    se = result.paired_drop("val")[1]
                    if 2 * se > max_drop:
                        log(f"note: the {result.paired['val'][0]} validation images measure the "
                            f"drop to +- {se:.2f} points, so --max-drop {max_drop:g} was judged "
                            f"within two standard errors; a larger --val tightens it")
        if out is not None:
            t0 = time.perf_counter()
            out = Path(out)
            if dctx.is_main:
                meta = pipeline_meta(result, seed=seed, init=init, keep=None if auto else (targets or keep),
                                     bits=None if auto else bits)
                if dctx.world_size > 1:
                    meta["pipeline"]["processes"] = dctx.world_size
                if plan is not None:
                    meta["pipeline"]["plan"] = plan
                if result.snap is not None:
                    meta["snap"] = result.snap  # as deepcomp.save(..., snap=) records it
                # No bits: the weights are already shared (at most 2**bits values per
                # layer), so the codec stores them losslessly and the file scores what was
                # measured.
                result.codec_summary = codec_save(net.cpu(), out, init=init, meta=meta, progress=progress,
                                             coder=coder)
                log(f"[write] {out} ({out.stat().st_size} bytes, "
                    f"{time.perf_counter() - t0:.1f} s)")
            dctx.barrier("writing the output")
            result.out = out
    finally:
        if pruning is not None:
            pruning.remove()
        dctx.close()
    return result


def _check_fraction(value, message: str, one_allowed: bool) -> None:
    """An optional setting that must be a number in [0, 1] (or [0, 1))."""
    if value is None:
        return
    if not isinstance(value, (int, float)) or not (
            0 <= value <= 1 if one_allowed else 0 <= value < 1):
        raise DeepcompError(f"{message}, got {value!r}")


def _snap_setting(snap, planned: bool) -> float | None:
    if snap == "auto":
        return PLANNED_SNAP if planned else None
    if snap is None or snap == "off":
        return None
    from deepcomp.codec.snap import check_rel

    if isinstance(snap, str):
        try:
            snap = float(snap)
        except ValueError:
            raise DeepcompError(f"--snap must be a relative error bound such as 1e-4, 'auto' "
                                f"or 'off', not {snap!r}") from None
    return check_rel(snap)


def _snap_floats(net: nn.Module, result: CompressResult, val_set, rel: float, max_drop, log,
                 coder: str) -> bool:
    """Round the final model's float values (deepcomp.codec.snap) if it pays; True if kept.

    Kept when the tensors' sections (the writer's exact bytes) get smaller and validation
    top-1 falls by at most SNAP_TOLERANCE points, and, with a --max-drop budget the model
    met, still meets it; otherwise the model is put back as it was."""
    from deepcomp.codec import tensor_bytes
    from deepcomp.codec.snap import snap_state_dict

    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    after = snap_state_dict(before, rel)

    def size(sd) -> int:
        return sum(tensor_bytes(k, v.cpu(), coder=coder) for k, v in sd.items())

    saved = size(before) - size(after)
    if saved <= SNAP_MIN_SAVING:
        log(f"[snap] rounding floats to {rel:g} of their range saves {max(saved, 0)} bytes; "
            f"values kept exact")
        return False
    net.load_state_dict(after)
    acc = evaluate(net, val_set)
    last = result.stages[-1].accuracy
    floor = last - SNAP_TOLERANCE
    if max_drop is not None and last >= result.stages[0].accuracy - max_drop:
        floor = max(floor, result.stages[0].accuracy - max_drop)
    if acc < floor:
        net.load_state_dict(before)
        log(f"[snap] rounding floats to {rel:g} of their range would save {saved} bytes but "
            f"takes validation top-1 to {acc:.2f}% (from {last:.2f}%); values kept exact")
        return False
    log(f"[snap] floats rounded to {rel:g} of their tensor's range: {saved} bytes smaller, "
        f"validation top-1 {last:.2f}% -> {acc:.2f}%")
    return True


def _remove_dead_units(net: nn.Module, result: CompressResult, val_set, log, coder: str) -> None:
    """Drop units pruning left without inputs or outputs; log and keep the shapes.

    A plan's bytes are priced again on the smaller tensors, with the coder the file
    will be written with."""
    from deepcomp.shrink import remove_dead_units

    if hasattr(val_set, "images") and isinstance(val_set.images, torch.Tensor):
        x = val_set.images[:256]
    else:
        x = next(iter(torch.utils.data.DataLoader(val_set, batch_size=256)))[0]
    t0 = time.perf_counter()
    net.eval()
    result.unshrunk_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values()
                                if isinstance(t, torch.Tensor))
    result.shrink = remove_dead_units(net, x.to(_device_of(net)))
    log(result.shrink.table() + f"  ({time.perf_counter() - t0:.1f} s)")
    if result.plan is not None and result.shrink.changed:
        from deepcomp.plan import tensor_bytes_of

        result.plan.bytes = tensor_bytes_of(net, coder)


def _describe_data(data, dataset) -> str:
    """The data's own name (fashion-mnist/train, imagefolder:...), else its class."""
    name = getattr(dataset, "name", None)
    while not name and hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        dataset = dataset.dataset
        name = getattr(dataset, "name", None)
    return str(name) if name else type(dataset).__name__


def _data_shape(dataset) -> tuple[tuple[int, ...] | None, int | None]:
    """(one input's shape, number of classes) as the data says, not assumed 1x28x28 / 10."""
    if hasattr(dataset, "images") and isinstance(dataset.images, torch.Tensor):
        shape = tuple(dataset.images.shape[1:])
    else:
        try:
            x = dataset[0][0] if len(dataset) else None
        except Exception as e:  # a user's Dataset: whatever it raises, say where
            raise DeepcompError(f"cannot read the first training example: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}") from None
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else None
    return shape, num_classes(dataset)


def _check_model_fits(net: nn.Module, dataset, shape, classes, data) -> None:
    """One example through the model: a wrong input size or too few outputs is a clear error."""
    if shape is None:
        return
    x, _ = dataset[0]
    if not isinstance(x, torch.Tensor):
        return
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x.unsqueeze(0).to(_device_of(net)))
    except RuntimeError as e:
        raise ModelError(
            f"the model cannot run on {_describe_data(data, dataset)} inputs of shape "
            f"{' x '.join(map(str, shape))} (one example; batches are N x that): "
            f"{str(e).splitlines()[0]}; give a model built for this input size or resize "
            f"the images (--image-size)") from None
    finally:
        net.train(was)
    if classes is not None and isinstance(out, torch.Tensor) and out.dim() == 2 \
            and out.shape[1] < classes:
        raise ModelError(
            f"the model has {out.shape[1]} outputs but {_describe_data(data, dataset)} has "
            f"{classes} classes; build it with num_classes={classes}")


def _note_val_test_gap(dense: Stage, val_size: int, log) -> None:
    if dense.test_accuracy is not None and dense.accuracy - dense.test_accuracy > 3.0:
        log(f"note: the dense model scores {dense.accuracy:.2f}% on the held-out validation "
            f"images but {dense.test_accuracy:.2f}% on test: it was probably trained on them "
            f"(the shipped checkpoints saw all 60,000 training images), so validation "
            f"overstates it and decisions made there are biased; compress a model trained "
            f"without them (benchmarks/train_baselines.py --holdout {val_size})")


def pipeline_meta(result: CompressResult, *, seed: int, init: str, keep=None, bits=None) -> dict:
    """The file's meta for a pipeline run: stages (rounded), the recipe or the plan."""
    def r2(v):
        return None if v is None else round(float(v), 2)

    # A planned run's pruning rounds are in the plan's history already; repeating them
    # as stage rows would cost a small file several percent of its size.
    if result.plan is None:
        stages = [{"name": s.name, "val": r2(s.accuracy), "test": r2(s.test_accuracy),
                   "kept": s.kept, "total": s.total, "bits": s.bits, "seconds": r2(s.seconds)}
                  for s in result.stages]
    else:
        # A planned run's kept fractions, bits and rounds are in the plan; the stage rows
        # would repeat them, and in a 20 KB file every 100 bytes of meta is half a
        # percent. The dense and the final model's top-1 are what the plan cannot say.
        ends = [s for s in result.stages if s.test_accuracy is not None] or result.stages[-1:]
        stages = [{"name": s.name, "val": r2(s.accuracy), "test": r2(s.test_accuracy)}
                  for s in ends]
    meta = {"stages": stages, "init": init, "seed": seed, "val": result.val_size}
    if result.shrink is not None and result.shrink.changed:
        meta["shapes"] = result.shrink.to_dict()   # dead-neuron removal: [before, after]
    if result.hists:
        meta["weight_hist"] = {n: {k: h[n] for k, h in result.hists.items() if n in h}
                               for n in result.hists.get("dense", {})}
    if result.plan is not None:
        meta["plan"] = result.plan.to_dict(compact=True)
    else:
        meta["bits"], meta["keep"] = bits, keep
    return {"pipeline": meta}

    return result


def _check_resume_config(saved: dict, now: dict, path) -> None:
    differ = [k for k in now if k != "world_size" and saved.get(k) != now[k]]
    if differ:
        raise ckpt.CheckpointError(
            f"{path} was written by a run with other options ({', '.join(f'{k}: {saved.get(k)!r} there, {now[k]!r} now' for k in differ)}); "
            f"resume with the same options or use another --checkpoint-dir")


# ----------------------------------------------------------------------------- command line

def add_compress_command(sub) -> None:
    """Register `deepcomp compress` on an argparse sub-parsers object."""
    p = sub.add_parser(
        "compress",
        help="full Deep Compression with retraining: prune, retrain, share, fine-tune",
        description="Prune iteratively with retraining, share weights by k-means, fine-tune "
                    "the centroids and write the result (a .dcz file; a state_dict where this "
                    "build has no codec). Prints a per-stage table.",
    )
    p.add_argument("model", metavar="MODEL",
                   help="a model name (deepcomp:lenet300 and deepcomp:lenet5 use the shipped "
                        "trained checkpoints) or a state_dict .pt file with --arch")
    p.add_argument("out", metavar="OUT", help="output path (.dcz)")
    p.add_argument("--data", required=True, metavar="NAME",
                   help="training / test data set: fashion-mnist, or imagefolder:PATH (a "
                        "torchvision ImageFolder: PATH/train/<class>/* trains, PATH/val/<class>/* "
                        "is the test split)")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="imagefolder: resize the shorter side to N and centre-crop N x N "
                        "(default: keep the images' size, which must then be the same for all)")
    p.add_argument("--normalize", default="imagenet", choices=["imagenet", "none"],
                   help="imagefolder: normalise with the ImageNet mean/std (default) or only "
                        "scale to [0, 1]")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the data set's files (default $DEEPCOMP_DATA or "
                        "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--arch", default=None, help="architecture of a state_dict MODEL, e.g. deepcomp:lenet5")
    p.add_argument("--keep", default=None,
                   help="kept fraction after pruning: one for all layers (0.1) or per layer "
                        "(fc1=0.08,fc2=0.09,fc3=0.26); or std:S to cut |w| <= S * std(W) per "
                        "layer with S raised in equal steps; default the paper's targets "
                        "for the LeNets, 0.1 otherwise")
    p.add_argument("--prune-steps", type=int, default=4,
                   help="pruning rounds, each followed by retraining (default 4; 0 skips pruning)")
    p.add_argument("--bits", default="fc=5,conv=8",
                   help="bits per shared weight by layer kind or name (default fc=5,conv=8)")
    p.add_argument("--init", default="linear", choices=["linear", "density", "forgy", "kmeans++"],
                   help="k-means centroid init (default linear)")
    p.add_argument("--epochs", type=float, default=2.0,
                   help="retraining epochs after each prune step (default 2)")
    p.add_argument("--finetune-epochs", type=float, default=1.0,
                   help="centroid fine-tuning epochs (default 1)")
    p.add_argument("--lr", type=float, default=2e-3,
                   help="Adam learning rate for retraining, cosine-decayed within each step")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="Adam learning rate for the centroids")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="train on a seeded random subset of N training examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where to train: auto (CUDA when present, default), cpu or cuda "
                        "(under torchrun, one GPU per local rank)")
    p.add_argument("--amp", action="store_true",
                   help="CUDA automatic mixed precision (float16 autocast + gradient scaling)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="write a checkpoint after every stage into DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue after the newest checkpoint in --checkpoint-dir")
    p.add_argument("--dist-timeout", type=float, default=1800.0, metavar="S",
                   help="under torchrun: seconds a collective (barrier, all-gather) may wait "
                        "for the other processes before the run fails (default 1800)")
    p.add_argument("--val", type=int, default=5000, metavar="N",
                   help="training images held out (seeded) on which every decision is made; "
                        "the test set is only reported (default 5000)")
    p.add_argument("--max-drop", type=float, default=None, metavar="D",
                   help="plan per-layer kept fraction and bits for the smallest file within D "
                        "points of the dense model's validation top-1 (--keep/--bits then "
                        "do not apply)")
    p.add_argument("--target-size", type=int, default=None, metavar="BYTES",
                   help="plan for the most accurate model whose file fits BYTES")
    p.add_argument("--sensitivity-plot", default=None, metavar="F.png",
                   help="with --max-drop / --target-size, also plot the per-layer sensitivity")
    p.add_argument("--record-hist", action="store_true",
                   help="store weight histograms before and after pruning in the file's meta "
                        "(about 1 KB) for 'deepcomp info --plot'")
    p.add_argument("--schedule", default="gradual", choices=["gradual", "rounds"],
                   help="with --max-drop / --target-size: gradual trials from the dense "
                        "model (cubic cut over --epochs, 2x --epochs of recovery, the best "
                        "validation point kept; --prune-steps trials bisect the bytes; "
                        "default) or one-shot rounds at rising tolerances (--epochs of "
                        "retraining each)")
    p.add_argument("--allocation", default=None, choices=["global", "sensitivity"],
                   help="gradual schedule: split each trial's bytes over the layers by one "
                        "magnitude threshold over all of them (default) or greedily on the "
                        "one-shot sensitivity curves")
    p.add_argument("--average", type=float, default=None, metavar="F",
                   help="gradual schedule: keep the mean of each trial's weights over the last "
                        "F of its recovery (stochastic weight averaging) instead of its best "
                        "validation point (default 0: the best point)")
    p.add_argument("--label-smoothing", type=float, default=None, metavar="S",
                   help="gradual schedule: label smoothing of the trials' training loss "
                        "(default 0: plain cross-entropy; 0.1 measured in benchmarks/RESULTS.md)")
    p.add_argument("--trial-dropout", type=float, default=None, metavar="P",
                   help="gradual schedule: dropout on the inputs of every fully connected layer "
                        "but the first while a trial trains (default 0)")
    p.add_argument("--search", default="bisect", choices=["bisect", "false-position"],
                   help="gradual schedule: each trial's byte target at the log midpoint of "
                        "the passing / failing bracket (default) or where the measured "
                        "validation drops put the budget")
    from deepcomp.codec.v2 import CODERS

    p.add_argument("--coder", default="auto", choices=CODERS,
                   help="how OUT's tensors are coded: auto (default) the smallest file; huffman "
                        "only table-driven Huffman streams, larger but decoding about as fast as "
                        "torch.load (--max-drop / --target-size price their choices with it)")
    p.add_argument("--keep-dead", action="store_true",
                   help="keep hidden units that pruning left without inputs or outputs (by "
                        "default they are removed, their constant output folded into the next "
                        "layer's bias; the outputs do not change)")
    p.add_argument("--snap", default="auto", metavar="E|auto|off",
                   help="round every float value of the final model (biases, centroids) to a "
                        "grid within E of its tensor's range when the file gets smaller and "
                        "validation top-1 falls by at most 0.1 points; the file stores the "
                        "rounded values exactly. auto (default): 1e-4 for --max-drop / "
                        "--target-size runs, off for the fixed recipe")
    p.set_defaults(func=_run_compress)


def _run_compress(args) -> int:
    from deepcomp.share import parse_bits

    if args.threads is not None:
        if args.threads < 1:
            raise DeepcompError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise DeepcompError(f"--batch-size must be >= 1, got {args.batch_size}")
    res = compress(
        args.model, args.out, arch=args.arch, data=args.data, data_dir=args.data_dir,
        keep=args.keep, prune_steps=args.prune_steps, epochs=args.epochs,
        finetune_epochs=args.finetune_epochs, bits=parse_bits(args.bits), init=args.init,
        lr=args.lr, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
        subset=args.subset, seed=args.seed, progress=not args.quiet,
        device=args.device, amp=args.amp, checkpoint_dir=args.checkpoint_dir,
        resume=args.resume, dist_timeout=args.dist_timeout, val=args.val,
        max_drop=args.max_drop, target_size=args.target_size,
        sensitivity_plot=args.sensitivity_plot, record_hist=args.record_hist,
        image_size=args.image_size, normalize=args.normalize, shrink=not args.keep_dead,
        schedule=args.schedule, allocation=args.allocation, average=args.average,
        search=args.search, coder=args.coder, snap=args.snap,
        label_smoothing=args.label_smoothing, trial_dropout=args.trial_dropout,
    )
    if res.rank != 0:  # rank 0 reports for the run
        return 0
    print(res.table())
    if res.plan is not None:
        print()
        print(res.plan.table())
    if res.prune_report is not None:
        print()
        print(res.prune_report.table())
    if res.shrink is not None:
        print()
        print(res.shrink.table())
    if res.codec_summary is not None:
        s = res.codec_summary
        if res.shrink is not None and res.shrink.changed and res.unshrunk_bytes:
            # Against the model as given, not the one dead-neuron removal left.
            print(f"\nwrote {res.out}: {s['file_bytes']} bytes, "
                  f"{res.unshrunk_bytes / s['file_bytes']:.1f}x smaller than the "
                  f"{res.unshrunk_bytes} bytes of dense fp32 tensors ({s['dense_bytes']} after "
                  f"dead-neuron removal)")
        else:
            print(f"\nwrote {res.out}: {s['file_bytes']} bytes, {s['ratio']:.1f}x smaller than the "
                  f"{s['dense_bytes']} bytes of dense fp32 tensors")
    else:
        print(f"\nwrote {res.out}")
    return 0
