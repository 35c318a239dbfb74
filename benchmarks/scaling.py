"""Ray scaling: the real pipeline with 1 vs 2 workers, and a simulated GPU cluster (N sleeping actors).

    python benchmarks/scaling.py                  # both parts
    python benchmarks/scaling.py --part simulate --actors 1 2 4 8 16
    python benchmarks/scaling.py --part workers --seconds 4

`workers`: `pipeline.run.restore` on the first seconds of hamilton.mp4 (re-encoded with a keyframe per
chunk) with the Ray executor, with one worker (one restore actor, one chunk in flight) and with two;
prints the best of two wall times each and the ratio.

`simulate`: the restore actor pool (workers/restore.py) with a restorer that sleeps like a GPU (a cost
per model pass plus a cost per crop; sleeping uses no core, so 16 actors stand for 16 GPUs), fed by
Ray render tasks that go through the real request path: `process.restore_run` over runs of one track's
512 px crops (whole 8-bit levels, so uint8 on the wire) with the pool's `PoolRestorer`, which cuts each
call into full-pass requests kept `run.requests_in_flight` deep, each sent to the least-loaded actor.
Per actor count: crops/s, against two ideals: `ideal` = actors x the one-actor rate measured first in
the same run, and `sleep_bound` = actors running full passes back to back (the stricter); and the
memory of the render tasks and actors (peak RSS, and RSS now as private / shared-library / object-store
pages: what 16 + 16 processes cost the node is their private memory). The sleep per crop is set so
that the host side (conversions, Ray's copies: ~20-30 ms of CPU a crop) fits the 2 shared cores: what is
measured is how the request path scales, not this machine's cores.
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


def worker_memory() -> dict[str, float]:
    """This process's memory, MB: its peak RSS, and its RSS now split into private memory (anonymous: what
    each process costs the machine), mapped files (shared libraries: torch's ~200 MB, in RAM once for all
    processes) and shared memory (Ray's object store, counted once for the node)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


def host_cost(crop_px: int, crops: int = 8, repeats: int = 3) -> float:
    """CPU ms per crop (one thread) of the conversions one request makes, both ends: the render task's
    crops_to_tensor, to_wire, from_wire of the answer and tensor_to_crops, the actor's from_wire,
    restorer_output and to_wire (Ray's own copies not included). Off-grid float crops, as cut from frames."""
    import numpy as np
    import torch

    from pipeline.restorers.base import crops_to_tensor, restorer_output, tensor_to_crops
    from workers.restore import from_wire, to_wire

    torch.set_num_threads(1)
    cut = np.random.default_rng(0).uniform(0, 255, (crops, crop_px, crop_px, 3)).astype(np.float32)
    began = time.process_time()
    for _ in range(repeats):
        answer = to_wire(from_wire(to_wire(crops_to_tensor(cut))), keep=restorer_output)
        tensor_to_crops(from_wire(answer))
    return 1000 * (time.process_time() - began) / (repeats * crops)


def simulate(actor_counts: list[int], crops_per_task: int, run_crops: int, crop_px: int, per_batch: float,
             per_crop: float, batch_crops: int, wait_ms: float, tasks_per_actor: int, in_flight: int) -> None:
    import functools
    from types import SimpleNamespace

    import numpy as np
    import ray

    from pipeline.process import restore_run
    from pipeline.restorers.base import crops_to_tensor
    from workers.restore import RestorePool, to_wire

    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=0)
    def render_task(restorer, chunk: int, crops: int) -> tuple[str, dict[str, float]]:
        """A render task's restore traffic, through the real request path: process.restore_run over runs
        of one track's crops (float 0..255 on whole 8-bit levels, as an 8-bit source's crops cut on the
        pixel grid) with the pool's PoolRestorer at its auto batch size; returns the answers' wire dtype
        and the worker's memory."""
        began = time.process_time()  # the whole worker process: Ray's threads included
        restorer.bind(chunk, None)
        rng = np.random.default_rng(chunk)
        run = rng.integers(0, 256, (run_crops, crop_px, crop_px, 3), np.uint8)
        for lo in range(0, crops, run_crops):
            restore_run(run[:min(run_crops, crops - lo)].astype(np.float32), None, restorer, restorer.call_crops, 1.0)
        cpu_s = time.process_time() - began
        return str(to_wire(crops_to_tensor(run[:1].astype(np.float32))).dtype), worker_memory(), cpu_s

    print(json.dumps({"benchmark": "scaling.host_cost", "crop_px": crop_px,
                       "cpu_ms_per_crop": round(host_cost(crop_px), 1), "load_avg": os.getloadavg()[0],
                       "machine": machine()}), flush=True)
    one_actor = None
    for count in sorted(set(actor_counts) | {1}):
        run = SimpleNamespace(restore_actors=count, gpus_per_actor=1.0, retries=0, batch_crops=batch_crops,
                              batch_wait_ms=wait_ms, requests_in_flight=in_flight)
        pool = RestorePool(functools.partial(SleepRestorer, per_batch, per_crop), run)
        restorer = pool.restorer()
        tasks = tasks_per_actor * count  # chunks in flight: run.max_inflight in configs/cluster.yaml
        ray.get([render_task.remote(restorer, k, batch_crops) for k in range(tasks)])  # warm: workers up, imports done
        warm = pool.stats()
        actor_cpu = ray.get([a.__ray_call__.remote(lambda actor: time.process_time()) for a in pool.actors])
        load_before = os.getloadavg()[0]
        began = time.perf_counter()
        dtypes, memory, task_cpu = zip(*ray.get([render_task.remote(restorer, k, crops_per_task) for k in range(tasks)]))
        wall = time.perf_counter() - began
        stats = pool.stats()
        actor_cpu = [after - before for before, after in zip(actor_cpu, ray.get(
            [a.__ray_call__.remote(lambda actor: time.process_time()) for a in pool.actors]))]
        actor_memory = ray.get([a.__ray_call__.remote(lambda actor: worker_memory()) for a in pool.actors])
        batches = sum(s["batches"] for s in stats) - sum(s["batches"] for s in warm)
        total = tasks * crops_per_task
        rate = total / wall
        one_actor = one_actor or rate
        sleep_bound = count * batch_crops / (per_batch + per_crop * batch_crops)  # full passes back to back
        pool.shutdown()
        if count not in actor_counts:
            continue
        print(json.dumps({
            "benchmark": "scaling.simulate", "actors": count, "render_tasks": tasks, "crops": total,
            "wall_s": round(wall, 2), "crops_per_s": round(rate, 2),
            "ideal_crops_per_s": round(count * one_actor, 2), "efficiency": round(rate / (count * one_actor), 3),
            "sleep_bound_crops_per_s": round(sleep_bound, 2), "efficiency_vs_sleep_bound": round(rate / sleep_bound, 3),
            "mean_batch": round(total / batches, 2), "deepest_queue": max(s["deepest_queue"] for s in stats),
            "crop_px": crop_px, "wire_dtype": ",".join(sorted(set(dtypes))),
            "cpu_ms_per_crop": {"render_tasks": round(1000 * sum(task_cpu) / total, 1),
                                "actors": round(1000 * sum(actor_cpu) / total, 1)},
            "render_task_mb_max": {k: max(m[k] for m in memory) for k in memory[0]},
            "actor_mb_max": {k: max(m[k] for m in actor_memory) for k in actor_memory[0]},
            "MB_per_s_each_way": round(rate * 3 * crop_px ** 2 / 1e6, 1), "requests_in_flight": in_flight,
            "run_crops": run_crops, "sleep_per_batch_s": per_batch, "sleep_per_crop_s": per_crop,
            "batch_crops": batch_crops, "load_avg_start": load_before, "load_avg": os.getloadavg()[0],
            "machine": machine(),
        }), flush=True)
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
    p.add_argument("--crops-per-task", type=int, default=96, help="simulate: crops each render task restores")
    p.add_argument("--run-crops", type=int, default=16, help="simulate: crops of one track's run in a chunk")
    p.add_argument("--tasks-per-actor", type=int, default=1,
                   help="simulate: render tasks in flight per actor (configs/cluster.yaml keeps ~2; each task's "
                        "private memory is ~0.3 GB here, see render_task_mb_max)")
    p.add_argument("--requests-in-flight", type=int, default=2, help="simulate: run.requests_in_flight")
    p.add_argument("--crop-px", type=int, default=512, help="simulate: crop size (512: what the pipeline sends)")
    p.add_argument("--per-batch", type=float, default=0.2, help="simulate: sleep per model pass, s")
    p.add_argument("--per-crop", type=float, default=1.0,
                   help="simulate: sleep per crop, s (the conversions cost ~20-30 ms of CPU a 512 px crop, "
                        "scaling.host_cost: 16 actors at 1 s a crop need ~0.4 of the 2 shared cores)")
    p.add_argument("--batch-crops", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.part in ("workers", "all"):
        workers(args.seconds, args.chunk_seconds, args.restorer)
    if args.part in ("simulate", "all"):
        simulate(args.actors, args.crops_per_task, args.run_crops, args.crop_px, args.per_batch, args.per_crop,
                 args.batch_crops, args.batch_wait_ms, args.tasks_per_actor, args.requests_in_flight)


if __name__ == "__main__":
    main()
