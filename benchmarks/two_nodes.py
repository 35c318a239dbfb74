"""A real two-node Ray cluster on this machine, and `reelface restore --address` on it.

    python benchmarks/two_nodes.py

Starts a head node (`ray start --head`, 1 CPU) and a second node that joins it (`ray start --address`,
1 CPU and the custom resource `restore`, so the restore actors can only live there), both on 127.0.0.1
with their own session folders; runs `reelface restore --executor ray --address 127.0.0.1:PORT` on a
generated two-face clip (fusion restorer, FFV1 output), then the same command with `--executor local`,
and compares the two outputs frame by frame. Prints one JSON line (nodes, resources, walls, identical),
exits 1 when the outputs differ, and stops both nodes whatever happens.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

RAY = Path(sys.executable).with_name("ray")
SETTINGS = ["--set", "run.chunk_seconds=0.4", "--set", "run.context_frames=8", "--set", "detect.stride=3",
            "--set", "run.max_inflight=2", "--encoder", "ffv1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_node(*args: str, env: dict, log: Path) -> subprocess.Popen:
    """`ray start --block ...` in its own process group: stopping that process (SIGTERM) stops the node's
    processes and nothing else (`ray stop` would stop every Ray on the machine)."""
    with open(log, "w") as out:
        return subprocess.Popen([str(RAY), "start", "--block", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_node(node: subprocess.Popen) -> None:
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)  # the group this script created for the node
            node.wait()


def wait_for(check, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def reelface(*args: str, env: dict) -> float:
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "restore", *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"reelface restore {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - began


def two_node_run(folder: Path) -> dict:
    import numpy as np

    from pipeline.video import decode
    from ray_clips import two_faces

    clip = two_faces(REPO.parent / "shared" / "data" / "faces", folder / "two.mp4", frames=24, gop=24)
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    # loopback only, so no token: Ray 2.5x+ `ray start` turns token authentication on by default, and
    # every client would then need the token file (a real cluster keeps it, see the Ray docs)
    env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"] = "disabled"
    common = ["--node-ip-address=127.0.0.1", "--num-gpus=0", "--disable-usage-stats"]
    began = time.perf_counter()
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(ray_node("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                              f"--temp-dir={folder / 'ray'}", *common, env=env, log=folder / "head.log"))
        wait_for(lambda: listening(port), "the head node")
        nodes.append(ray_node(f"--address={address}", "--num-cpus=1", '--resources={"restore": 1}', *common,
                              env=env, log=folder / "worker.log"))
        import ray

        ray.init(address=address, log_to_driver=False)
        wait_for(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, "the second node")
        started = time.perf_counter() - began
        alive = [{"cpus": n["Resources"].get("CPU"), "restore": n["Resources"].get("restore", 0)}
                 for n in ray.nodes() if n["Alive"]]
        ray.shutdown()
        cluster_wall = reelface(str(clip), "-o", str(folder / "cluster.mkv"), "--executor", "ray",
                                "--address", address, *SETTINGS, env=env)
    finally:
        for node in reversed(nodes):
            stop_node(node)
    local_wall = reelface(str(clip), "-o", str(folder / "local.mkv"), "--executor", "local", *SETTINGS, env=env)
    pairs = list(zip(decode(folder / "cluster.mkv"), decode(folder / "local.mkv"), strict=True))
    identical = all(a.pts == b.pts and np.array_equal(a.rgb, b.rgb) for a, b in pairs)
    changed = sum(not np.array_equal(a.rgb, b.rgb) for a, b in zip(decode(clip), decode(folder / "local.mkv")))
    return {"benchmark": "two_nodes", "nodes": alive, "cluster_start_s": round(started, 1),
            "cluster_restore_s": round(cluster_wall, 1), "local_restore_s": round(local_wall, 1),
            "frames": len(pairs), "frames_changed_by_restore": changed, "identical": identical,
            "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cores, no GPU, shared",
            "load_avg": os.getloadavg()[0]}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rf2n") as tmp:  # short: Ray's socket paths have a length limit
        result = two_node_run(Path(tmp))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["identical"] else 1)


if __name__ == "__main__":
    main()
