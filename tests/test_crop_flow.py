"""Flow between a run's crops: neighbours matched, the rest composed along the chain, and each
neighbouring flow computed once for fusion and the stabilisation stage together."""

import cv2
import numpy as np
import pytest

from pipeline import crop_flow
from pipeline.restorers.base import crops_to_tensor, tensor_to_crops
from pipeline.restorers.fusion import FusionRestorer
from pipeline.stabilise import stabilise

SHIFT = (1.3, -0.6)  # px a frame, at crop size


def _sliding(n=8, size=96, seed=0):
    rng = np.random.default_rng(seed)
    tex = cv2.resize(rng.uniform(30, 225, (size // 6, size // 6, 3)).astype(np.float32), (size + 64, size + 64),
                     interpolation=cv2.INTER_CUBIC)
    # content moves by SHIFT a frame, so crop_t(x) = crop_0(x - t * SHIFT)
    return [cv2.warpAffine(tex, np.float32([[1, 0, -32 + SHIFT[0] * t], [0, 1, -32 + SHIFT[1] * t]]), (size, size),
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101) for t in range(n)]


@pytest.fixture
def dis_calls(monkeypatch):
    """Fresh cache; counts the DIS matches made."""
    monkeypatch.setattr(crop_flow, "_cache", crop_flow._FlowCache(crop_flow.CACHE_BYTES))
    calls = []
    create = cv2.DISOpticalFlow_create

    class Counting:
        def __init__(self, preset):
            self.dis = create(preset)

        def calc(self, a, b, flow):
            calls.append(1)
            return self.dis.calc(a, b, flow)

    monkeypatch.setattr(crop_flow.cv2, "DISOpticalFlow_create", Counting)
    return calls


def test_far_flows_are_the_composed_chain_and_follow_the_motion(dis_calls):
    crops = _sliding()
    flows = crop_flow.RunFlows(crops)
    scale = flows.flow_size / flows.size
    inner = slice(12, -12)
    for i, j in ((0, 1), (0, 5), (6, 2), (7, 0)):
        f = flows.flow(i, j)[inner, inner]
        # grey_i(x) ~ grey_j(x + f): content moved (j - i) * SHIFT
        assert np.abs(np.median(f[..., 0]) - (j - i) * SHIFT[0] * scale) < 0.1 + 0.02 * abs(j - i)
        assert np.abs(np.median(f[..., 1]) - (j - i) * SHIFT[1] * scale) < 0.1 + 0.02 * abs(j - i)
    # only neighbours were matched, each pair once: 0->1 ... 4->5 for (0,1) and (0,5); 6->5 ... 3->2 for
    # (6,2); (7,0) reuses those and adds 7->6, 2->1, 1->0
    assert len(dis_calls) == 5 + 7
    # a far flow is exactly its first step plus the rest of the chain moved along that step
    first, rest = flows.flow(3, 4), flows.flow(4, 6)
    y, x = np.mgrid[0:flows.flow_size, 0:flows.flow_size].astype(np.float32)
    expected = first + cv2.remap(rest, x + first[..., 0], y + first[..., 1], cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    assert np.array_equal(flows.flow(3, 6), expected)


def test_the_stabiliser_reuses_the_flows_fusion_computed(dis_calls):
    crops = tensor_to_crops(crops_to_tensor(np.stack(_sliding(12)) + np.random.default_rng(1).normal(0, 4, (12, 96, 96, 3))))
    restored = tensor_to_crops(FusionRestorer().restore(crops_to_tensor(crops), None))
    after_fusion = len(dis_calls)
    assert after_fusion == 2 * 11  # each neighbouring pair, both ways
    stabilise(list(crops), list(restored), 0.8)
    assert len(dis_calls) == after_fusion
    # other crops are matched afresh
    stabilise([c + 1.0 for c in crops], list(restored), 0.8)
    assert len(dis_calls) == 2 * after_fusion


def test_the_cache_is_bounded_and_drops_the_oldest():
    flow = np.zeros((64, 64, 2), np.float32)
    cache = crop_flow._FlowCache(3 * flow.nbytes)
    for k in range(5):
        cache.put((bytes([k]), b""), flow.copy())
    assert cache.bytes == 3 * flow.nbytes
    assert cache.get((bytes([0]), b"")) is None and cache.get((bytes([1]), b"")) is None
    assert all(cache.get((bytes([k]), b"")) is not None for k in (2, 3, 4))
