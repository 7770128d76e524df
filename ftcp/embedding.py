"""Embed crystals with trained SSL encoders: ``ftcp.embed`` and ``python -m ftcp embed``.

    import ftcp
    x = ftcp.embed(structures, "Data/SSL")            # (N, 2048) float32, blocks 1..6 in layout order
    x = ftcp.embed(structures, "user/crys-rep-enrich-ssl")   # a published checkpoint repository

    python -m ftcp embed a.cif more_cifs/ table.csv --checkpoints Data/SSL --out emb.npz

A checkpoint directory is the SSL directory of a training run (or its published copy, see
``ftcp publish`` / ``ftcp fetch``): ``normalizer.json`` (the per-row min-max normaliser fitted on
SSL-train) and ``block<N>_<name>/best.pt`` for N = 1..6 (with ``config.json``).  Each encoder is
rebuilt from its checkpoint by ``ftcp.ssl.export.load_block_model`` (model settings and the fitted
input statistics are stored in ``best.pt``), and each block's inputs are built by the same code
as at training time (``ftcp.ssl.engine.load_block_fields`` on an in-memory source, then
``ftcp.ssl.export.embed_positions``).  So a crystal of the training store embeds to its row of
the assembled ``ssl_features.npy`` (up to float rounding from batching).  New crystals are
featurized with the structure-factor phase of the training store (``ssl_features.json``'s
``ftcp_phase``; ``linear`` when unrecorded).

A crystal FTCP cannot represent (disordered, more than 4 elements or 100 sites, Z > 100, an
unparsable CIF) raises ``ftcp.RejectedStructure`` naming the crystal and the reason; the command
line instead writes such inputs, with their reasons, to a rejects CSV and embeds the rest.
The block encoder definitions are the installed ``SSL_Training`` package (``Block*/encoder.py``), so
embedding works after ``pip install`` outside a checkout.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from . import layout as L
from .featurizer import PHASES, RejectedStructure, extract_crystals, featurize_crystal_list
from .io_utils import add_device_argument, read_json_if_exists
from .logs import progress_bar
from .normalize import RowMinMaxScaler
from .ssl.data import FEATURES_INFO, NORMALIZER_FILE, ArraySource, SSLData
from .store import parse_payload

DEFAULT_BATCH_SIZE = 256
_CACHE: dict = {}


class CheckpointError(FileNotFoundError):
    """A checkpoint directory is incomplete or does not match the FTCP layout."""


def resolve_checkpoints(checkpoints, endpoint: str | None = None, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a hub repository name (``user/repo``) fetched with ``ftcp.hub``."""
    text = str(checkpoints)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    looks_local = text.startswith(("/", ".", "~")) or text.count("/") != 1 or path.exists()
    if looks_local:
        raise CheckpointError(f"checkpoint directory {text} not found (give the SSL directory of a training run, "
                              "e.g. Data/SSL, or a hub repository name user/repo)")
    from .hub import fetch_checkpoints

    return fetch_checkpoints(text, revision=revision, endpoint=endpoint)


class Embedder:
    """The six block encoders of one checkpoint directory, ready to embed FTCP arrays."""

    def __init__(self, checkpoint_dir, device: str = "cpu"):
        import torch  # torch and the modules that need it load on first use: `import ftcp` stays light

        from .ssl.blocks import load_block
        from .ssl.export import load_block_model

        self.dir = Path(checkpoint_dir)
        self.device = torch.device(device)
        norm = self.dir / NORMALIZER_FILE
        if not norm.is_file():
            raise CheckpointError(f"{norm} not found: a checkpoint directory holds the normaliser fitted at training "
                                  "time (normalizer.json) and block<N>_<name>/best.pt for the six blocks")
        self.scaler = RowMinMaxScaler.load(norm)
        info = read_json_if_exists(self.dir / FEATURES_INFO) or {}
        self.phase = info.get("ftcp_phase") or "linear"
        self.blocks, self.models = [], []
        for spec in L.BLOCKS:
            block = load_block(spec.number)
            ckpt = self.dir / block.dirname / "best.pt"
            if not ckpt.is_file():
                raise CheckpointError(f"{ckpt} not found: the checkpoint directory must hold all six trained blocks")
            model = load_block_model(block, ckpt, self.device)
            if block.cfg["embed_dim"] != spec.embed_dim:
                raise CheckpointError(f"{ckpt}: block {spec.number} embeds to {block.cfg['embed_dim']} dims, the "
                                      f"2,048-d layout needs {spec.embed_dim}")
            self.blocks.append(block)
            self.models.append(model)

    def embed_ftcp(self, ftcp: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, ids=None) -> np.ndarray:
        """(N, 400, 63) FTCP (raw, as featurized) -> (N, 2048) float32 SSL features."""
        from .ssl.batches import DeviceData, load_block_fields  # torch
        from .ssl.export import embed_positions

        ftcp = np.asarray(ftcp, dtype=np.float32)
        if ftcp.ndim == 2:
            ftcp = ftcp[None]
        if len(ftcp) == 0:
            return np.zeros((0, L.SSL_DIM), dtype=np.float32)
        source = ArraySource(ftcp, ids, root=self.dir)
        data = SSLData(root=self.dir, ssl_dir=self.dir, source=source, split={}, index={}, scaler=self.scaler)
        out = np.empty((len(ftcp), L.SSL_DIM), dtype=np.float32)
        start = 0
        positions = np.arange(len(ftcp))
        for block, model in zip(self.blocks, self.models, strict=False):
            fields = load_block_fields(block, data, inference=True)
            dd = DeviceData(fields, block.lengths(fields), block.sequence_fields, self.device)
            emb = embed_positions(block, model, dd, positions, batch_size)
            out[:, start:start + emb.shape[1]] = emb
            start += emb.shape[1]
        return out

    def _phase(self, phase: str | None) -> str:
        if phase is None:
            return self.phase
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if phase != self.phase:
            raise ValueError(f"these encoders were trained on FTCP with phase {self.phase!r}; embedding with "
                             f"{phase!r} would give meaningless features")
        return phase


def load_embedder(checkpoint_dir, device: str = "cpu") -> Embedder:
    """An ``Embedder`` for a local directory, reused while its checkpoint files are unchanged."""
    d = Path(checkpoint_dir).resolve()
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(d.glob("block*/best.pt")))
    stamp += tuple((p.name, p.stat().st_mtime_ns) for p in (d / "normalizer.json", d / FEATURES_INFO) if p.exists())
    key = (str(d), str(device))
    hit = _CACHE.get(key)
    if hit is None or hit[0] != stamp:
        _CACHE.clear()          # one set of encoders at a time
        _CACHE[key] = (stamp, Embedder(d, device))
    return _CACHE[key][1]


def _as_crystals(structures) -> list:
    """Structures, or CIF files / CIF text, as extracted FTCP ``Crystal`` records.

    CIFs are parsed and checked by the store's own ``parse_payload``; anything FTCP cannot
    represent raises ``RejectedStructure`` naming the input's position and the reason.
    """
    from pymatgen.core import Structure

    if isinstance(structures, (Structure, str, Path)):
        structures = [structures]
    out = []
    for i, s in enumerate(structures):
        if isinstance(s, Structure):
            out.extend(extract_crystals([s], first_index=i))
            continue
        if not isinstance(s, (str, Path)):
            raise TypeError(f"structure {i}: expected a pymatgen Structure or a CIF file, got {type(s).__name__}")
        is_file = isinstance(s, Path) or (len(str(s)) < 4096 and "\n" not in str(s))
        if is_file and not Path(s).is_file():
            raise RejectedStructure("unparsable_cif", f"structure {i}: no such CIF file {s}")
        status, crystal_or_code, detail = parse_payload(("cif_file", str(s)) if is_file else ("cif", str(s)))
        if status != "ok":
            where = s if is_file else "CIF text"
            raise RejectedStructure(crystal_or_code, f"structure {i} ({where}): {detail}")
        out.append(crystal_or_code)
    return out


def embed(structures, checkpoint_dir, device: str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE,
          phase: str | None = None, endpoint: str | None = None, revision: str | None = None) -> np.ndarray:
    """SSL features (N, 2048) float32 of ``structures`` from the encoders in ``checkpoint_dir``.

    ``structures``: pymatgen ``Structure`` objects (or paths to CIF files), one or a sequence.
    ``checkpoint_dir``: a training run's SSL directory (``normalizer.json`` + six
    ``block<N>_<name>/best.pt``) or a hub repository name ``user/repo`` (fetched and verified by
    ``ftcp.hub.fetch_checkpoints``; ``endpoint``/``revision`` as there).  Columns are blocks 1..6
    in ``ftcp.layout`` order, exactly as the assembled ``ssl_features.npy``.

    Raises ``ftcp.RejectedStructure`` (a ``ValueError`` with ``.code``) naming the first crystal FTCP
    cannot represent and why (disordered, too_many_elements, too_many_sites, unsupported_element,
    unparsable_cif, ...); nothing is dropped silently.
    """
    crystals = _as_crystals(structures)
    embedder = load_embedder(resolve_checkpoints(checkpoint_dir, endpoint, revision), device)
    return embedder.embed_ftcp(featurize_crystal_list(crystals, phase=embedder._phase(phase)), batch_size)


# ---------------------------------------------------------------------------------------------
# command line
def collect_inputs(inputs, id_column: str = "material_id", cif_column: str = "cif") -> list[tuple[str, str, tuple]]:
    """[(material_id, where, (kind, payload))] from CIF files, folders of CIFs and CSVs (``cif`` column)."""
    import pandas as pd

    items = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.glob("*.cif"))
            if not files:
                raise FileNotFoundError(f"{path}: the folder holds no .cif files")
            items += [(f.stem, str(f), ("cif_file", str(f))) for f in files]
        elif path.is_file() and path.name.lower().endswith((".csv", ".csv.gz")):
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            if cif_column not in df.columns:
                raise ValueError(f"{path}: no {cif_column!r} column (columns: {list(df.columns)})")
            ids = (df[id_column].str.strip().tolist() if id_column in df.columns
                   else [f"{path.name}:{i}" for i in range(len(df))])
            items += [(m, f"{path}:row {i + 2}", ("cif", c))
                      for i, (m, c) in enumerate(zip(ids, df[cif_column], strict=False))]
        elif path.is_file():
            items.append((path.stem, str(path), ("cif_file", str(path))))
        else:
            raise FileNotFoundError(f"input {raw} not found (expected CIF files, folders of CIFs or a CSV with a "
                                    f"{cif_column!r} column)")
    return items


def embed_inputs(items, embedder: Embedder, batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True):
    """Parse, check, featurize and embed; returns (ids, embeddings, rejects [(id, where, code, detail)])."""
    ok_ids, crystals, rejects, seen = [], [], [], set()
    for material_id, where, task in progress_bar(items, progress, desc="parse CIFs", unit="crystal"):
        if not material_id:
            rejects.append((material_id, where, "missing_id", "empty material ID"))
            continue
        if material_id in seen:
            rejects.append((material_id, where, "duplicate_id", "material ID already used by an earlier input"))
            continue
        status, a, b = parse_payload(task)
        if status != "ok":
            rejects.append((material_id, where, a, b))
            continue
        seen.add(material_id)
        ok_ids.append(material_id)
        crystals.append(a)
    if not crystals:
        return np.array([], dtype=str), np.zeros((0, L.SSL_DIM), np.float32), rejects
    ftcp = featurize_crystal_list(crystals, phase=embedder.phase)
    return np.array(ok_ids, dtype=str), embedder.embed_ftcp(ftcp, batch_size, ids=ok_ids), rejects


def write_embeddings(path: Path, ids: np.ndarray, emb: np.ndarray, meta: dict) -> list[Path]:
    """``.npz`` (material_id, embedding, meta), ``.npy`` (+ ``<stem>.material_ids.txt``) or ``.csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith(".npz"):
        np.savez(path, material_id=ids, embedding=emb, meta=np.array(json.dumps(meta)))
        return [path]
    if name.endswith(".npy"):
        np.save(path, emb)
        side = path.with_name(path.name[:-4] + ".material_ids.txt")
        side.write_text("".join(f"{m}\n" for m in ids), encoding="utf-8")
        return [path, side]
    if name.endswith(".csv"):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["material_id"] + [f"ssl_{j}" for j in range(emb.shape[1])])
            for m, row in zip(ids, emb, strict=False):
                w.writerow([m] + [repr(float(v)) for v in row])
        return [path]
    raise ValueError(f"--out {path}: use a .npz, .npy or .csv file name")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="2,048-d SSL features of crystals from trained encoders (CIFs, folders, CSV)",
        description="Embed crystals with the six trained SSL block encoders of a checkpoint directory (a training "
                    "run's SSL directory) or a published hub repository (user/repo). Inputs: CIF files, folders of "
                    "*.cif (ID = file stem), or CSVs with a 'cif' column (and optionally 'material_id'). Crystals "
                    "FTCP cannot represent are listed with their reasons in a rejects CSV; the rest are embedded.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="CIF file, folder of CIF files, or CSV with a cif column")
    p.add_argument("--checkpoints", required=True, metavar="DIR_OR_REPO",
                   help="SSL checkpoint directory (normalizer.json + block<N>_*/best.pt) or hub repository user/repo")
    p.add_argument("--out", metavar="FILE", required=True, help="output .npz (material_id + embedding), .npy or .csv")
    p.add_argument("--rejects", metavar="FILE", default=None, help="rejects CSV (default: <out stem>.rejects.csv)")
    add_device_argument(p)
    p.add_argument("--batch-size", metavar="N", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"crystals per embedding batch (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--id-column", metavar="COLUMN", default="material_id",
                   help="CSV column with IDs (default material_id)")
    p.add_argument("--cif-column", metavar="COLUMN", default="cif", help="CSV column with CIF text (default cif)")
    p.add_argument("--endpoint", metavar="URL", default=None,
                   help="hub URL for a repository name (default $HF_ENDPOINT)")
    p.add_argument("--revision", metavar="REV", default=None, help="hub branch, tag or commit")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it shows only on a terminal anyway)")
    p.set_defaults(func=_cli_embed)


def _rejects_path(out: Path) -> Path:
    name = out.name
    for suffix in (".npz", ".npy", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return out.with_name(name + ".rejects.csv")


def _cli_embed(args) -> int:
    from .hub import HubError
    from .runtime import resolve_device

    out = Path(args.out)
    if not out.name.lower().endswith((".npz", ".npy", ".csv")):
        raise ValueError(f"--out {out}: use a .npz, .npy or .csv file name")
    device = resolve_device(args.device)
    try:
        ckpt = resolve_checkpoints(args.checkpoints, args.endpoint, args.revision)
    except HubError as exc:
        raise ValueError(str(exc)) from None
    items = collect_inputs(args.inputs, args.id_column, args.cif_column)
    embedder = load_embedder(ckpt, device)
    ids, emb, rejects = embed_inputs(items, embedder, args.batch_size, progress=args.progress)
    rej_path = Path(args.rejects) if args.rejects else _rejects_path(out)
    if rejects:
        rej_path.parent.mkdir(parents=True, exist_ok=True)
        with open(rej_path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["material_id", "input", "reason", "detail"])
            w.writerows(rejects)
    elif rej_path.exists():
        rej_path.unlink()          # a stale list from an earlier run would mislead
    if len(ids) == 0:
        raise ValueError(f"none of the {len(items)} inputs could be embedded; reasons in {rej_path}")
    meta = {"checkpoints": str(args.checkpoints), "checkpoint_dir": str(ckpt), "phase": embedder.phase,
            "dims": int(emb.shape[1]), "blocks": [{"number": b.number, "name": b.name, "dim": b.embed_dim}
                                                  for b in L.BLOCKS], "n_rejected": len(rejects)}
    written = write_embeddings(out, ids, emb, meta)
    print(f"embedded {len(ids)} crystal(s) -> {', '.join(map(str, written))} ({emb.shape[1]} dims)")
    if rejects:
        counts: dict[str, int] = {}
        for r in rejects:
            counts[r[2]] = counts.get(r[2], 0) + 1
        print(f"rejected {len(rejects)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + f" (reasons per input: {rej_path})")
    return 0


__all__ = ["embed", "Embedder", "load_embedder", "resolve_checkpoints", "collect_inputs", "embed_inputs",
           "CheckpointError", "register_cli"]
