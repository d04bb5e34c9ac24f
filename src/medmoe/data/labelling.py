"""Modality labels from report text: weighted regular-expression cues, kept as data.

The cues live in ``modality_rules.json`` (its ``_doc`` explains the format); users extend
them with their own JSON files. A report gets the modality whose cues score highest, but
only when that score is high enough and clearly ahead of the runner-up: otherwise it stays
unknown rather than guessed. Cues in comparison/history context ("compared with prior
CT", "recommend MRI") are discounted so they never decide alone; a cue naming the modality
counts more where it names this image ("Axial CT image shows") and less where it names where
something was seen ("observed on high-resolution computed tomography" in an x-ray note). Fallback
cues (chest findings and support devices for x-ray) count only when no other modality has a cue:
a terse "Mild pulmonary edema." is a chest radiograph, "Lung windows: pleural effusion." stays CT.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, ManifestError
from ..files import atomic_write
from .modality import SPELLINGS, normalise_modality
from .tables import Record as _Record, read_table  # _Record: a row as read, written back as is when bad

_SCALARS = ("threshold", "margin", "reference_factor", "direct_factor", "mention_factor")
_CONTEXTS = ("reference", "mention", "direct")  # in order of precedence where their spans overlap
NAMING = 5.0  # a cue of this weight or more names its modality: the direct and mention contexts apply to it


def _fail(source: str, message: str):
    raise ConfigError(f"modality rules {source}: {message}")


def _compile(pattern, source: str, where: str) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        _fail(source, f"{where}: a pattern must be a non-empty string (got {pattern!r})")
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        _fail(source, f"{where}: invalid regex {pattern!r} ({exc})")
    if compiled.search(""):
        _fail(source, f"{where}: regex {pattern!r} matches empty text")
    return compiled


def _merge(rules: dict, data, source: str) -> None:
    """Check one rules file's content and merge it into ``rules`` (in place)."""
    if not isinstance(data, dict):
        _fail(source, "the file must hold a JSON object")
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key in _SCALARS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                _fail(source, f"{key!r} must be a number >= 0 (got {value!r})")
            rules[key] = float(value)
        elif key in _CONTEXTS:
            if not isinstance(value, list):
                _fail(source, f"{key!r} must be a list of regexes")
            for pattern in value:
                _compile(pattern, source, key)
                rules[key].append(pattern)
        elif key in ("cues", "fallback"):
            if not isinstance(value, dict):
                _fail(source, f"{key!r} must map modality -> {{regex: weight}}")
            for name, cues in value.items():
                modality = normalise_modality(name)
                if modality is None:
                    _fail(source, f"unknown modality {name!r} (known: {', '.join(SPELLINGS)})")
                if not isinstance(cues, dict):
                    _fail(source, f"{key} of {name!r} must be an object {{regex: weight}}")
                for pattern, weight in cues.items():
                    _compile(pattern, source, f"{key} cue of {name!r}")
                    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                        _fail(source, f"weight of {name!r} cue {pattern!r} must be a number >= 0 (got {weight!r})")
                    table = rules[key].setdefault(modality, {})
                    table.pop(pattern, None)
                    if weight > 0:
                        table[pattern] = float(weight)
        else:
            _fail(source, f"unknown key {key!r} (expected {', '.join(_SCALARS + _CONTEXTS)}, cues, fallback)")


def _compiled(cues: dict[str, dict[str, float]]) -> dict[str, list[tuple[re.Pattern, float]]]:
    return {m: [(re.compile(p, re.IGNORECASE), w) for p, w in table.items()] for m, table in cues.items()}


@dataclass
class ModalityRules:
    cues: dict[str, dict[str, float]]  # modality -> {regex: weight}
    fallback: dict[str, dict[str, float]] = field(default_factory=dict)  # ... counted if no other modality has one
    reference: list[str] = field(default_factory=list)  # context regexes whose cue matches are discounted
    mention: list[str] = field(default_factory=list)  # ... whose naming cues name where something was seen
    direct: list[str] = field(default_factory=list)  # ... whose naming cues name this image
    threshold: float = 3.0  # the winner needs at least this score ...
    margin: float = 2.0  # ... and this much more than the runner-up
    reference_factor: float = 0.2  # weight multiplier of a cue seen only in reference context
    mention_factor: float = 0.5  # ... of a naming cue seen at best in mention context
    direct_factor: float = 1.5  # ... of a naming cue seen in direct context (and in neither of the others)

    def __post_init__(self):
        self._cues, self._fallback = _compiled(self.cues), _compiled(self.fallback)
        self._contexts = {kind: [re.compile(p, re.IGNORECASE) for p in getattr(self, kind)] for kind in _CONTEXTS}
        self._factors = {kind: getattr(self, f"{kind}_factor") for kind in _CONTEXTS}

    @classmethod
    def load(cls, paths=None) -> "ModalityRules":
        """The built-in rules, extended/overridden by each JSON file in ``paths`` in turn."""
        builtin = resources.files("medmoe.data") / "modality_rules.json"
        rules = {"cues": {}, "fallback": {}, **{kind: [] for kind in _CONTEXTS}}
        _merge(rules, json.loads(builtin.read_text(encoding="utf-8")), "(built-in)")
        for path in [paths] if isinstance(paths, (str, Path)) else (paths or []):
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            except FileNotFoundError:
                _fail(str(path), "file not found")
            except (OSError, UnicodeDecodeError) as exc:
                _fail(str(path), f"cannot read ({exc})")
            except json.JSONDecodeError as exc:
                _fail(str(path), f"invalid JSON (line {exc.lineno}: {exc.msg})")
            _merge(rules, data, str(path))
        return cls(**rules)

    def label_report(self, text) -> tuple[str | None, dict[str, float]]:
        """(modality or None, {modality: score}) for one report."""
        text = str(text or "")
        spans = {kind: [m.span() for pattern in patterns for m in pattern.finditer(text)]
                 for kind, patterns in self._contexts.items()}
        scored = {m: self._score(cues, text, spans) for m, cues in self._cues.items()}
        evidence = {m for m, (_, firm) in scored.items() if firm}  # modalities with a cue at full weight
        scores = {}
        for modality in {**self._cues, **self._fallback}:
            score = scored.get(modality, (0.0, False))[0]
            if not evidence - {modality}:
                score += self._score(self._fallback.get(modality, []), text, spans)[0]
            scores[modality] = round(score, 3)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1]) + [(None, 0.0), (None, 0.0)]
        (best, top), (_, second) = ranked[0], ranked[1]
        if top >= self.threshold and top - second >= self.margin:
            return best, scores
        return None, scores

    def _factor(self, start: int, weight: float, spans: dict) -> float:
        """The weight multiplier of a cue match at ``start``: its first context (``_CONTEXTS``
        order) that applies, else 1."""
        for kind in _CONTEXTS:
            if (kind == "reference" or weight >= NAMING) and any(a <= start < b for a, b in spans[kind]):
                return self._factors[kind]
        return 1.0

    def _score(self, cues, text: str, spans: dict) -> tuple[float, bool]:
        """(sum over the matching cues of the weight times the largest factor among its matches;
        whether any cue counted at full weight or more)."""
        score, firm = 0.0, False
        for pattern, weight in cues:
            factor = max((self._factor(m.start(), weight, spans) for m in pattern.finditer(text)), default=None)
            if factor is not None:
                score += weight * factor
                firm |= factor >= 1
        return score, firm


@functools.cache
def _builtin_rules() -> ModalityRules:
    return ModalityRules.load()


def label_report(text, rules: ModalityRules | None = None) -> tuple[str | None, dict[str, float]]:
    """Label one report with ``rules`` (default: the built-in rules)."""
    return (rules or _builtin_rules()).label_report(text)


# ----------------------------------------------------------------------------- manifests

def _rebase(value, src: Path, dst: Path):
    """A path relative to folder ``src`` rewritten relative to folder ``dst`` (same file)."""
    if not isinstance(value, str) or not value.strip() or os.path.isabs(value) or src == dst:
        return value
    target = os.path.normpath(src / value.strip())
    try:
        return Path(os.path.relpath(target, dst)).as_posix()
    except ValueError:  # another drive (Windows): keep it absolute
        return target


def _cell(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _csv_line(fields: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _write(out: Path, columns: list[str], records: list[_Record]) -> None:
    """Write JSONL or CSV (by suffix), atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: _write_records(tmp, out.suffix.lower() == ".csv", columns, records))


def _write_records(path, as_csv: bool, columns: list[str], records: list[_Record]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        if as_csv:
            unparsed = any(r.data is None and isinstance(r.raw, str) for r in records)
            writer = csv.writer(f)
            writer.writerow(columns + (["unparsed"] if unparsed else []))
            for r in records:
                if r.data is not None:
                    writer.writerow([_cell(r.data.get(c)) for c in columns])
                elif isinstance(r.raw, list):  # a CSV row: copied as it was
                    writer.writerow(r.raw)
                else:  # a JSONL line that is not a JSON object: kept whole in the last column
                    writer.writerow([""] * len(columns) + [r.raw])
        else:
            for r in records:
                if r.data is not None:
                    f.write(json.dumps(r.data, ensure_ascii=False) + "\n")
                else:
                    f.write((r.raw if isinstance(r.raw, str) else _csv_line(r.raw)) + "\n")


FILL_PROBABILITY = 0.95  # with images, a row the text leaves unknown is labelled at this combined probability ...
OVERRIDE_PROBABILITY = 0.95  # ... and a text label the image contradicts is replaced at this one (else: unknown)
TEXT_WEIGHT = 0.7  # log-odds per unit of text score when the text's scores and the image's probabilities combine
IMAGE_FLOOR = 1e-3  # ... where the image is never taken as surer than 999:1


def label_manifest(manifest, out, rules: ModalityRules | None = None, overwrite: bool = False, images: bool = False,
                   fill_probability: float = FILL_PROBABILITY, override_probability: float = OVERRIDE_PROBABILITY,
                   seed: int = 0) -> dict:
    """Write ``out`` (JSONL for .jsonl/.json, CSV for .csv): every row of ``manifest`` with ``modality``
    filled where missing (empty when undecided) and ``modality_source`` = given, dicom, report,
    image or unknown. A valid given modality is kept (normalised) unless ``overwrite``; with
    ``overwrite`` an undecided report still keeps its given one. Relative image/mask paths are
    rewritten when ``out`` is in another folder; unparseable rows are copied through unchanged.

    ``images=True`` also reads the images: a DICOM file's Modality tag labels a row without a given
    modality (``dicom``, before the report); then an image classifier (``medmoe.data.image_modality``),
    trained on the rows labelled so far, gives each row probabilities, which are combined with the
    text's scores (``combine``). A row the text leaves unknown gets the combined winner at
    ``fill_probability`` or more (``image``). Where the image contradicts the text label, the text
    keeps it if it still wins combined; else the winner replaces it at ``override_probability``
    or more, and otherwise neither side wins clearly and the row becomes unknown. Given and DICOM
    labels are kept. Every contradiction is listed in ``disagreements``.

    Returns {"rows", "given", "from_report", "unknown", "unparseable", "per_modality",
    "modality_source": {given, dicom, report, image, unknown}} and, with ``images``, "image_classifier"
    and "disagreements" [{row, image, text_label, text_source, image_label, probability, combined,
    outcome, overridden}].
    """
    manifest, out = Path(manifest), Path(out)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    if out.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise ConfigError(f"output must end with .jsonl, .json or .csv: {out}")
    if not 0 < fill_probability <= 1 or not 0 < override_probability <= 1:
        raise ConfigError("fill and override probabilities must be in (0, 1]")
    rules = rules or ModalityRules.load()
    columns, records = read_table(manifest)
    columns += [c for c in ("modality", "modality_source") if c not in columns]
    src, dst = manifest.parent.resolve(), out.parent.resolve()
    labelled = [r for r in records if r.data is not None]
    text_scores = {}  # id(record) -> the report's scores, for the rows labelled from the report or unknown
    for r in labelled:
        given = normalise_modality(r.data.get("modality"))
        modality, source = given, "given"
        if given is None or overwrite:
            found, scores = rules.label_report(r.data.get("report"))
            if found is not None:
                modality, source = found, "report"
            elif given is None:
                source = "unknown"
            text_scores[id(r)] = scores
        r.data["modality"], r.data["modality_source"] = modality or "", source
    summary = (_image_stage(records, text_scores, src, fill_probability, override_probability, seed)
               if images else {})
    sources, modalities = Counter(r.data["modality_source"] for r in labelled), Counter()
    for r in labelled:
        for key in ("image", "mask"):
            if key in r.data:
                r.data[key] = _rebase(r.data[key], src, dst)
        modalities[r.data["modality"] or "unknown"] += 1
    _write(out, columns, records)
    per_modality = {m: modalities[m] for m in SPELLINGS if modalities[m]}
    return {"rows": len(records), "given": sources["given"], "from_report": sources["report"],
            "unknown": sources["unknown"], "unparseable": len(records) - len(labelled),
            "per_modality": {**per_modality, "unknown": modalities["unknown"]},
            "modality_source": {k: sources[k] for k in ("given", "dicom", "report", "image", "unknown")}, **summary}


def combine(text_label: str | None, scores: dict[str, float], classes: list[str], probabilities,
            fill: float = FILL_PROBABILITY, override: float = OVERRIDE_PROBABILITY) -> tuple[str | None, float]:
    """(label or None, its combined probability) of a row from its text (label, scores) and the image
    classifier's ``probabilities`` over ``classes``. The combined probabilities are the image's (at
    least IMAGE_FLOOR) times exp(TEXT_WEIGHT x each class's text score), normalised: independent
    evidence, a modality named outright (5) worth odds of about 33:1, named directly (7.5) about
    190:1, so that at the default ``override`` a sure image does not beat a direct name. The text
    label stands if it wins combined; another winner needs ``override`` (``fill`` where the text has
    no label)."""
    import numpy as np

    text = np.array([scores.get(m, 0.0) for m in classes])
    logits = np.log(np.clip(probabilities, IMAGE_FLOOR, 1.0)) + TEXT_WEIGHT * text
    combined = np.exp(logits - logits.max())
    combined /= combined.sum()
    label, probability = classes[int(combined.argmax())], float(combined.max())
    if label != text_label and probability < (override if text_label else fill):
        label = None
    return label, probability


def _image_stage(records: list[_Record], text_scores: dict, folder: Path, fill: float, override: float,
                 seed: int) -> dict:
    """DICOM tags, then the image classifier combined with the text, on the parsed rows (in place);
    the summary's image part."""
    import numpy as np

    from ..errors import ImageLoadError
    from .image_modality import image_thumbnail, image_votes
    from .io import is_dicom
    from .manifest import _dicom_modality

    rows, thumbnails, unreadable = [], [], 0  # rows: (row number, record) of each readable image
    for n, r in enumerate(records, start=1):
        if r.data is None:
            continue
        image = str(r.data.get("image") or "").strip()
        path = folder / image if image else None
        try:
            if path is None or not path.is_file():
                raise ImageLoadError("no image file")
            if r.data["modality_source"] in ("report", "unknown") and is_dicom(path):
                found = _dicom_modality(path)
                if found is not None:
                    r.data["modality"], r.data["modality_source"] = found, "dicom"
            thumbnails.append(image_thumbnail(path))
            rows.append((n, r))
        except (ImageLoadError, OSError, ValueError):
            unreadable += 1
    labels = [r.data["modality"] or None for _, r in rows]
    votes = image_votes(np.stack(thumbnails), labels, seed) if thumbnails else None
    info = {"fill_probability": fill, "override_probability": override, "text_weight": TEXT_WEIGHT,
            "unreadable_images": unreadable}
    if votes is None:
        return {"image_classifier": {**info, "trained": False, "reason": "fewer than two modalities with "
                                     "enough labelled rows"}, "disagreements": []}
    disagreements = []
    for (n, r), probabilities in zip(rows, votes.probabilities):
        text_label, source = r.data["modality"] or None, r.data["modality_source"]
        image_label = votes.classes[int(probabilities.argmax())]
        if text_label is not None and text_label not in votes.classes:
            continue  # a modality the classifier does not know
        if source in ("report", "unknown"):
            label, probability = combine(text_label, text_scores[id(r)], votes.classes, probabilities, fill, override)
        else:  # given or DICOM: kept
            label, probability = text_label, None
        if text_label is not None and image_label != text_label:
            disagreements.append({"row": n, "image": r.data.get("image"), "text_label": text_label,
                                  "text_source": source, "image_label": image_label,
                                  "probability": round(float(probabilities.max()), 4),
                                  "combined": None if probability is None else round(probability, 4),
                                  "outcome": label, "overridden": label == image_label})
        if label != text_label:
            r.data["modality"], r.data["modality_source"] = label or "", "image" if label else "unknown"
    return {"image_classifier": {**info, "trained": True, "trained_on": votes.trained_on,
                                 "cv_accuracy": votes.cv_accuracy, "temperature": votes.temperature},
            "disagreements": disagreements}
