"""MedSynth: a procedural image-report dataset for end-to-end MedMoE checks without downloads.

Four modalities, each with its own look and its own spatial scale of findings:

    xray        PA chest radiograph, smooth anatomy; large diffuse findings (opacity, cardiomegaly, effusion)
    ct          axial abdominal CT with noise; medium findings (liver lesion, kidney stone)
    mri         axial FLAIR-like brain slice, sharp edges; small foci (focal lesion, microbleed)
    ultrasound  sector scan with multiplicative speckle (cyst, solid nodule)

Every abnormal image has a boolean finding mask and a short free-text report whose finding, location
and size words are derived from that mask, so word-region attention can be scored against ground truth
(grounding) as well as zero-shot classification and retrieval.

Conventions
- Coordinates are normalised to [-1, 1] over the image, so a larger ``size`` renders the same layout
  scaled. Reported millimetres use a fixed field of view per modality (_FOV_MM).
- Left/right (xray, ct, mri) follow the radiological convention: the patient's right is on the image
  left. A location containing "right" has its mask centroid in the left half of the image, and "left"
  in the right half.
- Vertical location words are image halves: xray "upper"/"lower" zone and ultrasound
  "superficial"/"deep" (transducer at the top) put the mask centroid above/below the middle row.
  MRI lobes run top to bottom: "frontal" (y < -0.2), "parietal", "occipital" (y > 0.25).
- Size words ("small", "moderate", "large") bucket the mask's equivalent-circle diameter in mm; the
  thresholds are the tertiles at the default Difficulty. Reports say either the word or the mm value
  (cardiomegaly: mild / moderate / marked).
- Randomness: anatomy comes from a fixed bank of 64 variants per modality (rendered once per image size
  and cached); texture, noise and the finding are drawn per sample, the finding last, so a normal and
  an abnormal rendering from the same generator state differ only inside the finding mask (and, for a
  cyst, in the posterior acoustic enhancement below it). Per-pixel
  noise comes from a child generator, so a seed gives the same layout and finding at every size.
  ``generate`` seeds sample i with (seed, i) and draws its split (80/10/10), modality (uniform, or from
  ``mix``) and finding (normal with P_NORMAL, else uniform): files are byte-identical per seed and mix,
  whatever ``n``.

Layout written by ``generate`` (paths in the manifest are relative to its folder):
    images/000007.png   8-bit greyscale image
    masks/000007.png    8-bit mask, 255 on the finding (abnormal samples only)
    manifest.jsonl      {"image": "images/000007.png", "report": "...", "modality": "ct",
                         "split": "train", "finding": "liver lesion", "labels": ["liver lesion"],
                         "mask": "masks/000007.png", "location": "right hepatic lobe", "size": "small"}
Normal samples have "mask", "location" and "size" null.

Modules: anatomy (drawing primitives, anatomy banks), findings (renderers, masks, location and size
words), reports (report text), writer (render_sample, generate, PNG files).
"""
from .findings import FINDINGS, MODALITIES, Difficulty
from .writer import P_NORMAL, SPLITS, Sample, generate, mix_cdf, render_sample

__all__ = ["FINDINGS", "MODALITIES", "P_NORMAL", "SPLITS", "Difficulty", "Sample", "generate", "mix_cdf",
           "render_sample"]
