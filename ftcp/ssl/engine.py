"""One training engine for every SSL block: GPU-first, DDP-ready, resumable, deterministic on CPU.

What a run does (``run_block``):

1. Opens the data root, loads (or makes) the SSL split and the normaliser; reads the block's
   FTCP regions once (memory-mapped store -> numpy -> one tensor per field on the device when
   it fits, else in host memory).
2. Fits the block's input statistics and every task's baseline (and regression target
   scaling) on SSL-train, with the fixed evaluation masks.
3. Trains with AdamW + warm-up/cosine schedule (per step) + gradient clipping, bf16 autocast
   on CUDA, batches as index slices of the device tensors, masks and views drawn on the device
   from a generator re-seeded every epoch from (seed, epoch, rank).  Losses are accumulated
   on the device and read once per epoch.
4. After every epoch: validation loss (fixed masks), early stopping, ``best.pt`` (a real copy,
   written on improvement) and ``last.pt`` (everything needed to resume).
5. Evaluates every task on validation and test from ``best.pt`` next to its trivial baseline
   -> ``metrics.json``.
6. Exports embeddings of ALL materials of the store from the clean input (eval mode, fp32,
   store order) -> ``embeddings.npz`` (``material_id``, ``embedding``).

Multi-GPU: launched by ``torchrun --nproc_per_node=K``, every rank trains its shard of the same
seeded permutation under DistributedDataParallel (NCCL on CUDA, gloo on CPU); ``--batch-size``
is per process (global batch = K x batch size); batch-statistic losses gather across ranks;
rank 0 writes files and logs.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import data as D
from .block import SSLBlock

CHECKPOINT_VERSION = 1
EVAL_SEED = 20240611
#: settings that must match to resume from last.pt
_RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "grad_clip", "warmup_epochs", "seed", "split_seed",
                "max_samples", "bucket", "amp", "eval_batch_size")


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int                  # per process
    lr: float
    patience: int
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    warmup_epochs: float = 0.0
    seed: int = 42
    split_seed: int = 42
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    amp: str = "auto"                # auto (bf16 on CUDA, off on CPU) | bf16 | off
    max_samples: int | None = None   # cap SSL-train (val/test get 1/8 of it); export still covers all
    eval_batch_size: int = 1024
    export_batch_size: int = 2048
    bucket: bool = True              # batches of similar lengths for blocks with sequence fields
    compile: bool = False
    threads: int | None = None
    progress: bool = True
    resume: bool = True
    stop_after_epochs: int | None = None
    export: bool = True
    min_delta: float = 0.0
    model: dict = field(default_factory=dict)
    embed_dim: int | None = None

    @classmethod
    def for_block(cls, block: SSLBlock, **overrides) -> "TrainConfig":
        d = block.defaults
        base = dict(epochs=d.epochs, batch_size=d.batch_size, lr=d.lr, patience=d.patience,
                    weight_decay=d.weight_decay, grad_clip=d.grad_clip)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


# ------------------------------------------------------------------------------------------
# distributed / device helpers
@dataclass
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def all_reduce_(self, tensors):
        if self.world > 1:
            for t in tensors:
                dist.all_reduce(t)


def setup_distributed(device_kind: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        owns = True
    return Dist(world, rank, local, owns)


def resolve_device(name: str, ddp: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return torch.device(f"cuda:{ddp.local_rank}" if name == "cuda" else name)
    if name != "cpu":
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device("cpu")


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)   # also seeds every CUDA device


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------
# data on the device
def load_block_fields(block: SSLBlock, data: D.SSLData, inference: bool = False) -> dict[str, np.ndarray]:
    """The block's fields for every material (store order), numpy, after ``prepare_fields``.

    ``inference``: for embedding crystals outside the training store (``block.inference_fields``
    instead of ``block.extra_fields``: no cached pretext targets are needed).
    """
    raw_cache: dict[str, np.ndarray] = {}
    fields = {}
    for f in block.fields:
        if f.region not in raw_cache:
            raw_cache[f.region] = data.source.region(f.region)
        raw = raw_cache[f.region]
        fields[f.name] = D.normalise_region(data.scaler, f.region, raw) if f.normalised else raw
    fields.update(block.inference_fields(data) if inference else block.extra_fields(data))
    fields = block.prepare_fields(fields)
    n = len(data.ids)
    for k, v in fields.items():
        if len(v) != n:
            raise ValueError(f"block {block.number}: field {k!r} has {len(v)} rows for {n} materials")
    return fields


class DeviceData:
    """Block fields as tensors (on the compute device when they fit) + batch gathering."""

    def __init__(self, fields: dict[str, np.ndarray], lengths, sequence_fields, device: torch.device):
        nbytes = sum(v.nbytes for v in fields.values())
        store = device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes > 0.5 * free:
                store = torch.device("cpu")
        self.device, self.store = device, store
        self.nbytes = nbytes
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(store) for k, v in fields.items()}
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.sequence_fields = tuple(sequence_fields)
        self.full_length = max((self.tensors[k].shape[1] for k in self.sequence_fields), default=0)

    def batch_length(self, positions: np.ndarray) -> int | None:
        if self.lengths is None or not self.sequence_fields:
            return None
        longest = int(self.lengths[positions].max()) if len(positions) else 1
        return min(self.full_length, max(8, -(-longest // 8) * 8))

    def gather(self, index: torch.Tensor, length: int | None) -> dict[str, torch.Tensor]:
        out = {}
        idx = index.to(self.store)
        for k, v in self.tensors.items():
            if length is not None and k in self.sequence_fields:
                v = v[:, :length]
            out[k] = v.index_select(0, idx).to(self.device, non_blocking=True)
        return out

    def subset(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        return self.gather(torch.as_tensor(positions), None)


def eval_batches(positions: np.ndarray, batch_size: int, data: DeviceData):
    """Fixed-order batches (length-sorted, stably, for sequence blocks): [(positions, length)]."""
    order = positions
    if data.lengths is not None:
        order = positions[np.argsort(data.lengths[positions], kind="stable")]
    return [(order[s:s + batch_size], data.batch_length(order[s:s + batch_size]))
            for s in range(0, len(order), batch_size)]


def _reset_poisoned_norm_stats(model: torch.nn.Module) -> None:
    """After a skipped step: batch-norm running statistics that the non-finite forward pass
    updated are reset (they re-accumulate within a few steps) rather than kept as NaN."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats:
            if not (torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all()):
                m.reset_running_stats()


def train_batches(positions: np.ndarray, per_rank: int, ddp: Dist, epoch_rng: np.random.Generator,
                  data: DeviceData, bucket: bool):
    """One epoch of global batches (drop_last); returns this rank's [(positions, length)]."""
    glob = per_rank * ddp.world
    perm = positions[epoch_rng.permutation(len(positions))]
    n_batches = len(perm) // glob
    perm = perm[:n_batches * glob]
    batches = [perm[i * glob:(i + 1) * glob] for i in range(n_batches)]
    if bucket and data.lengths is not None and n_batches > 1:
        # sort inside chunks of 50 batches by length, then shuffle the batch order
        chunk = 50 * glob
        sorted_perm = np.concatenate([
            perm[s:s + chunk][np.argsort(data.lengths[perm[s:s + chunk]], kind="stable")]
            for s in range(0, len(perm), chunk)])
        batches = [sorted_perm[i * glob:(i + 1) * glob] for i in range(n_batches)]
        batches = [batches[i] for i in epoch_rng.permutation(n_batches)]
    mine = [b[ddp.rank * per_rank:(ddp.rank + 1) * per_rank] for b in batches]
    # the length is that of the whole global batch so every rank runs the same shapes
    return [(m, data.batch_length(b)) for m, b in zip(mine, batches)]


# ------------------------------------------------------------------------------------------
def lr_lambda_factory(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _atomic_save(obj, path: Path):
    tmp = Path(str(path) + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, obj):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _state_to_cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


# ------------------------------------------------------------------------------------------
class Trainer:
    """Holds one block run; ``run_block`` is the usual entry point."""

    def __init__(self, block: SSLBlock, cfg: TrainConfig, root=None, ssl_dir=None, exclude=(), exclude_source=None,
                 log=print):
        self.block, self.cfg = block, cfg
        self.log_fn = log
        self.t0 = time.perf_counter()
        kind = "cuda" if (cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())) else "cpu"
        self.ddp = setup_distributed(kind)
        self.device = resolve_device(cfg.device, self.ddp)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp = (cfg.amp == "bf16") or (cfg.amp == "auto" and self.device.type == "cuda")
        seed_everything(cfg.seed)

        # -- data ------------------------------------------------------------------------
        t = time.perf_counter()
        root = D.data_root(root)
        ssl_dir = Path(ssl_dir) if ssl_dir is not None else root / "SSL"
        if self.ddp.main:
            self.data = D.prepare(root, ssl_dir, cfg.split_seed, exclude, exclude_source, create=True)
        self.ddp.barrier()
        if not self.ddp.main:
            self.data = D.prepare(root, ssl_dir, cfg.split_seed, exclude, exclude_source, create=False)
        self.out_dir = ssl_dir / block.dirname
        if self.ddp.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        fields = load_block_fields(block, self.data)
        self.dd = DeviceData(fields, block.lengths(fields), block.sequence_fields, self.device)
        del fields
        self.parts = self._parts()
        self.timing = {"load_seconds": time.perf_counter() - t}

        # -- statistics, model, tasks --------------------------------------------------------
        t = time.perf_counter()
        self.model_cfg = block.model_config(cfg.model, cfg.embed_dim)
        block.configure(self.model_cfg)
        block.stats = block.fit_stats(self.dd.subset(self.parts["train"]))
        torch.manual_seed(cfg.seed)
        self.model = block.build_model(self.model_cfg).to(self.device)
        self.tasks = block.tasks
        self.gen = torch.Generator(device=self.device)
        self._fit_baselines()
        self.timing["baseline_seconds"] = time.perf_counter() - t

    # ----------------------------------------------------------------------------------
    def log(self, msg: str):
        if self.ddp.main and self.log_fn:
            self.log_fn(msg)

    def _parts(self) -> dict[str, np.ndarray]:
        parts = {p: self.data.index[p] for p in D.SPLIT_PARTS}
        m = self.cfg.max_samples
        if m:
            rng = np.random.default_rng([self.cfg.split_seed, 7])
            caps = {"train": m, "val": max(2, -(-m // 8)), "test": max(2, -(-m // 8))}
            parts = {p: np.sort(rng.permutation(v)[:caps[p]]) if len(v) > caps[p] else v for p, v in parts.items()}
        if len(parts["train"]) < 2 or len(parts["val"]) < 1:
            raise ValueError(f"too few materials for SSL training: {[(p, len(v)) for p, v in parts.items()]}")
        return parts

    def _fit_baselines(self):
        states = [t.fit_init(self.device) for t in self.tasks]
        with torch.no_grad():
            for b, (pos, length) in enumerate(eval_batches(self.parts["train"], self.cfg.eval_batch_size, self.dd)):
                if b % self.ddp.world != self.ddp.rank:
                    continue
                self.gen.manual_seed(EVAL_SEED + b)
                batch = self.dd.gather(torch.as_tensor(pos), length)
                _, targets = self.block.make_views(batch, self.gen, train=False)
                for task, st in zip(self.tasks, states):
                    task.fit_update(st, targets[task.name])
        for task, st in zip(self.tasks, states):
            self.ddp.all_reduce_([st[k] for k in sorted(st)])
            task.fit_finish(st)

    # ----------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        cfg = asdict(self.cfg)
        fp = {k: cfg[k] for k in _RESUME_KEYS}
        fp.update(block=self.block.number, model=self.model_cfg, world_size=self.ddp.world,
                  train_ids=D.ids_digest(self.data.ids[self.parts["train"]]))
        return json.loads(json.dumps(fp, default=_json_default))

    def config_record(self) -> dict:
        return {"block": {"number": self.block.number, "name": self.block.name,
                          "embed_dim": self.model_cfg["embed_dim"],
                          "fields": [asdict(f) for f in self.block.fields],
                          "tasks": [{"name": t.name, "kind": type(t).__name__, "weight": t.weight,
                                     "metric": t.metric, "higher_is_better": t.higher_is_better} for t in self.tasks]},
                "model": self.model_cfg, "train": asdict(self.cfg),
                "global_batch_size": self._per_rank_batch() * self.ddp.world,
                "world_size": self.ddp.world, "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
                "amp_bf16": self.amp, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "data_root": str(self.data.root), "source": self.data.source.kind, "ssl_dir": str(self.data.ssl_dir),
                "n_materials": int(len(self.data.ids)), "parts": {p: int(len(v)) for p, v in self.parts.items()},
                "split": {"seed": self.data.split["seed"], "sizes": self.data.split["sizes"],
                          "excluded_source": self.data.split.get("excluded_source")},
                "field_bytes": int(self.dd.nbytes), "fields_on": str(self.dd.store),
                "block_stats": {k: v.detach().cpu().tolist() for k, v in self.block.stats.items()},
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _per_rank_batch(self) -> int:
        return max(1, min(self.cfg.batch_size, len(self.parts["train"]) // self.ddp.world))

    def _checkpoint(self, model, extra: dict) -> dict:
        return {"version": CHECKPOINT_VERSION, "block": self.block.number, "model_config": self.model_cfg,
                "model": _state_to_cpu(_unwrap(model).state_dict()),
                "block_stats": {k: v.detach().cpu() for k, v in self.block.stats.items()},
                "task_fitted": {t.name: t.fitted_state() for t in self.tasks}, **extra}

    # ----------------------------------------------------------------------------------
    def _evaluate(self, model, positions, metrics: bool):
        """Mean task losses (and task metrics) on ``positions`` with the fixed masks."""
        model.eval()
        loss_sum = torch.zeros(len(self.tasks), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        states = [t.eval_init(self.device) for t in self.tasks] if metrics else None
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            for b, (pos, length) in enumerate(eval_batches(positions, self.cfg.eval_batch_size, self.dd)):
                if b % self.ddp.world != self.ddp.rank:
                    continue
                self.gen.manual_seed(EVAL_SEED + b)
                batch = self.dd.gather(torch.as_tensor(pos), length)
                inputs, targets = self.block.make_views(batch, self.gen, train=False)
                preds = model(inputs)
                for k, task in enumerate(self.tasks):
                    loss_sum[k] += task.loss(preds[task.name], targets[task.name], gather=False).double() * len(pos)
                    if metrics:
                        task.eval_update(states[k], preds[task.name], targets[task.name])
                count += len(pos)
        self.ddp.all_reduce_([loss_sum, count])
        losses = (loss_sum / count.clamp_min(1)).tolist()
        out = {"loss": {t.name: v for t, v in zip(self.tasks, losses)}}
        out["loss"]["total"] = sum(t.weight * v for t, v in zip(self.tasks, losses))
        if metrics:
            for task, st in zip(self.tasks, states):
                self.ddp.all_reduce_([st[k] for k in sorted(st)])
                out[task.name] = task.eval_finish(st)
        return out

    # ----------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, block = self.cfg, self.block
        per_rank = self._per_rank_batch()
        steps_per_epoch = len(self.parts["train"]) // (per_rank * self.ddp.world)
        total_steps = max(1, steps_per_epoch * cfg.epochs)
        fused = self.device.type == "cuda"
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                **({"fused": True} if fused else {}))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda_factory(total_steps, int(cfg.warmup_epochs * steps_per_epoch)))
        last_path, best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        state = {"epoch": 0, "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [], "finished": False}
        fp = self.fingerprint()
        if last_path.exists() and cfg.resume:
            ck = torch.load(last_path, map_location=self.device, weights_only=True)
            if ck.get("fingerprint") != fp:
                diff = sorted(k for k in set(fp) | set(ck.get("fingerprint", {}))
                              if fp.get(k) != ck.get("fingerprint", {}).get(k))
                raise ValueError(f"{last_path} belongs to a run with other settings ({', '.join(diff)}); "
                                 f"pass --restart to start over, or use another --out")
            self.model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            # task baselines / target scales are refitted in __init__: deterministic from the data and masks
            state = {k: ck[k] for k in state}
            self.log(f"resumed {block.dirname} from {last_path} after epoch {state['epoch']}"
                     + (" (finished)" if state["finished"] else ""))
        elif self.ddp.main:
            _write_json(self.out_dir / "config.json", self.config_record())
            for p in (best_path, self.out_dir / "metrics.json", self.out_dir / "embeddings.npz"):
                p.unlink(missing_ok=True)

        model = self.model
        if self.ddp.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=block.ddp_find_unused_parameters)
        if cfg.compile:
            import torch._dynamo as dynamo
            dynamo.config.cache_size_limit = max(64, dynamo.config.cache_size_limit)
            model = torch.compile(model)

        from tqdm.auto import tqdm
        show = cfg.progress and self.ddp.main
        weights = torch.tensor([t.weight for t in self.tasks], device=self.device)
        epochs_this_run = 0
        bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc=f"block {block.number} {block.name}",
                   unit="epoch", disable=not show, dynamic_ncols=True)
        while not state["finished"] and state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            torch.manual_seed(derived_seed(cfg.seed, epoch, self.ddp.rank, 1))      # dropout etc.
            self.gen.manual_seed(derived_seed(cfg.seed, epoch, self.ddp.rank, 2))   # masks and views
            rng = np.random.default_rng(derived_seed(cfg.seed, epoch, 3))           # same on every rank
            batches = train_batches(self.parts["train"], per_rank, self.ddp, rng, self.dd, cfg.bucket)
            order = torch.from_numpy(np.concatenate([p for p, _ in batches])).to(self.dd.store)
            model.train()
            sums = torch.zeros(len(self.tasks), device=self.device)
            skipped, skipped_ids = 0, []
            _sync(self.device)
            t_epoch = time.perf_counter()
            offset = 0
            for pos, length in tqdm(batches, desc=f"epoch {epoch + 1}", leave=False, disable=not show,
                                    dynamic_ncols=True, mininterval=1.0):
                batch = self.dd.gather(order[offset:offset + len(pos)], length)
                offset += len(pos)
                inputs, targets = block.make_views(batch, self.gen, train=True)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    preds = model(inputs)
                losses = torch.stack([t.loss(preds[t.name], targets[t.name], gather=True) for t in self.tasks])
                loss = (losses * weights).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
                # A non-finite step (one degenerate batch, a bf16 overflow) is skipped, as AMP's grad
                # scaler does, instead of poisoning every weight; DDP grads are all-reduced, so every
                # rank takes the same decision.  One host sync per step.
                if torch.isfinite(norm):
                    opt.step()
                    sums += losses.detach()
                else:
                    skipped += 1
                    _reset_poisoned_norm_stats(model)
                    if not skipped_ids:
                        skipped_ids = [str(m) for m in self.data.ids[pos]]
                sched.step()
            _sync(self.device)
            train_seconds = time.perf_counter() - t_epoch
            self.ddp.all_reduce_([sums])
            taken = len(batches) - skipped
            if skipped:
                self.log(f"block {block.number} epoch {epoch + 1}: skipped {skipped} of {len(batches)} steps with "
                         f"a non-finite gradient (first batch: {', '.join(skipped_ids[:8])}...)")
            if taken < 0.95 * len(batches):
                raise FloatingPointError(f"block {block.number}: {skipped} of {len(batches)} steps at epoch "
                                         f"{epoch + 1} had a non-finite gradient; try a lower --lr or --amp off")
            train_loss = (sums / max(1, taken * self.ddp.world)).tolist()
            t_eval = time.perf_counter()
            val = self._evaluate(_unwrap(model), self.parts["val"], metrics=False)["loss"]
            eval_seconds = time.perf_counter() - t_eval
            total = sum(t.weight * v for t, v in zip(self.tasks, train_loss))
            if not math.isfinite(total) or not math.isfinite(val["total"]):
                raise FloatingPointError(f"block {block.number}: loss is not finite at epoch {epoch + 1} "
                                         f"(train {total}, val {val['total']}); try a lower --lr")
            record = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0],
                      "train_loss": {**{t.name: v for t, v in zip(self.tasks, train_loss)}, "total": total},
                      "val_loss": val, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                      "steps": len(batches), "skipped_steps": skipped, "skipped_batch_ids": skipped_ids,
                      "samples": len(batches) * per_rank * self.ddp.world,
                      "samples_per_s": len(batches) * per_rank * self.ddp.world / max(train_seconds, 1e-9)}
            state["history"].append(record)
            state["epoch"] = epoch + 1
            improved = val["total"] < state["best_val"] - cfg.min_delta
            if improved:
                state.update(best_val=val["total"], best_epoch=epoch + 1, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience or state["epoch"] >= cfg.epochs:
                state["finished"] = True
            if self.ddp.main:
                if improved:
                    _atomic_save(self._checkpoint(model, {"epoch": epoch + 1, "val_loss": val["total"]}), best_path)
                _atomic_save(self._checkpoint(model, {
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "fingerprint": fp,
                    "rng": {"scheme": "re-seeded every epoch from (seed, epoch, rank)", "seed": cfg.seed},
                    **state}), last_path)
            self.ddp.barrier()
            bar.update(1)
            bar.set_postfix(train=f"{total:.4f}", val=f"{val['total']:.4f}", best=state["best_epoch"])
            self.log(f"block {block.number} epoch {epoch + 1}/{cfg.epochs}: train {total:.4f} val {val['total']:.4f} "
                     f"({train_seconds:.1f}s train, {record['samples_per_s']:.0f} samples/s, {eval_seconds:.1f}s val)"
                     + ("  *best*" if improved else ""))
            epochs_this_run += 1
            if cfg.stop_after_epochs and epochs_this_run >= cfg.stop_after_epochs and not state["finished"]:
                break
        bar.close()
        self.state = state
        return state

    # ----------------------------------------------------------------------------------
    def load_best(self):
        best_path = self.out_dir / "best.pt"
        self.ddp.barrier()
        ck = torch.load(best_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(ck["model"])
        return ck

    def evaluate_best(self) -> dict:
        ck = self.load_best()
        t = time.perf_counter()
        result = {"block": self.block.number, "name": self.block.name, "best_epoch": ck["epoch"],
                  "epochs_run": self.state["epoch"], "early_stopped": self.state["epoch"] < self.cfg.epochs,
                  "best_val_loss": ck["val_loss"]}
        for part in ("val", "test"):
            result[part] = self._evaluate(self.model, self.parts[part], metrics=True)
        result["tasks_beating_baseline"] = {
            part: {t.name: result[part][t.name]["beats_baseline"] for t in self.tasks} for part in ("val", "test")}
        self.timing["final_eval_seconds"] = time.perf_counter() - t
        return result

    def export(self) -> Path:
        from .export import embed_positions, save_embeddings

        t = time.perf_counter()
        positions = np.arange(len(self.data.ids))
        emb = embed_positions(self.block, self.model, self.dd, positions, self.cfg.export_batch_size)
        path = save_embeddings(self.out_dir / "embeddings.npz", self.data.ids, emb)
        self.timing["export_seconds"] = time.perf_counter() - t
        return path

    def close(self):
        if self.ddp.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def run_block(block: SSLBlock, cfg: TrainConfig, root=None, ssl_dir=None, exclude=(), exclude_source=None,
              log=print) -> dict:
    """Train, evaluate (val + test, best checkpoint, vs baselines) and export one block.

    Returns the metrics dict (also written to ``metrics.json``); ``{"status": "interrupted"}``
    when ``cfg.stop_after_epochs`` stopped the run early (resume by running again).
    """
    trainer = Trainer(block, cfg, root, ssl_dir, exclude, exclude_source, log)
    try:
        state = trainer.train()
        if not state["finished"]:
            return {"status": "interrupted", "epoch": state["epoch"], "out_dir": str(trainer.out_dir)}
        metrics = trainer.evaluate_best()
        if trainer.ddp.main and cfg.export:
            trainer.export()
        trainer.ddp.barrier()
        hist = state["history"]
        train_s = sum(h["train_seconds"] for h in hist)
        samples = sum(h["samples"] for h in hist)
        metrics["history"] = hist
        metrics["timing"] = {**trainer.timing,
                             "train_seconds": train_s, "eval_seconds": sum(h["eval_seconds"] for h in hist),
                             "mean_epoch_train_seconds": train_s / max(1, len(hist)),
                             "samples_per_s": samples / max(train_s, 1e-9),
                             "total_seconds": time.perf_counter() - trainer.t0,
                             "note": "history covers every epoch of this run directory (resumed runs included); "
                                     "total_seconds is this invocation only"}
        metrics["status"] = "finished"
        metrics["out_dir"] = str(trainer.out_dir)
        if trainer.ddp.main:
            _write_json(trainer.out_dir / "metrics.json", metrics)
        return metrics
    finally:
        trainer.close()
