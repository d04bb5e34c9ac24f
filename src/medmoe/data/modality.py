"""Modality names: the usual spellings (DICOM Modality codes, free text) -> canonical names."""
from __future__ import annotations

import re

# canonical name -> accepted spellings (compared lower-case, with punctuation and spaces removed)
SPELLINGS: dict[str, tuple[str, ...]] = {
    "xray": ("xray", "x-ray", "cr", "dx", "rx", "radiograph", "radiography", "chest x-ray", "cxr", "mg",
             "mammography", "mammogram"),
    "ct": ("ct", "cta", "computed tomography", "cat", "ct scan"),
    "mri": ("mri", "mr", "magnetic resonance", "mr imaging", "magnetic resonance imaging"),
    "ultrasound": ("ultrasound", "us", "usg", "sonography", "sonogram", "echo", "echocardiography", "ultrasonography"),
    "pathology": ("pathology", "histopathology", "histology", "sm", "wsi", "whole slide"),
    "fundus": ("fundus", "retina", "retinal", "op", "fundus photography", "cfp"),
}
_KEY = re.compile(r"[^a-z0-9]")
_LOOKUP = {_KEY.sub("", spelling): name for name, spellings in SPELLINGS.items() for spelling in spellings}


def normalise_modality(name: str | None) -> str | None:
    """``"X-Ray"``, ``"DX"``, ``"radiograph"`` -> ``"xray"``; unknown or empty -> None."""
    if not name:
        return None
    return _LOOKUP.get(_KEY.sub("", str(name).lower()))
