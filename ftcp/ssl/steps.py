"""One optimisation step of a block: forward, task losses, backward, gradient clipping and a
fused AdamW update, with no host synchronisation, optionally replayed from CUDA graphs.

Why: the block models are small, so at upstream's batch sizes (32-64) a step is bound by the
host launching a few hundred kernels, not by the GPU.  Two things remove that bound:

* **No host sync per step.**  A step whose gradient norm is not finite is skipped *on the
  device*: the fused AdamW kernel reads ``found_inf`` and leaves weights, moments and its step
  count untouched (as ``torch.amp.GradScaler`` does), batch-norm running statistics touched by
  the bad forward pass are restored from a snapshot, and the epoch's loss sums, skip count and
  per-step skip flags stay on the device until ``read()`` at the end of the epoch.
* **CUDA graphs.**  On one CUDA device the whole step (everything above) is captured once per
  input signature (shapes of the views; the site blocks cut batches to a few lengths) and
  replayed; the host then only builds the views (masks and augmentations, drawn from the
  run's generator outside the graph) and copies them into the graph's static inputs.  Dropout
  inside the graph draws from the default CUDA generator, which graphs replay with fresh
  offsets.  A signature is run eagerly once (warm-up on a side stream) before it is captured;
  if capture fails, the step falls back to eager execution for the rest of the run and says
  why (``graph_status``).

The learning rate is a device tensor filled before each step (``set_lr``), so a replayed step
uses the schedule's current value.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

log = logging.getLogger(__name__)

#: eager steps of a new input signature before it is captured
WARMUP_STEPS = 1
#: distinct signatures captured at most (the site blocks need ~13 batch lengths)
MAX_GRAPHS = 24


def _leaves(tree, prefix=()):
    """(path, value) pairs of a nested dict of tensors, in a stable order."""
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k], prefix + (k,))
    else:
        yield prefix, tree


def _signature(tree) -> tuple:
    out = []
    for path, v in _leaves(tree):
        if isinstance(v, torch.Tensor):
            out.append((path, tuple(v.shape), v.dtype))
        else:
            out.append((path, repr(v)))
    return tuple(out)


def _clone(tree):
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    return tree.clone() if isinstance(tree, torch.Tensor) else tree


def _norm_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    out = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats:
            out += [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    return out


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device,
                   capturable: bool) -> torch.optim.AdamW:
    """Fused AdamW with the learning rate as a device tensor (what ``set_lr`` fills)."""
    kwargs = {"capturable": True} if capturable else {}
    return torch.optim.AdamW(model.parameters(), lr=torch.tensor(float(lr), device=device),
                             weight_decay=weight_decay, fused=True, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


class TrainStep:
    """Callable ``step(inputs, targets)`` for one training run (see the module docstring).

    ``model`` is what runs the forward pass (possibly DDP-wrapped); ``tasks`` the block's tasks;
    ``capacity`` the number of steps per epoch (size of the skip-flag buffer).
    """

    def __init__(self, model, tasks, optimizer, grad_clip: float, amp: bool, device: torch.device,
                 capacity: int, graphs: bool):
        self.model, self.tasks, self.opt = model, tasks, optimizer
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.clip = float(grad_clip) if grad_clip else math.inf
        self.amp, self.device = amp, device
        self.weights = torch.tensor([t.weight for t in tasks], device=device)
        self.found_inf = torch.zeros((), device=device)
        optimizer.found_inf = self.found_inf          # read by the fused AdamW kernel
        self.sums = torch.zeros(len(tasks), device=device)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)
        self.flags = torch.zeros(max(1, capacity), dtype=torch.bool, device=device)
        self.counter = torch.zeros((), dtype=torch.int64, device=device)
        self.bn = _norm_buffers(model)
        self.bn_snapshot = [b.clone() for b in self.bn]
        self.graphs_wanted = bool(graphs) and device.type == "cuda"
        self.graphs: dict[tuple, list] = {}     # signature -> [graph, static inputs, static targets]
        self.seen: dict[tuple, int] = {}
        self.graph_status = "off" if not self.graphs_wanted else "on"
        self.eager_steps = self.replayed_steps = 0
        self._capturing = False

    # ---------------------------------------------------------------------------------------
    def new_epoch(self) -> None:
        for t in (self.sums, self.skipped, self.flags, self.counter):
            t.zero_()

    def read(self, n_steps: int) -> tuple[list[float], int, np.ndarray]:
        """(mean-free loss sums per task, skipped steps, skip flag per step): one host sync."""
        sums, skipped, flags = self.sums.cpu(), int(self.skipped.cpu()), self.flags[:n_steps].cpu().numpy()
        return sums.tolist(), skipped, flags

    # ---------------------------------------------------------------------------------------
    def _body(self, inputs, targets) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.bn:
            torch._foreach_copy_(self.bn_snapshot, self.bn)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                            cache_enabled=not self._capturing):
            preds = self.model(inputs)
        losses = torch.stack([t.loss(preds[t.name], targets[t.name], gather=True) for t in self.tasks])
        (losses * self.weights).sum().backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        bad = ~torch.isfinite(norm)
        self.found_inf.copy_(bad)
        self.opt.step()                                # skipped on the device where found_inf is 1
        self.sums.add_(torch.where(bad, torch.zeros_like(losses), losses.detach().float()))
        self.skipped.add_(bad.to(torch.int64))
        self.flags.index_put_((self.counter.clamp_max(len(self.flags) - 1).reshape(1),), bad.reshape(1))
        self.counter.add_(1)
        for buf, snap in zip(self.bn, self.bn_snapshot, strict=False):
            buf.copy_(torch.where(bad, snap, buf))

    def _eager(self, inputs, targets, side_stream: bool) -> None:
        self.eager_steps += 1
        if not side_stream:
            self._body(inputs, targets)
            return
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            self._body(inputs, targets)
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def _capture(self, signature, inputs, targets) -> bool:
        static_inputs, static_targets = _clone(inputs), _clone(targets)
        graph = torch.cuda.CUDAGraph()
        self._capturing = True
        try:
            with torch.cuda.graph(graph):
                self._body(static_inputs, static_targets)
        except Exception as exc:      # capture is an optimisation: any failure means eager steps
            self.graphs_wanted = False
            self.graph_status = f"off after a failed capture ({type(exc).__name__}: {str(exc)[:200]})"
            log.warning("CUDA graph capture failed, training continues eagerly: %s", self.graph_status)
            torch.cuda.synchronize(self.device)
            return False
        finally:
            self._capturing = False
        self.graphs[signature] = [graph, static_inputs, static_targets]
        graph.replay()                # the capture recorded this step; replay runs it
        self.replayed_steps += 1
        return True

    def __call__(self, inputs, targets) -> None:
        if not self.graphs_wanted:
            self._eager(inputs, targets, side_stream=False)
            return
        sig = _signature({"i": inputs, "t": targets})
        entry = self.graphs.get(sig)
        if entry is not None:
            graph, static_inputs, static_targets = entry
            for (_, dst), (_, src) in zip(_leaves({"i": static_inputs, "t": static_targets}),
                                          _leaves({"i": inputs, "t": targets}), strict=False):
                if isinstance(dst, torch.Tensor):
                    dst.copy_(src)
            graph.replay()
            self.replayed_steps += 1
            return
        seen = self.seen.get(sig, 0)
        self.seen[sig] = seen + 1
        if seen < WARMUP_STEPS or len(self.graphs) >= MAX_GRAPHS:
            self._eager(inputs, targets, side_stream=True)
            return
        if not self._capture(sig, inputs, targets):
            self._eager(inputs, targets, side_stream=False)

    def stats(self) -> dict:
        return {"cuda_graphs": self.graph_status, "graphs_captured": len(self.graphs),
                "eager_steps": self.eager_steps, "replayed_steps": self.replayed_steps}
