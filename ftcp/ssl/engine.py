"""One training engine for every SSL block: GPU-first, DDP-ready, resumable, deterministic on CPU.

What a run does (``run_block``):

1. Opens the data root and its prepared SSL split and normaliser (the stored split is the
   authority: its exclusion, if any, is the run's); reads the block's FTCP regions once
   (memory-mapped store -> numpy -> one tensor per field on the device when it fits, else in
   host memory).
2. Fits the block's input statistics and every task's baseline (and regression target
   scaling) on SSL-train, with the fixed evaluation masks.
3. Trains with fused AdamW + warm-up/cosine schedule (per step) + gradient clipping, bf16
   autocast on CUDA, batches as index slices of the device tensors, masks and views drawn on
   the device from a generator re-seeded every epoch from (seed, epoch, rank).  A step never
   waits for the device (``ftcp.ssl.steps``): non-finite steps are skipped on the device and
   the epoch's losses are read once per epoch; on one GPU the step is replayed from CUDA graphs.
4. After every epoch: validation loss (fixed masks), early stopping, ``best.pt`` (a real copy,
   written on improvement) and ``last.pt`` (everything needed to resume); optionally a label
   probe of the embeddings on SSL-train crystals (``ftcp.ssl.probe``; never used for training).
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

import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..io_utils import atomic_write_json, resolve_data_root, to_jsonable
from ..logs import progress_bar
from ..runtime import derived_seed, resolve_device, seed_everything, synchronize
from . import data as D
from .batches import DeviceData, eval_batches, load_block_fields, train_batches
from .block import SSLBlock
from .config import TrainConfig
from .export import embed_positions, load_checkpoint, save_embeddings
from .probe import LabelProbe
from .steps import TrainStep, make_optimizer, set_lr

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
EVAL_SEED = 20240611
#: settings that must match to resume from last.pt
_RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "grad_clip", "warmup_epochs", "seed", "split_seed",
                "max_samples", "bucket", "amp", "eval_batch_size")


# ------------------------------------------------------------------------------------------
# distributed helpers
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


def device_kind(name: str) -> str:
    return "cuda" if (name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())) else "cpu"


# ------------------------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _atomic_save(obj, path: Path):
    tmp = Path(str(path) + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _state_to_cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


# ------------------------------------------------------------------------------------------
class Trainer:
    """Holds one block run; ``run_block`` is the usual entry point."""

    def __init__(self, block: SSLBlock, cfg: TrainConfig, root=None, ssl_dir=None, exclude=None, exclude_source=None):
        self.block, self.cfg = block, cfg
        self.t0 = time.perf_counter()
        self.ddp = setup_distributed(device_kind(cfg.device))
        self.device = resolve_device(cfg.device, self.ddp.local_rank)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp = (cfg.amp == "bf16") or (cfg.amp == "auto" and self.device.type == "cuda")
        seed_everything(cfg.seed)

        # -- data ------------------------------------------------------------------------
        t = time.perf_counter()
        root = resolve_data_root(root)
        ssl_dir = Path(ssl_dir) if ssl_dir is not None else root / "SSL"
        if self.ddp.main:
            self.data = D.prepare(root, ssl_dir, cfg.split_seed, exclude, exclude_source, create=True)
        self.ddp.barrier()
        if not self.ddp.main:
            self.data = D.prepare(root, ssl_dir, cfg.split_seed, exclude, exclude_source, create=False)
        cfg.split_seed = int(self.data.split["seed"])      # the stored split decides
        self.out_dir = ssl_dir / block.dirname
        if self.ddp.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        # the configuration decides which fields the optional objectives need: set it first
        self.model_cfg = block.model_config(cfg.model, cfg.embed_dim)
        block.configure(self.model_cfg)
        fields = load_block_fields(block, self.data)
        self.dd = DeviceData(fields, block.lengths(fields), block.sequence_fields, self.device)
        del fields
        self.parts = self._parts()
        self.timing = {"load_seconds": time.perf_counter() - t}

        # -- statistics, model, tasks --------------------------------------------------------
        t = time.perf_counter()
        block.stats = block.fit_stats(self.dd.subset(self.parts["train"]))
        torch.manual_seed(cfg.seed)
        self.model = block.create_model(self.model_cfg).to(self.device)
        self.tasks = block.tasks
        self.gen = torch.Generator(device=self.device)
        self._fit_baselines()
        self.timing["baseline_seconds"] = time.perf_counter() - t
        self.probe = None
        if cfg.probe_every:
            self.probe = LabelProbe.for_run(self.data, self.parts["train"], cfg.probe_size, cfg.split_seed)

    # ----------------------------------------------------------------------------------
    def log(self, msg: str, *args):
        if self.ddp.main:
            log.info(msg, *args)

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

    def _fixed_view_batches(self, positions):
        """(batch, inputs, targets) with the fixed evaluation masks (this rank's share)."""
        for b, (pos, length) in enumerate(eval_batches(positions, self.cfg.eval_batch_size, self.dd)):
            if b % self.ddp.world != self.ddp.rank:
                continue
            self.gen.manual_seed(EVAL_SEED + b)
            batch = self.dd.gather(torch.as_tensor(pos), length)
            inputs, targets = self.block.views(batch, self.gen, train=False)
            yield pos, inputs, targets

    def _fit_baselines(self):
        states = [t.fit_init(self.device) for t in self.tasks]
        with torch.no_grad():
            for _, _, targets in self._fixed_view_batches(self.parts["train"]):
                for task, st in zip(self.tasks, states, strict=False):
                    task.fit_update(st, targets[task.name])
        for task, st in zip(self.tasks, states, strict=False):
            self.ddp.all_reduce_([st[k] for k in sorted(st)])
            task.fit_finish(st)

    # ----------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        cfg = asdict(self.cfg)
        fp = {k: cfg[k] for k in _RESUME_KEYS}
        fp.update(block=self.block.number, model=self.model_cfg, world_size=self.ddp.world,
                  train_ids=D.ids_digest(self.data.ids[self.parts["train"]]))
        return to_jsonable(fp)

    def config_record(self) -> dict:
        device_name = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                       else platform.processor() or platform.machine())
        split = self.data.split
        return {"block": {"number": self.block.number, "name": self.block.name,
                          "embed_dim": self.model_cfg["embed_dim"],
                          "fields": [asdict(f) for f in self.block.fields],
                          "tasks": [{"name": t.name, "kind": type(t).__name__, "weight": t.weight,
                                     "metric": t.metric, "higher_is_better": t.higher_is_better} for t in self.tasks]},
                "model": self.model_cfg, "train": asdict(self.cfg),
                "global_batch_size": self._per_rank_batch() * self.ddp.world,
                "world_size": self.ddp.world, "device": str(self.device), "device_name": device_name,
                "amp_bf16": self.amp, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "source": self.data.source.kind,
                "n_materials": int(len(self.data.ids)), "parts": {p: int(len(v)) for p, v in self.parts.items()},
                "split": D.split_summary(split),
                "field_bytes": int(self.dd.nbytes), "fields_on": str(self.dd.store),
                "block_stats": {k: v.detach().cpu().tolist() for k, v in self.block.stats.items()},
                "created_utc": D.utc_now()}

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
            for pos, inputs, targets in self._fixed_view_batches(positions):
                preds = model(inputs)
                for k, task in enumerate(self.tasks):
                    loss_sum[k] += task.loss(preds[task.name], targets[task.name], gather=False).double() * len(pos)
                    if metrics:
                        task.eval_update(states[k], preds[task.name], targets[task.name])
                count += len(pos)
        self.ddp.all_reduce_([loss_sum, count])
        losses = (loss_sum / count.clamp_min(1)).tolist()
        out = {"loss": {t.name: v for t, v in zip(self.tasks, losses, strict=False)}}
        out["loss"]["total"] = sum(t.weight * v for t, v in zip(self.tasks, losses, strict=False))
        if metrics:
            for task, st in zip(self.tasks, states, strict=False):
                self.ddp.all_reduce_([st[k] for k in sorted(st)])
                out[task.name] = task.eval_finish(st)
        return out

    def _run_probe(self, epoch: int) -> dict | None:
        if self.probe is None or not self.ddp.main:
            return None
        result = self.probe.run(self.block, _unwrap(self.model), self.dd, self.cfg.export_batch_size)
        result["epoch"] = epoch
        self.log("block %d probe after epoch %d: %s", self.block.number, epoch, self.probe.summary(result))
        return result

    # ----------------------------------------------------------------------------------
    def _optimizer(self, graphs: bool):
        opt = make_optimizer(self.model, self.cfg.lr, self.cfg.weight_decay, self.device, capturable=graphs)
        return opt

    def _resume(self, opt, graphs: bool) -> dict:
        """The run state: fresh, or restored from ``last.pt`` (refused if its settings differ)."""
        last_path = self.out_dir / "last.pt"
        state = {"epoch": 0, "step": 0, "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [],
                 "probes": [], "finished": False}
        fp = self.fingerprint()
        if last_path.exists() and self.cfg.resume:
            ck = load_checkpoint(last_path, self.device)
            if ck.get("fingerprint") != fp:
                saved = ck.get("fingerprint", {})
                diff = sorted(k for k in set(fp) | set(saved) if fp.get(k) != saved.get(k))
                raise ValueError(f"{last_path} belongs to a run with other settings ({', '.join(diff)}); "
                                 f"pass --restart to start over, or use another --out")
            self.model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            for group in opt.param_groups:    # a fresh device tensor: what the step's set_lr fills
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
                group["capturable"] = graphs
            # task baselines / target scales are refitted in __init__: deterministic from the data and masks
            state.update({k: ck[k] for k in state if k in ck})
            if "step" not in ck:                      # a checkpoint from the LambdaLR era
                state["step"] = int(ck.get("scheduler", {}).get("last_epoch", 0))
            self.log("resumed %s from %s after epoch %d%s", self.block.dirname, last_path, state["epoch"],
                     " (finished)" if state["finished"] else "")
        elif self.ddp.main:
            atomic_write_json(self.out_dir / "config.json", to_jsonable(self.config_record()))
            for p in (self.out_dir / "best.pt", self.out_dir / "metrics.json", self.out_dir / "embeddings.npz"):
                p.unlink(missing_ok=True)
        return state

    def _wrap(self, graphs: bool):
        model = self.model
        if self.ddp.world > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.block.ddp_find_unused_parameters)
        if self.cfg.compile:
            import torch._dynamo as dynamo

            dynamo.config.cache_size_limit = max(64, dynamo.config.cache_size_limit)
            model = torch.compile(model)
        return model

    def _train_epoch(self, epoch: int, model, step: TrainStep, state: dict, per_rank: int, show: bool):
        """One epoch of steps; returns (batches, train seconds)."""
        cfg = self.cfg
        torch.manual_seed(derived_seed(cfg.seed, epoch, self.ddp.rank, 1))      # dropout etc.
        self.gen.manual_seed(derived_seed(cfg.seed, epoch, self.ddp.rank, 2))   # masks and views
        rng = np.random.default_rng(derived_seed(cfg.seed, epoch, 3))           # same on every rank
        batches = train_batches(self.parts["train"], per_rank, self.ddp.world, self.ddp.rank, rng, self.dd, cfg.bucket)
        order = torch.from_numpy(np.concatenate([p for p, _ in batches])).to(self.dd.store)
        model.train()
        step.new_epoch()
        synchronize(self.device)
        t_epoch = time.perf_counter()
        offset = 0
        for pos, length in progress_bar(batches, show, desc=f"epoch {epoch + 1}", leave=False,
                                        dynamic_ncols=True, mininterval=1.0):
            batch = self.dd.gather(order[offset:offset + len(pos)], length)
            offset += len(pos)
            inputs, targets = self.block.views(batch, self.gen, train=True)
            set_lr(step.opt, cfg.lr * lr_factor(state["step"], self.total_steps, self.warmup_steps))
            step(inputs, targets)
            state["step"] += 1
        synchronize(self.device)
        return batches, time.perf_counter() - t_epoch

    def _epoch_record(self, epoch, batches, train_seconds, step: TrainStep, per_rank: int) -> dict:
        """Read the epoch's device sums once, validate, and make the history record."""
        self.ddp.all_reduce_([step.sums])                 # every rank skips the same steps (grads are reduced)
        sums, skipped, flags = step.read(len(batches))
        taken = len(batches) - skipped
        skipped_ids = []
        if flags.any():
            first = int(np.flatnonzero(flags)[0])
            skipped_ids = [str(m) for m in self.data.ids[batches[first][0]]]
            self.log("block %d epoch %d: skipped %d of %d steps with a non-finite gradient (first batch: %s...)",
                     self.block.number, epoch + 1, skipped, len(batches), ", ".join(skipped_ids[:8]))
        if taken < 0.95 * len(batches):
            raise FloatingPointError(f"block {self.block.number}: {skipped} of {len(batches)} steps at epoch "
                                     f"{epoch + 1} had a non-finite gradient; try a lower --lr or --amp off")
        train_loss = [v / max(1, taken * self.ddp.world) for v in sums]
        t_eval = time.perf_counter()
        val = self._evaluate(_unwrap(self.model), self.parts["val"], metrics=False)["loss"]
        eval_seconds = time.perf_counter() - t_eval
        total = sum(t.weight * v for t, v in zip(self.tasks, train_loss, strict=False))
        if not math.isfinite(total) or not math.isfinite(val["total"]):
            raise FloatingPointError(f"block {self.block.number}: loss is not finite at epoch {epoch + 1} "
                                     f"(train {total}, val {val['total']}); try a lower --lr")
        samples = len(batches) * per_rank * self.ddp.world
        losses = {t.name: v for t, v in zip(self.tasks, train_loss, strict=False)}
        return {"epoch": epoch + 1, "train_loss": {**losses, "total": total},
                "val_loss": val, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                "steps": len(batches), "skipped_steps": skipped, "skipped_batch_ids": skipped_ids,
                "samples": samples, "samples_per_s": samples / max(train_seconds, 1e-9)}

    def _save(self, model, opt, state: dict, improved: bool, epoch: int, val_total: float):
        if not self.ddp.main:
            return
        if improved:
            _atomic_save(self._checkpoint(model, {"epoch": epoch + 1, "val_loss": val_total}), self.out_dir / "best.pt")
        _atomic_save(self._checkpoint(model, {
            "optimizer": opt.state_dict(), "fingerprint": self.fingerprint(),
            "rng": {"scheme": "re-seeded every epoch from (seed, epoch, rank)", "seed": self.cfg.seed},
            **state}), self.out_dir / "last.pt")

    def train(self) -> dict:
        cfg, block = self.cfg, self.block
        per_rank = self._per_rank_batch()
        steps_per_epoch = len(self.parts["train"]) // (per_rank * self.ddp.world)
        self.total_steps = max(1, steps_per_epoch * cfg.epochs)
        self.warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
        graphs = (cfg.cuda_graphs and self.device.type == "cuda" and self.ddp.world == 1 and not cfg.compile)
        opt = self._optimizer(graphs)
        state = self._resume(opt, graphs)
        model = self._wrap(graphs)
        step = TrainStep(model, self.tasks, opt, cfg.grad_clip, self.amp, self.device, steps_per_epoch, graphs)
        if self.probe is not None and state["epoch"] == 0 and not state["probes"]:
            state["probes"].append(self._run_probe(0))           # the random-init control, same run
        show = cfg.progress and self.ddp.main
        epochs_this_run = 0
        bar = progress_bar(None, show, total=cfg.epochs, initial=state["epoch"],
                           desc=f"block {block.number} {block.name}", unit="epoch", dynamic_ncols=True)
        while not state["finished"] and state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            batches, train_seconds = self._train_epoch(epoch, model, step, state, per_rank, show)
            record = self._epoch_record(epoch, batches, train_seconds, step, per_rank)
            record["lr"] = cfg.lr * lr_factor(state["step"] - 1, self.total_steps, self.warmup_steps)
            record["step_engine"] = step.stats()
            state["history"].append(record)
            state["epoch"] = epoch + 1
            val_total = record["val_loss"]["total"]
            improved = val_total < state["best_val"] - cfg.min_delta
            if improved:
                state.update(best_val=val_total, best_epoch=epoch + 1, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience or state["epoch"] >= cfg.epochs:
                state["finished"] = True
            if self.probe is not None and (state["epoch"] % cfg.probe_every == 0 or state["finished"]):
                state["probes"].append(self._run_probe(state["epoch"]))
            self._save(model, opt, state, improved, epoch, val_total)
            self.ddp.barrier()
            bar.update(1)
            bar.set_postfix(train=f"{record['train_loss']['total']:.4f}", val=f"{val_total:.4f}",
                            best=state["best_epoch"])
            self.log("block %d epoch %d/%d: train %.4f val %.4f (%.1fs train, %.0f samples/s, %.1fs val)%s",
                     block.number, epoch + 1, cfg.epochs, record["train_loss"]["total"], val_total, train_seconds,
                     record["samples_per_s"], record["eval_seconds"], "  *best*" if improved else "")
            epochs_this_run += 1
            if cfg.stop_after_epochs and epochs_this_run >= cfg.stop_after_epochs and not state["finished"]:
                break
        bar.close()
        self.state = state
        self.step_stats = step.stats()
        return state

    # ----------------------------------------------------------------------------------
    def load_best(self):
        best_path = self.out_dir / "best.pt"
        self.ddp.barrier()
        ck = load_checkpoint(best_path, self.device)
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

    def export(self, path: Path | None = None) -> Path:
        """Embeddings of every material from the clean input with the current weights."""

        t = time.perf_counter()
        positions = np.arange(len(self.data.ids))
        emb = embed_positions(self.block, self.model, self.dd, positions, self.cfg.export_batch_size)
        path = save_embeddings(path or self.out_dir / "embeddings.npz", self.data.ids, emb)
        self.timing["export_seconds"] = time.perf_counter() - t
        return path

    def close(self):
        if self.ddp.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def run_block(block: SSLBlock, cfg: TrainConfig, root=None, ssl_dir=None, exclude=None, exclude_source=None) -> dict:
    """Train, evaluate (val + test, best checkpoint, vs baselines) and export one block.

    ``exclude``: IDs to leave out of a *new* SSL split (None: use the stored split, or make a
    transductive one).  Returns the metrics dict (also written to ``metrics.json``);
    ``{"status": "interrupted"}`` when ``cfg.stop_after_epochs`` stopped the run early (resume
    by running again).
    """
    trainer = Trainer(block, cfg, root, ssl_dir, exclude, exclude_source)
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
        metrics["probes"] = [p for p in state.get("probes", []) if p]
        metrics["split"] = D.split_summary(trainer.data.split)
        metrics["timing"] = {**trainer.timing,
                             "train_seconds": train_s, "eval_seconds": sum(h["eval_seconds"] for h in hist),
                             "mean_epoch_train_seconds": train_s / max(1, len(hist)),
                             "samples_per_s": samples / max(train_s, 1e-9),
                             "total_seconds": time.perf_counter() - trainer.t0,
                             "step_engine": trainer.step_stats,
                             "note": "history covers every epoch of this run directory (resumed runs included); "
                                     "total_seconds is this invocation only"}
        metrics["status"] = "finished"
        metrics["out_dir"] = str(trainer.out_dir)
        if trainer.ddp.main:
            atomic_write_json(trainer.out_dir / "metrics.json", to_jsonable(metrics))
        return metrics
    finally:
        trainer.close()


def export_initial(block: SSLBlock, cfg: TrainConfig, root=None, ssl_dir=None, out_dir: Path | None = None) -> Path:
    """The random-init control: the block's encoder with its *initial* weights (seed ``cfg.seed``,
    no SSL training), input statistics fitted on SSL-train as in a real run, exported like a
    trained block into ``out_dir/<block>/embeddings.npz`` with a ``config.json`` that says so."""
    trainer = Trainer(block, cfg, root, ssl_dir)
    try:
        out = Path(out_dir) / block.dirname
        out.mkdir(parents=True, exist_ok=True)
        record = trainer.config_record()
        record["init"] = "random (no SSL training)"
        atomic_write_json(out / "config.json", to_jsonable(record))
        return trainer.export(out / "embeddings.npz")
    finally:
        trainer.close()
