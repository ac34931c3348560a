"""Console entry point ``wiseft-lab-export`` (``python -m wiseft_lab.export_cli``): a checkpoint as an open_clip model.

    wiseft-lab-export outputs/demo/runs/<time>/checkpoints/finetuned exported/finetuned
    wiseft-lab-export <checkpoint> <out> --text-from /models/ViT-B-32-openai.safetensors

Writes ``<out>/open_clip_model.safetensors`` (the full CLIP: the checkpoint's image tower, and its text tower or,
when the checkpoint dropped it, the one its zero-shot head was built from), ``<out>/open_clip_config.json`` and the
classification head, ``<out>/head.safetensors`` + ``<out>/head.json``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from wiseft_lab.errors import UserFacingError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wiseft-lab-export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a wiseft-lab checkpoint (fine-tuned, merged, zero-shot) as an open_clip model plus its "
                    "classification head.",
        epilog=textwrap.dedent("""\
            Load the export with plain open_clip:
              open_clip.create_model_and_transforms(ARCH, pretrained="OUT/open_clip_model.safetensors")
              open_clip.create_model_and_transforms("local-dir:OUT")
            and classify with logits = normalize(model.encode_image(x)) @ head.weight.T + head.bias
            (OUT/head.safetensors; the class names and templates are in OUT/head.json)."""))
    parser.add_argument("checkpoint", help="a checkpoint directory (model.safetensors + meta.json)")
    parser.add_argument("out", help="the output directory")
    parser.add_argument("--text-from", metavar="WEIGHTS",
                        help="zero-shot weights (a local file or an open_clip tag) to take the text tower from when "
                             "the checkpoint dropped it (default: the checkpoint's meta.json 'pretrained')")
    parser.add_argument("--cache-dir", help="where tags are downloaded to / looked up (model.cache_dir)")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="a local HF tokenizer directory to include (architectures whose tokenizer comes from "
                             "the HF hub, e.g. SigLIP)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from wiseft_lab.models.interop import export_open_clip  # late: --help stays fast

    try:
        files = export_open_clip(args.checkpoint, args.out, text_source=args.text_from, cache_dir=args.cache_dir,
                                 tokenizer=args.tokenizer)
    except (UserFacingError, FileNotFoundError) as err:
        print(f"wiseft-lab-export: error: {err}", file=sys.stderr)
        return 2
    print("Written: " + ", ".join(str(path) for path in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
