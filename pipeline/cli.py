"""`reelface restore | probe | analyze | evaluate | models`: argument parsing only; work lives elsewhere."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import ReelfaceError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="default", help="preset name in configs/ or a YAML file (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set encode.codec=ffv1 (repeatable)")


def _load(args: argparse.Namespace, extra: list[str], flags: dict[str, str] | None = None):
    from .config import load_config

    return load_config(args.config, [*args.overrides, *extra], flags)


# restore's flags that set a config value: config key -> flag, attribute of the parsed arguments
RESTORE_FLAGS = {"restore.restorer": ("--restorer", "restorer"), "blend.strength": ("--strength", "strength"),
                 "encode.codec": ("--encoder", "encoder"), "run.executor": ("--executor", "executor"),
                 "run.address": ("--address", "address"), "run.work_dir": ("--work-dir", "work_dir"),
                 "run.preview_seconds": ("--preview", "preview"),
                 "run.keep_work_dir": ("--keep-work-dir", "keep_work_dir")}


def _parse_refs(items: list[str]) -> list[str]:
    """--ref NAME=a.jpg,b.jpg -> the override that puts those photos in references.photos."""
    photos: dict[str, list[str]] = {}
    for item in items:
        name, sep, paths = item.partition("=")
        if not sep or not name or not paths:
            raise ReelfaceError(f"--ref '{item}' must look like NAME=photo1.jpg,photo2.jpg")
        photos.setdefault(name, []).extend(str(Path(p).expanduser()) for p in paths.split(","))
    return [f"references.photos={json.dumps(photos)}"] if photos else []


def cmd_probe(args: argparse.Namespace) -> None:
    from .video import probe

    print(json.dumps(probe(args.input).to_dict(), indent=2))


def make_executor(cfg, make_restorer):
    """Where the stages run: in this process, or as Ray tasks and actors. The one place in pipeline/
    that imports workers/, so the domain runs (and is tested) without Ray."""
    from .run import local_executor

    if cfg.run.executor == "ray":
        from workers.executor import RayExecutor

        return RayExecutor(cfg, make_restorer)
    if cfg.run.executor == "local":
        return local_executor(cfg, make_restorer)
    raise ReelfaceError(f"run.executor is '{cfg.run.executor}'; use local or ray")


def cmd_restore(args: argparse.Namespace) -> None:
    from .run import restore

    extra = _parse_refs(args.ref)
    flags = {}
    for key, (flag, attribute) in RESTORE_FLAGS.items():
        value = getattr(args, attribute)
        if value is not None and value is not False:  # a flag left out keeps the config's value
            extra.append(f"{key}={json.dumps(value)}")
            flags[key] = flag
    restore(args.input, args.output, _load(args, extra, flags), overwrite=args.overwrite,
            make_executor=make_executor)


def cmd_analyze(args: argparse.Namespace) -> None:
    from tracking.analyze import analyze

    analyze(args.input, args.output, _load(args, []), preview=args.preview, overwrite=args.overwrite)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate

    report = evaluate(args.restored, args.input, ground_truth=args.ground_truth, out_dir=args.out_dir,
                      overwrite=args.overwrite)
    print(json.dumps(report, indent=2))


def cmd_models(args: argparse.Namespace) -> None:
    from .restorers.registry import describe_models, download_model

    if args.action == "download":
        if not args.name:
            raise ReelfaceError("usage: reelface models download NAME")
        print(download_model(args.name, _load(args, [])))
    else:
        print(describe_models(_load(args, [])))


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (`--help` still shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"reelface: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="reelface", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("restore", help="restore every face in a video")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--restorer", help="fusion | osdface | onnx | identity")
    p.add_argument("--strength", type=float, help="0 keeps the input, 1 the full restoration")
    p.add_argument("--encoder", help="libx264 | libx265 | prores_ks | ffv1")
    p.add_argument("--executor", choices=["local", "ray"])
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--work-dir", help="manifest and chunk files (default: <output>.work)")
    p.add_argument("--preview", type=float, metavar="SECONDS", help="restore only the first SECONDS, side by side")
    p.add_argument("--ref", action="append", default=[], metavar="NAME=a.jpg,b.jpg",
                   help="reference photos of a person (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (video and report)")
    p.add_argument("--keep-work-dir", action="store_true",
                   help="keep the work dir (manifest, detections, segments) after success")
    _config_args(p)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("probe", help="print a video's streams, colour, timing and keyframes as JSON")
    p.add_argument("input")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("analyze", help="detect and track faces, write tracks.json (and a preview)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="tracks.json path")
    p.add_argument("--preview", help="write a video with boxes, ids and landmarks drawn")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _config_args(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("evaluate", help="quality and temporal metrics of a restored video")
    p.add_argument("restored")
    p.add_argument("--input", required=True, help="the video that was restored")
    p.add_argument("--ground-truth", help="clean video, when known (generated clips)")
    p.add_argument("--out-dir", help="where to write the side-by-side and the report")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in --out-dir")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list restorer backends and their weights, or download them")
    p.add_argument("action", nargs="?", choices=["list", "download"], default="list")
    p.add_argument("name", nargs="?")
    _config_args(p)
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ReelfaceError as exc:
        # one line whatever the message: a script reading stderr, or a person, sees the whole error
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        print(f"reelface: error: {'; '.join(lines)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reelface: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: one line (exit 1) unless debugging
        if os.environ.get("REELFACE_DEBUG"):
            raise
        first = next((line for line in str(exc).splitlines() if line.strip()), "no message")
        print(f"reelface: internal error: {type(exc).__name__}: {first.strip()} (a bug: rerun with "
              "REELFACE_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
