"""Execution plans of the version-1 graph executor (runtime/exec_plan.py): the planned run
gives exactly the step-by-step run's outputs, fuses conv + ReLU + max-pool where it may,
never hands out its own buffers, follows policy and thread changes, and keeps the
executor's error behaviour."""
import threading

import pytest
import torch

import deepcomp
from deepcomp.errors import ModelError
from deepcomp.models import get_model
from deepcomp.runtime import exec_plan, load, set_policy
from deepcomp.runtime import kernels as K

pytestmark = pytest.mark.skipif(not K.native_available(), reason="native kernels missing")


@pytest.fixture(scope="module")
def lenet5(tmp_path_factory):
    p = tmp_path_factory.mktemp("plan") / "lenet5.dcz"
    deepcomp.save(get_model("deepcomp:lenet5"), p, prune="sparsity:0.92", bits={"fc": 5, "conv": 8})
    return p


def stepwise(m, x):
    return m._forward(m.check_input(x))


def plan_of(m, x):
    return m._plans.get((tuple(x.shape), K.get_num_threads()))


def fixed_paths(m, monkeypatch, conv="sparsekxk", fc="sparse"):
    """Pins the layers' choices (the measured one is noise-dependent on a loaded machine)."""
    from deepcomp.runtime.layers import RuntimeConv2d

    def allowed(self):
        return [conv] if isinstance(self, RuntimeConv2d) else [fc]
    for layer in m.layers.values():
        monkeypatch.setattr(layer, "_allowed", allowed.__get__(layer))


@pytest.mark.parametrize("batch", [1, 7, 16])
def test_plan_matches_the_stepwise_run_and_fuses_the_pools(lenet5, monkeypatch, batch):
    m = load(lenet5, policy="compact")
    fixed_paths(m, monkeypatch)
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    first = m(x)  # step by step; the plan is built from it
    plan = plan_of(m, x)
    assert isinstance(plan, exec_plan.Plan) and plan.persistent
    # conv1 + pool, conv2 + pool, flatten (a view), fc1, fc2: the pools have no step
    assert len(plan.steps) == 5
    second, third = m(x), m(x)
    ref = stepwise(m, x)
    assert torch.equal(first, ref) and torch.equal(second, ref) and torch.equal(third, ref)
    # outputs are the caller's: not the plan's buffers, not each other
    assert second.data_ptr() != third.data_ptr()
    third.fill_(0)
    assert torch.equal(m(x), ref)
    dense = get_model("deepcomp:lenet5").eval()
    dense.load_state_dict(deepcomp.decode(lenet5))
    torch.testing.assert_close(second, dense(x), rtol=1e-4, atol=1e-4)


def test_plan_without_persistent_buffers_gives_the_same(lenet5, monkeypatch):
    monkeypatch.setattr(exec_plan, "PLAN_BUFFER_BYTES", 0)
    m = load(lenet5, policy="compact")
    fixed_paths(m, monkeypatch)
    x = torch.randn(3, 1, 28, 28)
    m(x)
    assert not plan_of(m, x).persistent
    a, b = m(x), m(x)
    assert torch.equal(a, stepwise(m, x)) and torch.equal(a, b)


def test_other_paths_run_their_bound_functions_and_pools_stay_native(lenet5, monkeypatch):
    m = load(lenet5, policy="compact")
    fixed_paths(m, monkeypatch, conv="decode", fc="decode")
    x = torch.randn(2, 1, 28, 28)
    m(x)
    plan = plan_of(m, x)
    assert isinstance(plan, exec_plan.Plan) and len(plan.steps) == 7  # nothing fused
    assert torch.equal(m(x), stepwise(m, x))


def test_policy_change_invalidates_the_plan(lenet5, monkeypatch):
    m = load(lenet5, policy="compact")
    fixed_paths(m, monkeypatch)
    x = torch.randn(2, 1, 28, 28)
    m(x)
    old = plan_of(m, x)
    x3 = torch.randn(3, 1, 28, 28)
    m(x3)
    assert len(m._plans) == 2
    monkeypatch.undo()
    set_policy(m, "dense")
    y = m(x)  # step by step again: the layers choose anew
    assert plan_of(m, x) is not old
    assert len(m._plans) == 1  # the other shape's plan, holding the old forms, is gone too
    assert torch.equal(m(x), y)
    assert all(p == "dense" for d in deepcomp.runtime.path_summary(m).values() for p in d.values())


def test_thread_counts_give_identical_results(lenet5, monkeypatch):
    m = load(lenet5, policy="compact")
    fixed_paths(m, monkeypatch)
    x = torch.randn(16, 1, 28, 28)
    before = (K.get_num_threads(), torch.get_num_threads(), K._ops._C.parallel_min_work())
    outs = []
    try:
        K._ops._C.set_parallel_min_work(0)  # wake the second thread even for LeNet's work
        for nt in (1, 2, 1, 2):
            K.set_num_threads(nt)
            m(x)
            outs.append(m(x))
    finally:
        K.set_num_threads(before[0])
        torch.set_num_threads(before[1])
        K._ops._C.set_parallel_min_work(before[2])
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_concurrent_calls_do_not_share_buffers(lenet5, monkeypatch):
    m = load(lenet5, policy="compact")
    fixed_paths(m, monkeypatch)
    xs = [torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    for x in xs[:1]:
        m(x)
    refs = [stepwise(m, x) for x in xs]
    bad = []

    def worker(i):
        for _ in range(30):
            if not torch.equal(m(xs[i]), refs[i]):
                bad.append(i)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_errors_after_planning_stay_model_errors(lenet5):
    m = load(lenet5, policy="compact")
    x = torch.randn(2, 1, 28, 28)
    m(x)
    m(x)
    with pytest.raises(ModelError):
        m(torch.randn(2, 3, 28, 28))
    with pytest.raises(ModelError):
        m(torch.randn(2, 1, 20, 20))
    with pytest.raises(ModelError):
        m("not a tensor")
    assert torch.equal(m(x), stepwise(m, x))


class _PoolNet(torch.nn.Module):
    """ResNet's stem shape in small: conv, ReLU, 3x3 / 2 max-pool with padding, and a
    2x2 ceil_mode pool on an odd size."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 6, 3)
        self.fc = torch.nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 3, 2, 1)
        x = torch.nn.functional.max_pool2d(self.c2(x), 2, 2, 0, ceil_mode=True)
        return self.fc(torch.flatten(x, 1))


def test_graph_executor_max_pool_is_native_and_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    net = _PoolNet().eval()
    p = tmp_path / "pool.dcz"
    deepcomp.save(net, p, prune="sparsity:0.5", bits={"fc": 6, "conv": 6}, example_inputs=torch.randn(2, 3, 17, 17))
    m = load(p, policy="sparse")  # a fixed path: both models run the same layer kernels
    ref = load(p, policy="sparse")
    ref.native_ops = False
    calls = []
    real = K._ops._C.max_pool2d

    def spy(*a):
        calls.append(a[1])
        return real(*a)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 17, 17)
        try:
            K._ops._C.max_pool2d = spy
            y = m(x)
            y2 = m(x)
        finally:
            K._ops._C.max_pool2d = real
        torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
        assert torch.equal(y, y2)
    assert (3, 3, 2, 2, 1, 1, False) in calls and (2, 2, 2, 2, 0, 0, True) in calls
    assert type(m).__module__ == "deepcomp.runtime.executor"  # the version-2 graph executor


def test_graph_executor_binds_layer_paths_after_the_first_run(tmp_path, monkeypatch):
    torch.manual_seed(1)
    net = _PoolNet().eval()
    p = tmp_path / "pool.dcz"
    deepcomp.save(net, p, prune="sparsity:0.5", bits={"fc": 6, "conv": 6}, example_inputs=torch.randn(2, 3, 17, 17))
    m = load(p, policy="sparse")
    x = torch.randn(2, 3, 17, 17)
    first = m(x)
    assert len(m._bound) == 1
    # the bound steps run without the layers' forward()
    for layer in m.layers:
        monkeypatch.setattr(layer, "forward", lambda *a: pytest.fail("forward() called"))
    assert torch.equal(m(x), first)
    monkeypatch.undo()
    set_policy(m, "dense")  # rebinds the layers: the guard falls back to forward()
    torch.testing.assert_close(m(x), first, rtol=1e-4, atol=1e-4)
    assert not m._bound  # ... and drops the stale binding
    dense = m(x)
    assert len(m._bound) == 1 and torch.equal(m(x), dense)
    assert all(p == "dense" for d in deepcomp.runtime.path_summary(m).values() for p in d.values())
    with pytest.raises(ModelError):
        m(torch.randn(2, 4, 17, 17))


def test_a_graph_with_nothing_to_bind_runs_step_by_step_until_the_layers_change(tmp_path):
    p = tmp_path / "lenet300.dcz"
    deepcomp.save(get_model("deepcomp:lenet300"), p, prune="sparsity:0.92", bits={"fc": 6})
    m = load(p, policy="dense")  # PyTorch's linear on a dense weight: nothing native to bind
    x = torch.randn(3, 1, 28, 28)
    y = m(x)
    plan = plan_of(m, x)
    assert isinstance(plan, exec_plan.Plan) and plan.steps is None
    assert torch.equal(m(x), y)
    set_policy(m, "sparse")
    ys = m(x)
    plan = plan_of(m, x)
    assert plan.steps is not None and len(plan.steps) >= 3  # the sparse layers, bound
    assert torch.equal(m(x), ys)
    torch.testing.assert_close(ys, y, rtol=1e-4, atol=1e-4)
