"""``medmoe classify``, ``app`` and ``export``: using a trained model."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from .common import add_json, add_model, add_out, load_model, write_json


def cmd_classify(args) -> int:
    from ..classify import classifier, has_head, read_prompts

    model = load_model(args)
    if not args.classes and not args.prompts and not has_head(model):
        raise ConfigError("classify needs --classes NAME... or --prompts FILE (this model has no head trained by "
                          "`medmoe finetune`)")
    classes, templates = read_prompts(args.prompts, args.classes) if args.prompts else (args.classes, None)
    chosen = classifier(model, classes, templates)
    records = chosen.files(args.image)
    names = list(chosen.classes)
    width = max(12, *(len(Path(r["image"]).name) for r in records)) + 2
    print(f"{'image':<{width}}{'expert':<8}{'modality':<14}" + "".join(f"{n:>{max(8, len(n) + 2)}}" for n in names))
    for r in records:
        line = f"{Path(r['image']).name:<{width}}"
        if "error" in r:
            print(line + f"cannot be classified: {r['error']}")
            continue
        line += f"{'-' if r['expert'] is None else r['expert']:<8}{r['modality'] or '-':<14}"
        print(line + "".join(f"{r['probabilities'][n]:>{max(8, len(n) + 2)}.3f}" for n in names))
    print(f"(probabilities from the trained head, fine-tuned on {len(names)} classes"
          f"{': one sigmoid each, multi-label' if chosen.multi_label else ''})" if chosen.source == "head" else
          "(probabilities from prompts, zero-shot)")
    write_json(args.json, records)
    if not any("probabilities" in r for r in records):
        raise DataError(f"none of the {len(records)} images could be read")
    return 0


def cmd_app(args) -> int:
    from ..app.server import serve

    serve(load_model(args), args.host, args.port)
    return 0


def cmd_export(args) -> int:
    from ..export import export_onnx

    out = export_onnx(load_model(args), args.out)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("classify", help="class probabilities of image files (zero-shot, or a fine-tuned head)",
                       description="Print each image's class probabilities, the expert the image router chose and "
                       "the modalities assigned to it. With --classes or --prompts: a softmax over the zero-shot "
                       "scores; without, for a model fine-tuned by `medmoe finetune`: its trained head's. An "
                       "unreadable file is a line saying why; exit 1 only if no file could be read.")
    add_model(p)
    p.add_argument("--image", required=True, nargs="+", metavar="PATH", help="image files (DICOM, NIfTI, PNG, JPEG)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names (each its own prompt); optional for a "
                   "fine-tuned model, whose head is used without them")
    p.add_argument("--prompts", metavar="FILE", help='JSON {"classes": {name: [phrases]}, "templates": [...]}; '
                   "with --classes, only those classes")
    add_json(p, 'write [{"image", "probabilities", "expert", "modality"}] as JSON')
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("app", help="a local web page: upload an image, see class probabilities and word attention",
                       description="Serve a page (no internet needed) to upload a DICOM/NIfTI/PNG/JPEG and type class "
                       "names and/or a report; it shows class probabilities, the routed expert with the router's "
                       "probabilities, and each report word's attention over the image.")
    add_model(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("export", help="export the image and text encoders to ONNX",
                       description="Write image_encoder.onnx, text_encoder.onnx, the tokenizer and config.json to "
                       "DIR (see medmoe/export.py for the graphs' inputs and outputs). Needs the export extra: "
                       "pip install 'medmoe[export]'.")
    add_model(p)
    add_out(p, "DIR", "output folder")
    p.set_defaults(func=cmd_export)
