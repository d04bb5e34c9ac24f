"""Share a model on the Hugging Face Hub, and fetch one (``medmoe.load("org/name")``).

``save_for_hub(model, folder)`` writes what is uploaded: the model files (``save_pretrained``),
a model card (README.md: YAML metadata, the configuration, a summary of the training run when
the model came from one, the evaluation when the run has an eval JSON) and that eval JSON.
``push_to_hub`` writes it to a temporary folder and uploads it with ``HfApi.upload_folder``.
A run's files are found beside the checkpoint the model was loaded from: ``RUN/train_args.json``,
``RUN/metrics.jsonl``, and ``RUN/eval*.json`` or ``eval_<RUN name>.json`` next to RUN (``medmoe demo``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .files import atomic_write_text

CARD, EVAL_FILE = "README.md", "eval.json"
TAGS = ["medical-imaging", "vision-language", "mixture-of-experts", "zero-shot-image-classification", "medmoe"]


def download(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of ``repo_id`` in the Hub cache (``HF_HUB_CACHE``), downloaded if missing.
    Offline (``HF_HUB_OFFLINE=1``, or no connection) the cached snapshot is used."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, library_name="medmoe"))
    except LocalEntryNotFoundError as exc:
        raise FileNotFoundError(f"{repo_id}: not a local folder, and not in the Hugging Face cache while offline "
                                f"({exc.__class__.__name__})") from exc


def find_run(folder: str | os.PathLike | None) -> Path | None:
    """The training run a model folder belongs to (RUN/checkpoints/step-N/model, or RUN itself)."""
    if folder is None:
        return None
    folder = Path(folder)
    for candidate in [folder, *list(folder.parents)[:3]]:
        if (candidate / "train_args.json").is_file() or (candidate / "metrics.jsonl").is_file():
            return candidate
    return None


def find_eval(run: Path | None) -> Path | None:
    """``RUN/eval*.json``, or ``eval_<RUN name>.json`` beside the run (what ``medmoe demo`` writes)."""
    if run is None:
        return None
    candidates = sorted(run.glob("eval*.json")) + [run.parent / f"eval_{run.name}.json"]
    return next((p for p in candidates if p.is_file()), None)


def training_summary(run: Path) -> dict:
    """What the run trained on and how far: its arguments, last training step and last held-out scores."""
    summary = {}
    if (run / "train_args.json").is_file():
        args = json.loads((run / "train_args.json").read_text())
        summary["arguments"] = {k: args[k] for k in ("data", "val", "steps", "epochs", "batch_size", "accum_steps",
                                                     "world", "lr", "seed") if args.get(k) is not None}
    if (run / "metrics.jsonl").is_file():
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train = [r for r in records if r.get("split") == "train"]
        val = [r for r in records if r.get("split") == "val"]
        if train:
            summary["trained_steps"] = train[-1]["step"]
            summary["final_train_loss"] = train[-1].get("loss")
        if val:
            summary["last_validation"] = {k: v for k, v in val[-1].items() if k != "split"}
    return summary


def _scalars(tree: dict, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, number) for the numbers of a nested result dict."""
    rows = []
    for key, value in tree.items():
        if isinstance(value, dict):
            rows += _scalars(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((f"{prefix}{key}", value))
    return rows


def model_card(model, repo_id: str | None = None, run: Path | None = None, eval_json: Path | None = None) -> str:
    """README.md of the Hub repo: YAML front matter, usage, configuration, training run, evaluation."""
    from huggingface_hub import ModelCardData

    config = model.config.to_dict()
    meta = ModelCardData(license="apache-2.0", library_name="medmoe", tags=TAGS,
                         pipeline_tag="zero-shot-image-classification")
    name = repo_id or "MedMoE model"
    lines = [
        "---", meta.to_yaml(), "---", "", f"# {name}", "",
        "A MedMoE vision-language model (modality-specialised mixture of experts, arXiv 2506.08356) "
        f"with {config['num_experts'] if config['moe'] else 'no'} experts over the modalities "
        f"{', '.join(config['modalities'])}.", "",
        "```python", "import medmoe", "",
        f"model = medmoe.load({name!r})" if repo_id else "model = medmoe.load(FOLDER)",
        'result = medmoe.classify(model, ["image.dcm"], ["pneumonia", "no finding"])',
        "print(result.probabilities, result.expert)", "```", "",
        "## Configuration", "", "```json", json.dumps(config, indent=2), "```", "",
    ]
    if run is not None:
        lines += ["## Training", "", "```json", json.dumps(training_summary(run), indent=2), "```", ""]
    if eval_json is not None:
        results = json.loads(Path(eval_json).read_text())
        lines += ["## Evaluation", "", f"From `{EVAL_FILE}` (uploaded with the weights).", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in _scalars(results)]
        lines.append("")
    return "\n".join(lines)


def save_for_hub(model, folder: str | os.PathLike, repo_id: str | None = None, run: str | os.PathLike | None = None,
                 eval_json: str | os.PathLike | None = None) -> Path:
    """Write the model files, README.md and eval.json to ``folder``. ``run`` and ``eval_json``
    default to those found beside the folder the model was loaded from."""
    run = Path(run) if run is not None else find_run(getattr(model, "source", None))
    eval_json = Path(eval_json) if eval_json is not None else find_eval(run)
    folder = model.save_pretrained(folder)
    atomic_write_text(folder / CARD, model_card(model, repo_id, run, eval_json))
    if eval_json is not None:
        shutil.copyfile(eval_json, folder / EVAL_FILE)
    return folder


def push_to_hub(model, repo_id: str, run=None, eval_json=None, private: bool = False, token: str | None = None,
                commit_message: str = "Upload MedMoE model"):
    """Create ``repo_id`` if needed and upload the model with its card; returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hub(model, tmp, repo_id, run, eval_json)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
