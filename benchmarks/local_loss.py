"""Benchmark the batched local (word-region) contrastive loss.

Default: forward+backward time of ``medmoe.losses.local_contrastive_loss`` against a
per-report loop in the style of GLoRIA's ``local_loss`` at B=32, N=25, G=16, D=128,
float32 (median of ``--repeats`` runs after a warm-up); prints one JSON object with both
medians and ``ratio`` = loop / vectorised.

``--memory``: ONE forward+backward at B=128, N=32, G=56, D=768 (float32) in a fresh
subprocess; prints one JSON object with its peak RSS (``ru_maxrss``) in GB and seconds.

Run: ``PYTHONPATH=src python benchmarks/local_loss.py [--memory]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from medmoe.losses import local_contrastive_loss


def loop_local_loss(regions, words, lengths, temp1=4.0, temp2=5.0, temp3=10.0, agg="sum"):
    """GLoRIA-style loop: one report at a time against every image (gloria_loss.local_loss)."""
    b, d, h, w = regions.shape
    ctx = regions.reshape(b, d, h * w)
    sims = []
    for i in range(b):
        n = int(lengths[i])
        word = words[i, :n].t().unsqueeze(0).expand(b, d, n)  # [B, D, n]
        attn = torch.bmm(ctx.transpose(1, 2), word)  # [B, S, n]
        attn = torch.softmax(attn, dim=-1).transpose(1, 2)  # over words
        attn = torch.softmax(attn * temp1, dim=-1)  # over regions, [B, n, S]
        wei = torch.bmm(ctx, attn.transpose(1, 2))  # [B, D, n]
        num = (word * wei).sum(1)
        cos = num / (word.norm(dim=1) * wei.norm(dim=1)).clamp(min=1e-8)
        row = (cos * temp2).exp()
        row = row.sum(1, keepdim=True) if agg == "sum" else row.mean(1, keepdim=True)
        sims.append(row.log())
    sims = torch.cat(sims, 1) * temp3
    labels = torch.arange(b)
    return F.cross_entropy(sims, labels), F.cross_entropy(sims.t(), labels)


def make_inputs(b, n, g, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    regions = torch.randn(b, d, g, g, generator=gen)
    words = torch.randn(b, n, d, generator=gen)
    lengths = torch.randint(max(1, n // 3), n + 1, (b,), generator=gen)
    lengths[0] = n
    return regions, words, lengths


def fwd_bwd(fn, regions, words, lengths):
    r = regions.clone().requires_grad_(True)
    w = words.clone().requires_grad_(True)
    t0 = time.perf_counter()
    out = fn(r, w, lengths)
    (out[0] + out[1]).backward()
    return time.perf_counter() - t0, (out[0] + out[1]).item()


def speed(args):
    regions, words, lengths = make_inputs(args.batch, args.words, args.grid, args.dim)
    impls = {"vectorised": local_contrastive_loss, "loop": loop_local_loss}
    times = {k: [] for k in impls}
    values = {}
    for k, fn in impls.items():  # warm-up
        fwd_bwd(fn, regions, words, lengths)
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for k, fn in impls.items():
            t, v = fwd_bwd(fn, regions, words, lengths)
            times[k].append(t)
            values[k] = v
    vec = statistics.median(times["vectorised"])
    loop = statistics.median(times["loop"])
    return {
        "benchmark": "local_contrastive_loss forward+backward",
        "B": args.batch, "N": args.words, "G": args.grid, "D": args.dim, "dtype": "float32",
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "vectorised_s": round(vec, 5), "loop_s": round(loop, 5), "ratio": round(loop / vec, 3),
        "loss_abs_diff": abs(values["vectorised"] - values["loop"]),
    }


def memory_child(args):
    regions, words, lengths = make_inputs(args.batch, args.words, args.grid, args.dim)
    regions.requires_grad_(True)
    words.requires_grad_(True)
    t0 = time.perf_counter()
    i2t, t2i = local_contrastive_loss(regions, words, lengths)
    (i2t + t2i).backward()
    secs = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "benchmark": "local_contrastive_loss forward+backward, one step",
        "B": args.batch, "N": args.words, "G": args.grid, "D": args.dim, "dtype": "float32",
        "threads": torch.get_num_threads(),
        "seconds": round(secs, 2), "peak_rss_gb": round(rss_kb / 2**20, 3),
        "input_gb": round((regions.numel() + words.numel()) * 4 / 2**30, 3),
        "loss": (i2t + t2i).item(), "grad_finite": bool(torch.isfinite(regions.grad).all()),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", action="store_true", help="one big step in a subprocess, report peak RSS")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int)
    p.add_argument("--words", type=int)
    p.add_argument("--grid", type=int)
    p.add_argument("--dim", type=int)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    big = args.memory or args.memory_child
    defaults = (128, 32, 56, 768) if big else (32, 25, 16, 128)
    for name, value in zip(("batch", "words", "grid", "dim"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)

    if args.memory_child:
        print(json.dumps(memory_child(args)))
    elif args.memory:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child",
               "--batch", str(args.batch), "--words", str(args.words),
               "--grid", str(args.grid), "--dim", str(args.dim)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = dict(os.environ)
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            sys.stderr.write(res.stderr)
            raise SystemExit(res.returncode)
        print(res.stdout.strip().splitlines()[-1])
    else:
        print(json.dumps(speed(args)))


if __name__ == "__main__":
    main()
