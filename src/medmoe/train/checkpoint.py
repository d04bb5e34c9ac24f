"""Resumable checkpoints: safetensors + JSON only, never pickle (the run folder's layout: ``runs.py``).

    RUN/checkpoints/step-000200/model/         MedMoE.save_pretrained (config.json, model.safetensors, tokenizer/)
    RUN/checkpoints/step-000200/optimizer.safetensors   AdamW moment tensors
    RUN/checkpoints/step-000200/trainer.json   step, optimizer hyper-parameters, scheduler, data position
    RUN/checkpoints/latest                     name of the newest complete checkpoint

A checkpoint is written under a temporary name and renamed when complete, then ``latest`` is
replaced atomically, so a run killed at any instant (even ``kill -9``) leaves a usable one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..runs import checkpoints_dir, set_latest


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """AdamW state as flat tensors + JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors = {f"state.{pid}.{name}": value.detach().cpu().contiguous()
               for pid, entry in state["state"].items() for name, value in entry.items()}
    return tensors, {"param_groups": state["param_groups"]}


def save_checkpoint(run: Path, step: int, model, optimizer, scheduler, meta: dict, keep: int = 2) -> Path:
    from safetensors.torch import save_file

    root = checkpoints_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    model.save_pretrained(tmp / "model")
    tensors, groups = _optimizer_tensors(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "trainer.json").write_text(json.dumps(
        {"step": step, "optimizer": groups, "scheduler": scheduler.state_dict(), **meta}, indent=2, default=str))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    set_latest(run, name)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, optimizer, scheduler) -> dict:
    """Restore optimizer and scheduler in place (the model: ``MedMoE.from_pretrained(path /
    "model")``); returns trainer.json."""
    from safetensors.torch import load_file

    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(path / "optimizer.safetensors")
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return meta
