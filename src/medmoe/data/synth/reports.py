"""MedSynth reports (8-30 words): sometimes the technique, then in random order the finding sentence
(often first), negations of most absent findings and a few normal statements; normal studies end with
an impression. Finding templates are filled with {size} (size word), {mm} (rounded equivalent
diameter) and {loc} (location), then capitalised.
"""
from __future__ import annotations

from .findings import FINDINGS


_TECHNIQUE = {
    "xray": ("PA chest radiograph.", "Frontal chest radiograph.", "AP portable chest X-ray.", "Chest X-ray, PA view."),
    "ct": ("Axial contrast-enhanced CT of the abdomen.", "Contrast-enhanced abdominal CT.",
           "Axial CT through the upper abdomen."),
    "mri": ("Axial T2 FLAIR MRI of the brain.", "Brain MRI, axial FLAIR.", "Axial T2-weighted brain MRI."),
    "ultrasound": ("Sonographic images.", "Grayscale ultrasound images.", "Targeted ultrasound of the area of concern."),
}
_POSITIVE = {
    "opacity": (
        "{size} patchy opacity in the {loc}.",
        "there is a {size} airspace opacity in the {loc}.",
        "{size} opacity in the {loc}, possibly consolidation.",
        "{size} ill-defined opacity projecting over the {loc}.",
    ),
    "effusion": (
        "{size} {loc} pleural effusion.",
        "there is a {size} {loc}-sided pleural effusion.",
        "blunting of the {loc} costophrenic angle from a {size} pleural effusion.",
        "{loc} pleural effusion, {size} in size.",
    ),
    "cardiomegaly": (
        "{size} cardiomegaly.",
        "the cardiac silhouette is enlarged, {size} cardiomegaly.",
        "enlarged heart in keeping with {size} cardiomegaly.",
    ),
    "liver lesion": (
        "{size} hypodense liver lesion in the {loc}.",
        "a {mm} mm hypodense liver lesion in the {loc}.",
        "there is a {size} low-attenuation liver lesion in the {loc}.",
        "hypodense liver lesion in the {loc}, measuring {mm} mm.",
    ),
    "kidney stone": (
        "{size} kidney stone in the {loc}.",
        "a {mm} mm nonobstructing kidney stone in the {loc}.",
        "dense {size} kidney stone within the {loc}.",
        "kidney stone in the {loc} measuring {mm} mm.",
    ),
    "focal lesion": (
        "{size} hyperintense focal lesion in the {loc}.",
        "a {mm} mm FLAIR hyperintense focal lesion in the {loc}.",
        "there is a {size} T2 hyperintense focal lesion in the {loc}.",
        "hyperintense focal lesion in the {loc}, {mm} mm.",
    ),
    "microbleed": (
        "{size} hypointense microbleed in the {loc}.",
        "a {mm} mm microbleed in the {loc}.",
        "{size} focus of signal loss in the {loc}, consistent with a microbleed.",
        "punctate microbleed in the {loc}, {mm} mm.",
    ),
    "cyst": (
        "{size} {loc} anechoic cyst with posterior acoustic enhancement.",
        "a {mm} mm {loc} simple cyst, anechoic with posterior enhancement.",
        "there is a {size} anechoic cyst in the {loc} field.",
        "{loc} anechoic cyst measuring {mm} mm.",
    ),
    "solid nodule": (
        "{size} {loc} hypoechoic solid nodule with irregular margins.",
        "a {mm} mm hypoechoic solid nodule in the {loc} field.",
        "there is a {size} {loc} solid nodule, hypoechoic and ill-defined.",
        "{loc} hypoechoic solid nodule measuring {mm} mm.",
    ),
}
_NEGATIVE = {
    "opacity": ("The lungs are clear.", "No focal opacity.", "No consolidation or opacity."),
    "effusion": ("No pleural effusion.", "No effusion.", "Costophrenic angles are sharp."),
    "cardiomegaly": ("Heart size is normal.", "No cardiomegaly.", "Normal cardiac silhouette."),
    "liver lesion": ("No focal liver lesion.", "The liver is unremarkable.", "Homogeneous liver without focal lesion."),
    "kidney stone": ("No kidney stone.", "No kidney stone or hydronephrosis.", "Kidneys are unremarkable."),
    "focal lesion": ("No focal lesion.", "No abnormal hyperintense focal lesion.", "No FLAIR signal abnormality."),
    "microbleed": ("No microbleed.", "No evidence of microbleed.", "No susceptibility artifact to suggest microbleed."),
    "cyst": ("No cyst.", "No cystic lesion.", "No anechoic collection."),
    "solid nodule": ("No solid nodule.", "No focal solid nodule.", "No hypoechoic mass."),
}
_NORMAL = {
    "xray": ("No pneumothorax.", "Mediastinal contours are normal.", "No acute osseous abnormality."),
    "ct": ("The spleen is normal.", "No free fluid.", "No lymphadenopathy."),
    "mri": ("Ventricles are normal in size.", "No midline shift.", "Grey-white differentiation is preserved."),
    "ultrasound": ("Homogeneous echotexture.", "No free fluid.", "Normal echogenicity."),
}
_IMPRESSION = {
    "xray": ("No acute cardiopulmonary process.", "Normal chest radiograph."),
    "ct": ("No acute abdominal abnormality.", "Unremarkable abdominal CT."),
    "mri": ("No acute intracranial abnormality.", "Normal brain MRI."),
    "ultrasound": ("Unremarkable sonographic appearance.", "Normal ultrasound."),
}
_SEVERITY = {"small": "mild", "moderate": "moderate", "large": "marked"}  # cardiomegaly wording


def _pick(rng, options):
    return options[rng.integers(len(options))]


def finding_sentence(rng, finding, location, size_word, mm):
    """The sentence that names the finding, its size and location (the report's key sentence)."""
    size = _SEVERITY[size_word] if finding == "cardiomegaly" else size_word
    key = _pick(rng, _POSITIVE[finding]).format(size=size, mm=mm, loc=location)
    return key[0].upper() + key[1:]


def _report(rng, modality, finding, location, size_word, mm):
    absent = [f for f in FINDINGS[modality][1:] if f != finding]
    body = [_pick(rng, _NEGATIVE[f]) for f in absent if rng.random() < 0.75]
    body = body or [_pick(rng, _NEGATIVE[absent[0]])]
    body += [s for s in _NORMAL[modality] if rng.random() < 0.3]
    spare = [s for s in _NORMAL[modality] if s not in body]
    while len(" ".join(body).split()) < 6:
        body.append(spare.pop())
    rng.shuffle(body)
    if finding == "normal":
        key = _pick(rng, _IMPRESSION[modality])
        body.append(key)
    else:
        key = finding_sentence(rng, finding, location, size_word, mm)
        body.insert(0 if rng.random() < 0.6 else int(rng.integers(len(body) + 1)), key)
    if rng.random() < 0.5:
        body.insert(0, _pick(rng, _TECHNIQUE[modality]))
    while len(" ".join(body).split()) > 30:  # text-encoder budget: drop other sentences from the end
        body.remove(next(s for s in reversed(body) if s != key))
    return " ".join(body)
