"""The restore actor pool on the session's local Ray: dynamic batching, pipelined calls, requests to the least-loaded
actor, the wire format, references by track id from the run's store, start-up errors. (Chunk tasks sharing the pool, actor crashes and failing chunks: test_ray_pipeline.py,
through whole runs.)"""

import functools
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
from ray import cloudpickle  # noqa: E402

from pipeline.errors import ReelfaceError  # noqa: E402
from pipeline.plan import Chunk  # noqa: E402
from pipeline.restorers.base import crops_to_tensor, tensor_to_crops  # noqa: E402
from workers.balance import LeastLoaded  # noqa: E402
from workers.cluster import bounded_map  # noqa: E402
from workers.restore import RestorePool, from_wire, to_wire  # noqa: E402

# the test restorers below travel to the actors by value: Ray's workers cannot import a test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Invert:
    """Per-crop and deterministic, and visibly different from its input: a crop routed to the wrong
    caller, or a batch split wrongly, changes the result. Adds the reference's value when given."""

    name = "invert"
    temporal_radius = 0

    def restore(self, crops, refs=None):
        time.sleep(0.02)  # long enough for concurrent requests to queue up behind a pass
        out = 1 - crops
        if refs is not None:
            out = out + torch.stack([r.crops.mean() for r in refs]).view(-1, 1, 1, 1)
        return out


def run_cfg(**kw):
    base = dict(restore_actors=1, gpus_per_actor=1.0, retries=1, batch_crops=8, batch_wait_ms=50.0,
                requests_in_flight=1)
    return SimpleNamespace(**{**base, **kw})


@ray.remote(num_cpus=0)
def chunk_task(restorer, chunk, calls, refs=None):
    """What a render task does with the pool: a few restore calls of 2 crops each, in order."""
    restorer.bind(chunk.index, refs)
    results = []
    for call in range(calls):
        crops = torch.full((2, 3, 4, 4), (200 + chunk.index * 10 + call) / 255)
        chosen = None if refs is None else [refs.get(1), refs.get(2)]
        results.append((crops, restorer.restore(crops, chosen)))
    return results


def chunks(n):
    return [Chunk(i, i * 10, i * 10 + 10, i * 10, i * 10 + 10) for i in range(n)]


def test_pool_batches_concurrent_requests_and_routes_each_crop_back(ray_local):
    """Nine requests of 2 crops arrive together (as from concurrent chunk tasks): they share model
    passes of up to 8 crops, and each caller gets its own rows back."""
    pool = RestorePool(Invert, run_cfg(restore_actors=1, batch_crops=8, batch_wait_ms=300.0))
    try:
        [actor] = pool.actors
        ray.get(actor.restore.remote(np.zeros((1, 3, 4, 4), np.uint8), None))  # warm: the first pass is alone
        inputs = [np.full((2, 3, 4, 4), i, np.uint8) for i in range(9)]  # 8-bit levels: what crosses Ray
        outputs = ray.get([actor.restore.remote(x, None) for x in inputs])
        for x, out in zip(inputs, outputs):
            assert torch.equal(from_wire(out), 1 - from_wire(x))
        [stats] = pool.stats()
        assert stats["requests"] == 10 and stats["crops"] == 19
        assert stats["batches"] <= 1 + 4  # 18 crops in passes of at most 8: 3 when all arrive in time
    finally:
        pool.shutdown()


class SlowInvert(Invert):
    """A pass long enough for a pipelining caller's next requests to arrive while it runs."""

    def restore(self, crops, refs=None):
        time.sleep(0.4)
        return 1 - crops


def test_a_call_is_cut_into_full_pass_requests_kept_in_flight_and_reassembled_in_order(ray_local):
    """A restore call of 10 crops with passes of 2 goes as 5 requests, up to 3 outstanding at once (the
    actor finds the next ones queued when a pass begins, never more than 3), and its rows come back in
    the call's order. A caller that waited for each request would leave a queue of 1."""
    pool = RestorePool(SlowInvert, run_cfg(restore_actors=1, batch_crops=2, batch_wait_ms=0.0, requests_in_flight=3))
    try:
        restorer = pool.restorer()
        crops = torch.arange(10, dtype=torch.float32).div(255).view(10, 1, 1, 1).expand(10, 3, 4, 4).contiguous()
        assert restorer.call_crops == 6
        assert torch.equal(restorer.restore(crops), 1 - crops)
        [stats] = pool.stats()
        assert stats["requests"] == 5 and stats["batches"] == 5 and stats["crops"] == 10
        assert 2 <= stats["deepest_queue"] <= 3
    finally:
        pool.shutdown()


def test_least_loaded_counts_crops_and_takes_ties_in_turn():
    counter = LeastLoaded(3)
    assert [counter.acquire(8, first) for first in (4, 5, 6)] == [1, 2, 0]  # an idle pool: in turn from `first`
    counter.release(2, 8)
    assert counter.acquire(2, 0) == 2  # the one that answered, whatever the turn
    assert counter.acquire(8, 2) == 2  # 2 crops outstanding there, 8 on the others
    assert counter.loads() == [8, 8, 10]
    counter.release(0, 8)
    counter.release(0, 8)  # a release after a restart of the counter: never below zero
    assert counter.loads() == [0, 8, 10] and counter.acquire(1, 1) == 0


class OneSlow(Invert):
    """The first actor to build it is slow (a busier or smaller GPU), the others fast; the restorer's
    name says which."""

    def __init__(self, claim):
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL))
            self.name, self.pass_s = "slow", 4.0
        except FileExistsError:
            self.name, self.pass_s = "fast", 0.02

    def restore(self, crops, refs=None):
        time.sleep(self.pass_s)
        return 1 - crops


def test_requests_go_to_the_least_loaded_actor_so_a_slow_one_gets_fewer(ray_local, tmp_path):
    """12 requests, 2 in flight, over a slow and a fast actor: round-robin would give each 6 (and wait
    24 s on the slow one); the slow one keeps its crops outstanding for 4 s a pass, so the others go to
    the fast one (3 allowed: what the slow one gets while the fast one answers in up to ~1 s, a loaded
    machine). The rows still come back in the call's order."""
    pool = RestorePool(functools.partial(OneSlow, tmp_path / "slow"),
                       run_cfg(restore_actors=2, batch_crops=2, batch_wait_ms=0.0, requests_in_flight=2))
    try:
        names = [d["name"] for d in ray.get([a.describe.remote() for a in pool.actors])]
        assert sorted(names) == ["fast", "slow"]
        crops = torch.arange(24, dtype=torch.float32).div(255).view(24, 1, 1, 1).expand(24, 3, 4, 4).contiguous()
        assert torch.equal(pool.restorer().restore(crops), 1 - crops)
        requests = {name: stats["requests"] for name, stats in zip(names, pool.stats())}
        assert requests["slow"] + requests["fast"] == 12
        assert requests["slow"] <= 3, requests
        deadline = time.monotonic() + 10  # the actors give crops back without waiting: the last may be on its way
        while ray.get(pool.balancer.loads.remote()) != [0, 0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ray.get(pool.balancer.loads.remote()) == [0, 0]  # every request's crops given back
    finally:
        pool.shutdown()


def test_references_travel_by_track_id_and_arrive_intact(ray_local, tmp_path):
    from pipeline.references import ReferenceStore

    refs = ReferenceStore(tmp_path / "refs")
    refs.put(1, [np.full((512, 512, 3), 20, np.uint8)], None)
    refs.put(2, [np.full((512, 512, 3), 40, np.uint8)], None)
    pool = RestorePool(Invert, run_cfg(restore_actors=1))
    try:
        restorer = pool.restorer()
        [(_, calls)] = list(bounded_map(lambda c: chunk_task.remote(restorer, c, 2, refs), chunks(1), 1, "restore"))
        for crops, out in calls:
            refs_mean = torch.tensor([20 / 255, 40 / 255]).view(-1, 1, 1, 1)  # the stored uint8 levels
            assert torch.allclose(out, 1 - crops + refs_mean, atol=1e-6)
    finally:
        pool.shutdown()


def test_wire_format_is_the_smallest_exact_one():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    as_cropped = torch.from_numpy(levels).float().div(255.0)  # crops_to_tensor of 8-bit crops
    assert to_wire(as_cropped).dtype == np.uint8 and torch.equal(from_wire(to_wire(as_cropped)), as_cropped)
    on_the_grid = crops_to_tensor(np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)))
    assert to_wire(on_the_grid).dtype == np.uint16 and torch.equal(from_wire(to_wire(on_the_grid)), on_the_grid)
    finer = torch.rand(2, 3, 8, 8)  # not from the face path: sent whole
    assert to_wire(finer).dtype == np.float32 and torch.equal(from_wire(to_wire(finer)), finer)
    beyond = on_the_grid * 1.5  # out of [0, 1] (a restorer's raw output): float32 too
    assert to_wire(beyond).dtype == np.float32 and torch.equal(from_wire(to_wire(beyond)), beyond)


def test_decoded_face_crops_cross_ray_in_half_the_bytes_and_restore_as_locally(ray_local, data_dir):
    """Crops warped from a decoded 8-bit frame are floats between levels: they go as uint16 (half of
    float32), come back bit-exact, and the pool's answer (uint16 too) is, to the bit, what the face path
    keeps of the same restorer run locally."""
    from pipeline.video import decode

    [frame] = list(decode(data_dir / "clips" / "hamilton.mp4", 0, 1))
    turn = np.array([[1.7, 0.1, -300.3], [-0.1, 1.7, -60.6]], np.float32)  # off the pixel grid
    crops = crops_to_tensor(frame.views()[0].face_crops(np.stack([turn, turn * 1.01]), 128))
    wire = to_wire(crops)
    assert wire.dtype == np.uint16 and 2 * wire.nbytes == crops.numpy().nbytes
    assert torch.equal(from_wire(wire), crops)
    pool = RestorePool(Invert, run_cfg())
    try:
        assert np.array_equal(tensor_to_crops(pool.restorer().restore(crops)), tensor_to_crops(Invert().restore(crops)))
        assert ray.get(pool.actors[0].restore.remote(wire, None)).dtype == np.uint16  # the answer too
    finally:
        pool.shutdown()


class AnySize:
    """A restorer that takes crops of any size (as fusion does): it needs the crops' scale, and the face
    path must crop and blend for it as it would locally."""

    name = "any-size"
    temporal_radius = 1
    crop_size = None
    keeps_colour = True

    def restore(self, crops, refs=None, scale=1.0):
        return crops / scale


def test_pool_restorer_is_cropped_and_blended_for_as_its_restorer_and_told_the_scale(ray_local):
    pool = RestorePool(AnySize, run_cfg())
    try:
        restorer = pool.restorer()
        assert (restorer.crop_size, restorer.keeps_colour, restorer.temporal_radius) == (None, True, 1)
        crops = crops_to_tensor(np.full((3, 96, 96, 3), 200.0))
        assert torch.equal(restorer.restore(crops, None, scale=2.0), AnySize().restore(crops, None, scale=2.0))
        assert not torch.equal(restorer.restore(crops, None, scale=2.0), crops)
    finally:
        pool.shutdown()


def test_restorer_that_cannot_start_is_a_clear_error(ray_local):
    def missing_weights():
        raise ReelfaceError("osdface weights not found in /nowhere: run `reelface models download osdface`")

    with pytest.raises(ReelfaceError, match="osdface weights not found"):
        RestorePool(missing_weights, run_cfg())


def test_unreachable_cluster_address_is_a_quick_clear_error():
    import socket

    from workers.cluster import check_reachable

    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(ReelfaceError, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port}.*ray start --head"):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - began < 10
