"""Ray scaling: the real pipeline with 1 vs 2 workers, and a simulated GPU cluster (N sleeping actors).

    python benchmarks/scaling.py                  # both parts
    python benchmarks/scaling.py --part simulate --actors 1 2 4 8 16
    python benchmarks/scaling.py --part workers --seconds 4

`workers`: `pipeline.run.restore` on the first seconds of hamilton.mp4 (re-encoded with a keyframe per
chunk) with the Ray executor, with one worker (one restore actor, one chunk in flight) and with two;
prints the best of two wall times each and the ratio. `simulate`: the restore actor pool with a
restorer that sleeps like a GPU (a fixed cost per model pass plus a cost per crop, no CPU use), fed
by Ray render tasks (2 per actor) that send 512 px uint8 crops a request at a time, as PoolRestorer
does in a real run; prints crops/s against the ideal and the mean merged batch per actor count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HAMILTON = REPO.parent / "shared" / "data" / "clips" / "hamilton.mp4"


def machine() -> str:
    return f"{platform.machine()} {len(os.sched_getaffinity(0))} cores, no GPU" if not _has_gpu() else platform.node()


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


class SleepRestorer:
    """Stands in for a GPU model: a pass costs `per_batch + per_crop * B` seconds of sleep, and the
    crops come back unchanged. Sleep uses no core, so 16 of them simulate 16 GPUs on 2 cores."""

    name = "sleep"
    temporal_radius = 0

    def __init__(self, per_batch: float, per_crop: float):
        self.per_batch, self.per_crop = per_batch, per_crop

    def restore(self, crops, refs=None):
        time.sleep(self.per_batch + self.per_crop * len(crops))
        return crops


def simulate(actor_counts: list[int], requests: int, crops_per_request: int, crop_px: int, per_batch: float,
             per_crop: float, batch_crops: int, wait_ms: float, tasks_per_actor: int) -> None:
    import functools
    from types import SimpleNamespace

    import numpy as np
    import ray

    from workers.restore import RestorePool

    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=0)
    def render_task(actors: list, first: int, calls: int) -> str:
        """A render task's traffic with the pool, as PoolRestorer sends it: one request at a time, round-robin
        over the actors from the task's own starting actor, 8-bit crops as uint8 (the wire format); returns
        the dtype the answers came back in."""
        crops = np.random.default_rng(first).integers(0, 256, (crops_per_request, 3, crop_px, crop_px), np.uint8)
        dtypes = {str(ray.get(actors[(first + call) % len(actors)].restore.remote(crops, None)).dtype)
                  for call in range(calls)}
        return ",".join(sorted(dtypes))

    for count in actor_counts:
        run = SimpleNamespace(restore_actors=count, gpus_per_actor=1.0, retries=0, batch_crops=batch_crops,
                              batch_wait_ms=wait_ms)
        pool = RestorePool(functools.partial(SleepRestorer, per_batch, per_crop), run)
        tasks = tasks_per_actor * count  # chunks in flight: run.max_inflight in configs/cluster.yaml
        ray.get([render_task.remote(pool.actors, k, 1) for k in range(tasks)])  # warm: workers up, imports done
        warm = pool.stats()
        began = time.perf_counter()
        answers = set(ray.get([render_task.remote(pool.actors, k, requests // tasks_per_actor) for k in range(tasks)]))
        wall = time.perf_counter() - began
        stats = pool.stats()
        batches = sum(s["batches"] for s in stats) - sum(s["batches"] for s in warm)
        total = tasks * (requests // tasks_per_actor) * crops_per_request
        ideal = count / (per_batch / batch_crops + per_crop)  # every actor running full batches back to back
        print(json.dumps({
            "benchmark": "scaling.simulate", "actors": count, "render_tasks": tasks, "crops": total,
            "wall_s": round(wall, 3), "crops_per_s": round(total / wall, 1), "ideal_crops_per_s": round(ideal, 1),
            "efficiency": round(total / wall / ideal, 2), "mean_batch": round(total / batches, 2),
            "request_crops": crops_per_request, "crop_px": crop_px, "answers_dtype": ",".join(sorted(answers)),
            "MB_per_s_each_way": round(total / wall * 3 * crop_px ** 2 / 1e6, 1),
            "sleep_per_batch_s": per_batch, "sleep_per_crop_s": per_crop, "batch_crops": batch_crops,
            "load_avg": os.getloadavg()[0], "machine": machine(),
        }), flush=True)
        pool.shutdown()
    ray.shutdown()


def workers(seconds: float, chunk_seconds: float, restorer: str) -> None:
    """The real pipeline under Ray: 1 worker (1 actor, 1 chunk in flight) vs 2 (2 actors, 2 chunks)."""
    import ray

    sys.path.insert(0, str(REPO / "tests"))
    from ray_clips import hamilton_head

    from pipeline.cli import make_executor
    from pipeline.config import load_config
    from pipeline.run import restore

    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)
    walls: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        gop = round(chunk_seconds * 30000 / 1001)  # hamilton is 29.97 fps: a keyframe per chunk
        clip = hamilton_head(HAMILTON, Path(tmp) / "head.mp4", round(seconds * 30000 / 1001), gop)
        for count in (1, 2, 1, 2):  # each twice: the first pass also warms Ray's worker pool
            cfg = load_config("default", [
                "run.executor=ray", f"run.restore_actors={count}", f"run.max_inflight={count}",
                f"run.chunk_seconds={chunk_seconds}", f"restore.restorer={restorer}", "encode.codec=ffv1"])
            began = time.perf_counter()
            restore(str(clip), str(Path(tmp) / f"out{count}.mkv"), cfg, overwrite=True, make_executor=make_executor)
            walls[count].append(time.perf_counter() - began)
        best = {count: min(times) for count, times in walls.items()}
        for count in (1, 2):
            print(json.dumps({"benchmark": "scaling.workers", "workers": count, "wall_s": round(best[count], 2),
                              "runs_s": [round(t, 2) for t in walls[count]],
                              "clip": f"hamilton.mp4 first {seconds} s (640x360)", "chunk_seconds": chunk_seconds,
                              "restorer": restorer, "load_avg": os.getloadavg()[0], "machine": machine()}),
                  flush=True)
        print(json.dumps({"benchmark": "scaling.workers_ratio", "speedup_2_vs_1": round(best[1] / best[2], 2),
                          "machine": machine()}), flush=True)
    ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["workers", "simulate", "all"], default="all")
    p.add_argument("--seconds", type=float, default=4.0, help="workers: seconds of hamilton.mp4 restored")
    p.add_argument("--chunk-seconds", type=float, default=1.0, help="workers: chunk length")
    p.add_argument("--restorer", default="fusion", help="workers: the restorer (fusion: the default)")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--requests", type=int, default=40, help="simulate: requests per actor (the work grows with the pool)")
    p.add_argument("--tasks-per-actor", type=int, default=2,
                   help="simulate: render tasks issuing requests, per actor (configs/cluster.yaml: ~2 chunks per actor)")
    p.add_argument("--crops-per-request", type=int, default=8,
                   help="simulate: crops per request (process.py sends runs of restore.batch_size, 8 on auto)")
    p.add_argument("--crop-px", type=int, default=512, help="simulate: crop size (512: what the pipeline sends)")
    p.add_argument("--per-batch", type=float, default=0.04, help="simulate: sleep per model pass, s")
    p.add_argument("--per-crop", type=float, default=0.05,
                   help="simulate: sleep per crop, s (a one-step 512 px diffusion model on one GPU)")
    p.add_argument("--batch-crops", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.part in ("workers", "all"):
        workers(args.seconds, args.chunk_seconds, args.restorer)
    if args.part in ("simulate", "all"):
        simulate(args.actors, args.requests, args.crops_per_request, args.crop_px, args.per_batch,
                 args.per_crop, args.batch_crops, args.batch_wait_ms, args.tasks_per_actor)


if __name__ == "__main__":
    main()
