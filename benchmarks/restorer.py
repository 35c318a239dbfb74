"""OSDFace restorer throughput: faces/s and peak memory per batch size, random weights (speed does not depend
on their values). One JSON line per measurement.

  python benchmarks/restorer.py                         # tiny config on the CPU (what CI machines can run)
  python benchmarks/restorer.py --device cuda --full    # SD 2.1-base size, bf16, batches 1 4 16 32 64
  python benchmarks/restorer.py --device cpu --full --batches 1 --iters 1   # proves the full path on a CPU
  python benchmarks/restorer.py --flops --full          # model FLOPs per face (counted on the meta device)
  python benchmarks/restorer.py --golden ../shared/data/osdface_golden   # fp32 and bf16 against the reference

On a GPU the figure is also given as a fraction of the compute limit: peak dense bf16 TFLOP/s of the card
(--peak-tflops, default 790 for an H100 SXM) / FLOPs per face.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.restorers.osdface import OSDFaceRestorer  # noqa: E402
from pipeline.restorers.osdface_model import (  # noqa: E402
    SD21_BASE_UNET, SD21_BASE_VAE, TINY_SPEC, TINY_UNET, TINY_VAE, OSDFaceSpec, build_random_model)


def _architecture(full: bool):
    return (OSDFaceSpec(), SD21_BASE_UNET, SD21_BASE_VAE) if full else (TINY_SPEC, TINY_UNET, TINY_VAE)


def count_flops_per_face(full: bool) -> float:
    """FLOPs of one face through the whole model, counted on meta tensors (nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_random_model(*_architecture(full), device="meta").eval()
    crops = torch.rand(1, 3, 512, 512, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(crops)
    return float(counter.get_total_flops())


def compare_with_golden(folder: Path, device: str, dtypes: list[str]) -> None:
    """The reference's two golden crops through config -> registry -> restorer in each dtype: how far the
    restored crops are from the reference's fp32 output, and whether the visual-prompt codes are its codes."""
    from safetensors.torch import load_file

    from pipeline.restorers import get_restorer

    golden = load_file(str(folder / "golden.safetensors"))
    crops = golden["faces_uint8"].float() / 255
    for dtype in dtypes:
        cfg = load_config("default", ["restore.restorer=osdface", f"restore.weights={folder / 'weights'}",
                                      f"restore.device={device}", f"restore.dtype={dtype}", "restore.batch_size=2"])
        restorer = get_restorer(cfg.restore)
        seen = []
        restorer.model.prompt.embedding_change.register_forward_hook(lambda m, args, out: seen.append(args[0]))
        start = time.perf_counter()
        out = restorer.restore(crops, None)
        seconds = time.perf_counter() - start
        diff = (out.cpu() - golden["restored"]).abs()
        codes = torch.cat(seen).cpu()
        print(json.dumps({"benchmark": "restorer_golden", "dtype": dtype, "device": _device_name(restorer.device),
                          "faces": len(crops), "s": round(seconds, 1),
                          "restored_max_abs_diff": float(f"{diff.max():.3g}"),
                          "restored_mean_abs_diff": float(f"{diff.mean():.3g}"),
                          "codes_equal": bool(torch.equal(codes, golden["codes"])),
                          "codes_max_abs_diff": float(f"{(codes - golden['codes']).abs().max():.3g}")}), flush=True)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS so far (KiB on Linux)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--full", action="store_true", help="SD 2.1-base size (default: the tiny test config)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | float16 | bfloat16 | float32")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument("--iters", type=int, default=0, help="timed passes per batch size (0: 5 on GPU, 2 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--autotune", action="store_true", help="also report the batch size the auto-tuner picks")
    parser.add_argument("--flops", action="store_true", help="only count FLOPs per face and exit")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="GPU dense bf16 peak for the limit fraction")
    parser.add_argument("--golden", type=Path, help="osdface_golden folder: compare fp32 and bf16 with the reference")
    args = parser.parse_args()

    if args.golden:
        compare_with_golden(args.golden, args.device, ["float32", "bfloat16"] if args.dtype == "auto" else [args.dtype])
        return

    model_name = "osdface-sd21base" if args.full else "osdface-tiny"
    if args.flops:
        print(json.dumps({"benchmark": "restorer_flops", "model": model_name,
                          "tflop_per_face": round(count_flops_per_face(args.full) / 1e12, 3)}), flush=True)
        return

    cfg = load_config("default", [f"restore.device={args.device}", f"restore.dtype={args.dtype}",
                                  "restore.batch_size=1", f"restore.compile={str(args.compile).lower()}"]).restore
    torch.manual_seed(0)
    t0 = time.perf_counter()
    build_on = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    restorer = OSDFaceRestorer(build_random_model(*_architecture(args.full), device=build_on), cfg)
    device = restorer.device
    build_s = time.perf_counter() - t0
    flops = count_flops_per_face(args.full) if device.type == "cuda" else None
    iters = args.iters or (5 if device.type == "cuda" else 2)
    common = {"benchmark": "restorer", "model": model_name, "device": _device_name(device),
              "dtype": str(restorer.dtype).removeprefix("torch."), "compile": args.compile}
    print(json.dumps({**common, "build_s": round(build_s, 1)}), flush=True)

    if args.autotune:
        restorer.batch_size = None
        restorer.restore(torch.rand(1, 3, 512, 512, device=device), None)
        print(json.dumps({**common, "autotuned_batch": restorer.batch_size}), flush=True)

    for batch in args.batches:
        restorer.batch_size = batch
        crops = torch.rand(batch, 3, 512, 512, device=device)  # on the device: the model's throughput
        try:
            restorer.restore(crops, None)  # warm-up (and compilation)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(iters):
                restorer.restore(crops, None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - start) / iters
            cpu_seconds = (time.process_time() - cpu_start) / iters
        except torch.OutOfMemoryError:
            print(json.dumps({**common, "batch": batch, "error": "out of memory"}), flush=True)
            torch.cuda.empty_cache()
            break
        row = {**common, "batch": batch, "s_per_batch": round(seconds, 4), "faces_per_s": float(f"{batch / seconds:.3g}"),
               "peak_mem_gib": round(_peak_gib(device), 2)}
        if device.type == "cpu":  # CPU seconds of all threads: steadier than wall time on a shared machine
            row["cpu_s_per_face"] = round(cpu_seconds / batch, 2)
        if flops:
            limit = args.peak_tflops * 1e12 / flops
            row.update(tflop_per_face=round(flops / 1e12, 3), compute_limit_faces_per_s=round(limit, 1),
                       fraction_of_limit=round(batch / seconds / limit, 3))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
