"""Data-parallel training on 2 CPU processes (gloo): gathered losses and synchronised batch norm
equal one process on the concatenated batch (values and gradients); a 2-process training run
writes checkpoints and resumes exactly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from medmoe.distributed import SyncBatchNorm2d, all_gather_with_grad, convert_sync_batchnorm
from medmoe.losses import global_contrastive_loss, local_contrastive_loss
from medmoe.model.experts import ExpertMixture
from medmoe.runs import latest_checkpoint

WORLD = 2


def batch(seed=0, b=8, d=16, n=7, g=3):
    """Embeddings of a global batch: image/text global [b, d], regions [b, d, g, g], words [b, n, d]."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (b,), generator=gen)
    lengths[0] = n  # rank 0 holds the longest report, rank 1 shorter ones: words padded differently
    lengths[3:] = lengths[3:].clamp(max=n - 2)
    return {"img": torch.randn(b, d, generator=gen, dtype=torch.float64),
            "txt": torch.randn(b, d, generator=gen, dtype=torch.float64),
            "regions": torch.randn(b, d, g, g, generator=gen, dtype=torch.float64),
            "words": torch.randn(b, n, d, generator=gen, dtype=torch.float64), "lengths": lengths}


def losses(x: dict, gather: bool) -> torch.Tensor:
    g = sum(global_contrastive_loss(x["img"], x["txt"], 10.0, gather=gather))
    l_i2t, l_t2i = local_contrastive_loss(x["regions"], x["words"], x["lengths"], gather=gather)
    return g, l_i2t + l_t2i


def experts_and_input(seed=0):
    torch.manual_seed(seed)
    mixture = ExpertMixture(3, [6, 8], 8, 4, 4).double().train()
    pyramid = [torch.randn(8, 6, 8, 8, dtype=torch.float64), torch.randn(8, 8, 4, 4, dtype=torch.float64)]
    expert = torch.tensor([0, 2, 0, 2, 1, 1, 1, 0])  # expert 2 only on rank 0's half
    weight = torch.randn(8, 8, 4, 4, dtype=torch.float64)
    return mixture, pyramid, expert, weight


def _worker(rank: int, out: str) -> None:
    # a file rendezvous: no port to race for, and no store server that dies with rank 0
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=WORLD)
    try:
        result = {}
        # unequal rows and trailing sizes gather in rank order with the right offset
        x = torch.full((3 + 2 * rank, 2 + rank), float(rank + 1))
        gathered, offset = all_gather_with_grad(x)
        result["gather"] = (gathered.tolist(), offset)

        # each rank takes its part of the global batch (3 and 5 samples), scored against everything gathered
        full = batch()
        part = slice(0, 3) if rank == 0 else slice(3, 8)
        mine = {k: v[part].clone().requires_grad_(v.is_floating_point()) for k, v in full.items()}
        mine["words"] = mine["words"][:, : int(mine["lengths"].max())].detach().requires_grad_()  # own padding
        for name, loss in zip(("global", "local"), losses(mine, gather=True)):
            grads = torch.autograd.grad(loss, [mine[k] for k in ("img", "txt", "regions", "words")],
                                        allow_unused=True)
            result[name] = (loss.item(), [None if g is None else g.tolist() for g in grads])

        # synchronised batch norm over the global batch, with an expert idle on rank 1
        half = slice(rank * 4, rank * 4 + 4)
        mixture, pyramid, expert, weight = experts_and_input()
        convert_sync_batchnorm(mixture)
        local = mixture([f[half] for f in pyramid], expert[half])
        (local * weight[half]).sum().backward()
        grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in mixture.parameters()]
        for g in grads:
            dist.all_reduce(g)
        result["experts"] = (local.tolist(), [g.tolist() for g in grads],
                             [b.tolist() for n, b in mixture.named_buffers() if "running" in n])
        Path(f"{out}/rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()  # no rank closes its connections while the other still uses them
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out),), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.ddp
@pytest.mark.slow
def test_all_gather_with_grad_pads_and_orders_ranks(ranks):
    for rank, r in enumerate(ranks):
        gathered, offset = r["gather"]
        assert offset == 3 * rank
        assert len(gathered) == 8 and all(len(row) == 3 for row in gathered)
        assert gathered[0] == [1.0, 1.0, 0.0] and gathered[3] == [2.0, 2.0, 2.0]


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("name", ["global", "local"])
def test_gathered_loss_equals_single_process_on_concatenated_batch(ranks, name):
    full = batch()
    full = {k: v.requires_grad_(v.is_floating_point()) for k, v in full.items()}
    loss = losses(full, gather=False)[0 if name == "global" else 1]
    expected = torch.autograd.grad(loss, [full[k] for k in ("img", "txt", "regions", "words")], allow_unused=True)
    # DDP averages over ranks: the mean of the rank losses, and each rank's gradient / WORLD
    assert sum(r[name][0] for r in ranks) / WORLD == pytest.approx(loss.item(), rel=1e-10)
    for i, exp in enumerate(expected):
        if exp is None:
            assert all(r[name][1][i] is None for r in ranks)
            continue
        got = [torch.tensor(r[name][1][i], dtype=torch.float64) / WORLD for r in ranks]
        if i == 3:  # words: each rank's rows are padded to its own longest report
            got = [torch.nn.functional.pad(w, (0, 0, 0, exp.shape[1] - w.shape[1])) for w in got]
        torch.testing.assert_close(torch.cat(got), exp, rtol=1e-9, atol=1e-12)


@pytest.mark.ddp
@pytest.mark.slow
def test_sync_batchnorm_experts_equal_single_process_on_concatenated_batch(ranks):
    mixture, pyramid, expert, weight = experts_and_input()
    out = mixture(pyramid, expert)
    (out * weight).sum().backward()
    got = torch.cat([torch.tensor(r["experts"][0], dtype=torch.float64) for r in ranks])
    torch.testing.assert_close(got, out.detach(), rtol=1e-9, atol=1e-10)
    for (name, p), g in zip(mixture.named_parameters(), ranks[0]["experts"][1]):
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(torch.tensor(g, dtype=torch.float64), expected, rtol=1e-8, atol=1e-10, msg=name)
    buffers = [b for n, b in mixture.named_buffers() if "running" in n]
    for b, r0, r1 in zip(buffers, ranks[0]["experts"][2], ranks[1]["experts"][2]):
        torch.testing.assert_close(torch.tensor(r0, dtype=b.dtype), b, rtol=1e-8, atol=1e-10)
        assert r0 == r1


def test_sync_batchnorm_is_plain_batchnorm_outside_ddp():
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(4)
    sync = convert_sync_batchnorm(torch.nn.Sequential(plain))[0]
    assert isinstance(sync, SyncBatchNorm2d)
    x = torch.randn(5, 4, 3, 3)
    torch.testing.assert_close(sync(x), torch.nn.BatchNorm2d(4)(x))


# ------------------------------------------------------------------------------ torchrun training
@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    from medmoe.data.synth import generate

    return generate(tmp_path_factory.mktemp("medsynth"), n=96, seed=5, size=64, progress=False)


def torchrun(data, out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "medmoe", "train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--steps", "6",
           "--batch-size", "4", "--accum-steps", "2", "--checkpoint-every", "3", "--eval-every", "3", "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


UPCYCLED = ("--set", "expert_init=upcycle", "--set", "upcycle_step=4", "--set", "shared_expert=true")


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("settings", [(), UPCYCLED], ids=["medmoe", "upcycled-shared"])
def test_two_process_training_writes_checkpoints_and_resumes_exactly(tmp_path, medsynth, settings):
    """Both ranks split at step 4 when upcycling, also when resumed from the step-3 checkpoint."""
    torchrun(medsynth, tmp_path / "run", *settings)
    run = tmp_path / "run"
    assert latest_checkpoint(run).name == "step-000006"
    final = load_file(latest_checkpoint(run) / "model" / "model.safetensors")
    meta = json.loads((latest_checkpoint(run) / "trainer.json").read_text())
    assert meta["world"] == WORLD
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == [6]  # rank 0 alone writes
    assert sorted(p.name for p in run.glob("*.jsonl")) == ["metrics.jsonl", "skipped.jsonl"]

    # back to the step-3 checkpoint, as if killed after it: the resumed run ends on the same weights
    import shutil

    shutil.rmtree(run / "checkpoints" / "step-000006")
    (run / "checkpoints" / "latest").write_text("step-000003")
    torchrun(medsynth, run, "--resume", str(run), *settings)
    resumed = load_file(latest_checkpoint(run) / "model" / "model.safetensors")
    assert latest_checkpoint(run).name == "step-000006"
    assert final.keys() == resumed.keys() and all(torch.equal(final[k], resumed[k]) for k in final)
    if settings:
        assert final["gate.upcycled"] and not torch.equal(final["image.experts.experts.0.head.1.weight"],
                                                          final["image.experts.experts.1.head.1.weight"])


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_training_with_unreadable_images_on_both_ranks(tmp_path, medsynth):
    """Ranks then hold batches of different sizes: the gathers pad, every rank runs as many
    micro-batches, and rank 0 logs the skipped rows of both ranks."""
    rows = [json.loads(line) for line in medsynth.read_text().splitlines()]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for i, r in enumerate(rows):
        r["image"] = str(tmp_path / "broken.png") if i % 3 == 0 else str(medsynth.parent / r["image"])
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    torchrun(tmp_path / "m.jsonl", tmp_path / "run", "--schedule", "plateau")  # rank 0 alone scores val loss
    assert latest_checkpoint(tmp_path / "run").name == "step-000006"
    val = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val if r["split"] == "val" and r["loss"] > 0] == [3, 6]
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    logged = sorted(s["row"] for s in skipped if s["stage"] == "train")

    from medmoe.data.dataset import ResumableBatches  # the rows each rank drew in the 6 steps

    train = [i + 1 for i, r in enumerate(rows) if r["split"] == "train"]  # manifest row numbers
    modalities = ["xray", "ct", "mri", "ultrasound"]  # the tiny preset's; sampling is modality-balanced
    groups = [modalities.index(rows[n - 1]["modality"]) for n in train]
    drawn = []
    for rank in range(WORLD):
        for batch, _ in zip(ResumableBatches(len(train), 8, 0, 0, rank, WORLD, groups), range(6)):
            drawn += [train[i] for i, _ in batch]
    expected = sorted(n for n in drawn if (n - 1) % 3 == 0)
    assert len(expected) > 10 and logged == expected
