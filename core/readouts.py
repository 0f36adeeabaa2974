"""A run's modules in a few MB: the milestone checkpoints and every mask's read-out, bit-packed,
for committing beside the small results of a reference run (``results/<profile>/modules/``), so
a reviewer can load a module without training.

    python -m core.readouts export --params params.yaml --train data/train --masks data/masks \\
        --out results/default/modules
    python -m core.readouts show results/default/modules/net0/scl_80.pt

Writes, per network ``k`` and checkpoint ``c``:

- ``net<k>/<c>.ckpt.pt``: a copy of ``data/train/net<k>/<c>.pt`` (the network the masks were
  trained on; its sha256 is the one ``training.nc`` records);
- ``net<k>/<c>.pt``: a ``torch.save`` dict (plain types and uint8 tensors: loadable with
  ``weights_only=True``): ``format``, ``network``, ``checkpoint``, ``arch``, ``image_size``,
  ``model_fingerprint``, ``names``, ``shapes`` (the masked parameters in model order) and
  ``masks``: per mask file stem (``<set>-a<alpha>-s<seed>``) its ``family``, ``task``,
  ``alpha``, ``seed``, ``converged``, ``density`` (fraction kept), ``accuracy`` and ``bits``:
  :func:`numpy.packbits` of the read-out mask of all parameters concatenated (1 bit a weight).

:func:`load_module` turns one entry back into ``{parameter name: bool tensor}``, the layout of a
mask file's ``mask``. Bytes depend only on the inputs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.config import ConfigError, load
from core.formats.masks import MaskError, load_mask, mask_flat
from core.io import atomic_torch_save, file_sha256, torch_load

FORMAT = "modules-avr-readouts/1"
SHARED = ("arch", "image_size", "model_fingerprint", "names", "shapes")


class ReadoutError(ValueError):
    """A missing or inconsistent input or read-out file; the message names the file."""


def pack(masks: list[Path], network: int, checkpoint: str) -> dict[str, Any]:
    """The read-out record of one network's masks at one checkpoint."""
    out: dict[str, Any] = {"format": FORMAT, "network": network, "checkpoint": checkpoint,
                           "masks": {}}
    for path in masks:
        try:
            rec = load_mask(path)
        except MaskError as err:
            raise ReadoutError(str(err)) from None
        for key in SHARED:
            if key not in out:
                out[key] = rec[key]
            elif out[key] != rec[key]:
                raise ReadoutError(f"{path}: {key} differs from the other masks of "
                                   f"net{network}/{checkpoint}")
        flat = mask_flat(rec)
        out["masks"][path.stem] = {
            "family": rec["family"], "task": rec["task"], "alpha": float(rec["alpha"]),
            "seed": int(rec["seed"]), "converged": bool(rec["converged"]),
            "density": float(flat.mean()), "accuracy": dict(rec["accuracy"]),
            "bits": torch.from_numpy(np.packbits(flat))}
    return out


def export(params: str | Path, train: str | Path, masks: str | Path, out: str | Path
           ) -> list[Path]:
    """Every checkpoint with masks and its read-outs, for the networks of ``params``."""
    cfg = load(params)
    train, masks, out = Path(train), Path(masks), Path(out)
    written = []
    for net in cfg.train.networks:
        for ck in cfg.checkpoints:
            files = sorted((masks / f"net{net}" / ck).glob("*.pt"))
            if not files:
                continue
            ckpt = train / f"net{net}" / f"{ck}.pt"
            if not ckpt.is_file():
                raise ReadoutError(f"{ckpt}: file not found (the checkpoint the masks of "
                                   f"{masks / f'net{net}' / ck} were trained on)")
            dest = out / f"net{net}"
            dest.mkdir(parents=True, exist_ok=True)
            tmp = dest / f".tmp-{ck}.ckpt.pt"
            shutil.copyfile(ckpt, tmp)
            written.append(tmp.replace(dest / f"{ck}.ckpt.pt"))
            written.append(atomic_torch_save(pack(files, net, ck), dest / f"{ck}.pt"))
    if not written:
        raise ReadoutError(f"{masks}: no mask files of networks {list(cfg.train.networks)}")
    return written


def load_module(path: str | Path, stem: str) -> dict[str, torch.Tensor]:
    """The read-out mask ``stem`` of the read-out file ``path``: parameter name -> bool tensor."""
    rec = torch_load(path, "a read-out file of core.readouts", ReadoutError)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise ReadoutError(f"{path}: not a read-out file (expected format {FORMAT})")
    if stem not in rec["masks"]:
        raise ReadoutError(f"{path}: no mask {stem!r} (there: {', '.join(rec['masks'])})")
    sizes = [int(np.prod(s)) for s in rec["shapes"]]
    flat = np.unpackbits(rec["masks"][stem]["bits"].numpy(), count=sum(sizes)).astype(bool)
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return {n: torch.from_numpy(p.reshape(s).copy())
            for n, p, s in zip(rec["names"], parts, rec["shapes"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.readouts", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="checkpoints and bit-packed mask read-outs of a run")
    e.add_argument("--params", default="params.yaml")
    e.add_argument("--train", default="data/train")
    e.add_argument("--masks", default="data/masks")
    e.add_argument("--out", required=True, help="e.g. results/default/modules")
    s = sub.add_parser("show", help="list the masks of a read-out file")
    s.add_argument("path")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "export":
            paths = export(args.params, args.train, args.masks, args.out)
            size = sum(p.stat().st_size for p in paths)
            print(f"{args.out}: {len(paths)} files, {size / 1e6:.1f} MB")
        else:
            rec = torch_load(args.path, "a read-out file of core.readouts", ReadoutError)
            print(f"{args.path}: network {rec['network']}, {rec['checkpoint']}, "
                  f"{len(rec['names'])} parameters (sha256 {file_sha256(args.path)[:12]})")
            for stem, m in rec["masks"].items():
                print(f"  {stem}: {m['family']}, density {100 * m['density']:.2f}%, "
                      f"converged {m['converged']}, task accuracy {m['accuracy']['task']:.1f}%")
    except (ReadoutError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
