"""Embed a split once; every evaluation task reads the result."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.dataset import ImageReportDataset, make_loader
from ..data.manifest import Row
from ..data.transforms import ImageTransform


@dataclass
class Embeddings:
    rows: list[Row]  # the rows that could be read, in order
    image: torch.Tensor  # v_g [n, D], routed by the image router (no report at inference)
    text: torch.Tensor  # t_g [n, D]
    image_expert: torch.Tensor | None  # [n] (None without experts)
    text_expert: torch.Tensor | None
    modality: torch.Tensor  # modality index [n], -1 unknown
    skipped: list[dict] = field(default_factory=list)
    prompt_local: torch.Tensor | None = None  # [n, P] local similarity to each zero-shot prompt (zeroshot.py)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, index: list[int]) -> Embeddings:
        """The rows at ``index`` (the skipped list is not carried)."""
        def pick(t):
            return None if t is None else t[index]

        return Embeddings([self.rows[i] for i in index], self.image[index], self.text[index], pick(self.image_expert),
                          pick(self.text_expert), self.modality[index], [], pick(self.prompt_local))

    def split(self, name: str) -> Embeddings:
        """The rows of split ``name``."""
        return self.subset([i for i, r in enumerate(self.rows) if r.split == name])


@torch.no_grad()
def embed_rows(model, rows: list[Row], batch_size: int = 64, workers: int = 0, progress: bool = False,
               prompts=None) -> Embeddings:
    """Embed ``rows`` (images routed by the image router); with ``prompts`` (a zeroshot.PromptBank)
    also score each image's local map against every prompt, batch by batch (the maps are not kept)."""
    model.eval()
    device = next(model.parameters()).device
    by_number = {r.row: r for r in rows}
    loader = make_loader(ImageReportDataset(rows, ImageTransform.of(model.config), model.config.modalities,
                                            model.text.tokenize), workers=workers, batch_size=batch_size)
    keep, skipped = [], []
    parts: dict[str, list] = {k: [] for k in ("image", "text", "image_expert", "text_expert", "modality",
                                              "prompt_local")}
    from tqdm.auto import tqdm

    for batch in tqdm(loader, desc="embedding", unit="batch", disable=not progress, leave=False):
        skipped += batch["skipped"]
        if not batch["reports"]:
            continue
        image, text = model.encode_image(batch["images"].to(device)), model.encode_text(batch["tokens"])
        keep += [by_number[n] for n in batch["rows"]]
        parts["image"].append(image.global_emb.float().cpu())
        parts["text"].append(text.global_emb.float().cpu())
        parts["modality"].append(batch["modality"])
        if prompts is not None:
            from .zeroshot import prompt_local_scores

            parts["prompt_local"].append(prompt_local_scores(model, image.local_map, prompts).cpu())
        if text.router_logits is not None:
            parts["image_expert"].append(image.expert.cpu())
            parts["text_expert"].append(text.router_logits.argmax(1).cpu())
    cat = {k: torch.cat(v) if v else None for k, v in parts.items()}
    if cat["image"] is None:
        d = model.config.embed_dim
        cat.update(image=torch.empty(0, d), text=torch.empty(0, d), modality=torch.empty(0, dtype=torch.long))
    return Embeddings(keep, cat["image"], cat["text"], cat["image_expert"], cat["text_expert"], cat["modality"], skipped,
                      cat["prompt_local"])
