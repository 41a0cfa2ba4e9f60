"""The graph and planned-run meta of a LeNet-5 file, as compress stores them (tests only):
what preset header dictionary 2 is made for."""
from __future__ import annotations


def lenet5_graph_and_meta():
    """(model, graph, meta): deepcomp's LeNet-5, its torch.fx graph, a planned run's meta."""
    from deepcomp.graph import capture
    from deepcomp.models import get_model

    model = get_model("deepcomp:lenet5").eval()
    graph, _ = capture(model)
    meta = {"pipeline": {"stages": [{"name": "dense", "val": 91.97, "test": 91.25},
                                    {"name": "snap 0.0001", "val": 91.53, "test": 90.89}],
                         "init": "linear", "seed": 2, "val": 10000,
                         "plan": {"layers": {"fc1.weight": {"keep": 0.0233, "bits": 2}},
                                  "budget": {"max_drop": 0.5}, "seed": 2}}, "snap": 0.0001}
    return model, graph, meta
